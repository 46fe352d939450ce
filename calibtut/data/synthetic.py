"""The embedded default dataset: scans generated in memory, with ambiguous boundaries.

A scan holds structures of very different size over a background, painted in this order:
rotated ellipses ("organs"), thin rings 4-6 px across ("rings") and small disks inside the
organs ("lesions"). The image is rendered from the true shapes (class intensities, partial-volume
blur, white noise and a smooth bias field); the annotation is drawn along boundaries displaced
by a random amount, like another rater's hand. So near every edge the label disagrees with
anything the image can show, and a perfectly trained model cannot be sure there: the exact
probability that a rater labels a voxel with each class is known (``probability=True``), and
a Dice + cross-entropy network trained on the scans is overconfident near boundaries, which is
what the calibration losses are for.

The default (:data:`SPEC`) is built for per-image calibration to be measurable: 384 x 384 scans
with dozens of structures each, so that a middle confidence bin of one scan holds hundreds of
voxels and the ACE noise floor (:func:`calibtut.metrics.noise_floor`) is a quarter of a trained
model's ACE. Networks train on 128 x 128 patches and are scored on whole scans (sliding-window
inference), as on the paper's volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks import one_hot
from monai.transforms import EnsureTyped, MapTransform
from scipy import ndimage, special

from calibtut.data.dataset_spec import KEYS, SPLITS, Case, DatasetSpec, Split, check_split
from calibtut.data.volumes import smooth_noise

CLASS_NAMES = ("background", "organ", "ring", "lesion")
# Mean intensity per class; lesion lies between background and organ, ring above organ.
MEANS = np.array([0.0, 1.0, 1.7, 0.45], dtype=np.float32)
JITTER_SIGMA = 3.0  # correlation length (px) of the annotation's boundary displacement
JITTER_CLIP = 2.5  # the displacement is clipped to this many `jitter` units


@dataclass(frozen=True)
class SyntheticImages:
    """A generated batch: `images` `(n, 1, *shape)` float32; `labels`, the annotation, and
    `true_labels`, the shapes the images were rendered from, `(n, 1, *shape)` int64; with
    `probability=True`, `probabilities` `(n, 4, *shape)`: the exact probability that an
    annotator labels each voxel with each class (the calibrated prediction)."""

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    probabilities: np.ndarray | None = None


def generate(
    n: int,
    shape: tuple[int, ...],
    seed: int | np.random.SeedSequence,
    *,
    jitter: float = 1.0,
    jitter_sigma: float = JITTER_SIGMA,
    speckle: float = 0.0,
    noise: float = 0.35,
    blur: float = 1.0,
    organs: int = 1,
    organ_axes: tuple[float, float] = (0.2, 0.3),
    rings: int = 1,
    ring_radius: tuple[float, float] = (0.12, 0.18),
    ring_half_width: tuple[float, float] = (1.0, 1.5),
    lesions: tuple[int, int] = (1, 1),
    lesion_radius: tuple[float, float] = (2.5, 5.0),
    lesion_prob: float = 0.8,
    spread: float = 0.3,
    probability: bool = False,
) -> SyntheticImages:
    """`n` images of `shape` (2-D or 3-D), the same for the same arguments.

    Args:
        jitter: sd (px) of the annotation's boundary displacement (0: labels = true shapes).
        jitter_sigma: correlation length (px) of that displacement.
        speckle: the share of its variance that is independent from voxel to voxel (1: every
            boundary voxel is a coin flip of its own, like labels drawn from a probability
            map; 0: one smooth hand-drawn contour per image).
        noise, blur: sd of the additive white noise, sd (px) of the partial-volume blur.
        organs, rings: how many of each per image; `organ_axes` (semi-axes) and `ring_radius`
            are fractions of the image's size, `ring_half_width` is in px.
        lesions: the range of the number of lesions per image (each inside an organ), with
            radii `lesion_radius` (px); `lesion_prob` is the probability that an image has any.
        spread: organ and ring centres lie in the middle `spread` of each axis.
        probability: also return the exact annotation probabilities.

    Returns:
        :class:`SyntheticImages`.
    """
    if n < 1 or len(shape) not in (2, 3) or min(shape) < 16:
        raise ValueError(f"need n >= 1 and a 2-D or 3-D shape of at least 16 px, got {n}, {shape}")
    if not 0 <= speckle <= 1 or organs < 1 or rings < 1 or not 0 < spread <= 1:
        raise ValueError("need 0 <= speckle <= 1, organs >= 1, rings >= 1 and 0 < spread <= 1")
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    shapes, annotation, rendering = (np.random.default_rng(s) for s in root.spawn(3))
    d, size = len(shape), min(shape)
    extent = np.asarray(shape, dtype=np.float32)
    margin = 3 * JITTER_CLIP * jitter + 2  # beyond it a structure's distance is never needed

    def centre() -> np.ndarray:
        return shapes.uniform(0.5 - spread / 2, 0.5 + spread / 2, (n, d)) * extent

    # Every structure's signed distance is drawn in a window around it ("far" elsewhere), so
    # that dozens of small structures in a large image cost what their windows cost.
    far = np.float32(4 * margin + size)
    organ, lesion = np.full((2, n, *shape), far, dtype=np.float32)
    # Organs: rotated ellipses; distance ~ (rho - 1) / |grad rho|, exact to first order.
    placed = [
        (centre(), shapes.uniform(*organ_axes, (n, d)) * size, _rotations(shapes, n, d))
        for _ in range(organs)
    ]
    for at, axes, rotation in placed:
        for i in range(n):
            _stamp(organ[i], at[i], axes[i].max() + margin, _ellipse(at[i], axes[i], rotation[i]))
    # Rings: a centreline circle and a half width; the annotation moves the centreline, so a
    # thin structure is displaced, not erased. Kept as (centreline, half width) fields.
    # Where rings cross, a voxel belongs to the centreline it is nearest (a few voxels).
    centreline = np.full((n, *shape), far, dtype=np.float32)
    widths = np.zeros((n, *shape), dtype=np.float32)
    for _ in range(rings):
        at, radius = centre(), shapes.uniform(*ring_radius, n) * size
        half = shapes.uniform(*ring_half_width, n)
        for i in range(n):
            reach = radius[i] + half[i] + margin
            _stamp(centreline[i], at[i], reach, _circle(at[i], radius[i]), widths[i], half[i])
    # Lesions: inside an organ, within 0.6 of its semi-axes of its centre.
    count = shapes.integers(lesions[0], lesions[1] + 1, n)
    count[shapes.random(n) >= lesion_prob] = 0
    for k in range(lesions[1]):
        host = shapes.integers(0, organs, n)
        direction = shapes.standard_normal((n, d))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        reach = 0.6 * shapes.uniform(0, 1, (n, 1)) ** (1 / d)
        radius = shapes.uniform(*lesion_radius, n)
        for i in np.flatnonzero(k < count):
            at, axes, rotation = (part[i] for part in placed[host[i]])
            middle = at + rotation @ (axes * direction[i] * reach[i])
            _stamp(lesion[i], middle, radius[i] + margin, _circle(middle, radius[i]))

    def ring(moved: np.ndarray | float = 0.0) -> np.ndarray:
        return np.abs(centreline + moved) - widths

    distances = np.stack([organ, ring(), lesion], axis=1)  # (n, 3, *shape), < 0 inside
    # The annotation moves each boundary by a displacement, marginally N(0, jitter^2) clipped
    # at JITTER_CLIP sd: a smooth field, with a voxel-independent share of its variance.
    displacement = np.sqrt(speckle) * annotation.standard_normal(distances.shape, np.float32)
    if speckle < 1:
        sigma = (0, 0) + (jitter_sigma,) * d
        displacement += np.sqrt(1 - speckle) * smooth_noise(annotation, distances.shape, sigma)
    displacement = jitter * np.clip(displacement, -JITTER_CLIP, JITTER_CLIP)
    annotated = distances + displacement
    annotated[:, 1] = ring(displacement[:, 1])
    true_labels, labels = _paint(distances), _paint(annotated)

    means = MEANS * rendering.uniform(0.85, 1.15, (n, len(MEANS))).astype(np.float32)
    means[:, 0] = rendering.normal(0.0, 0.05, n)
    image = means[np.arange(n).reshape(n, *([1] * d)), true_labels[:, 0]]
    image = ndimage.gaussian_filter(image, sigma=(0,) + (blur,) * d)
    bias = 1 + 0.15 * _bias_field(rendering, image.shape, size / 4)
    image = image * bias + noise * rendering.standard_normal(image.shape, dtype=np.float32)
    probabilities = None
    if probability:
        probabilities = _annotation_probabilities(organ, lesion, centreline, widths, jitter)
    return SyntheticImages(image[:, None].astype(np.float32), labels, true_labels, probabilities)


def _stamp(field, centre, reach, distance, widths=None, width: float = 0.0) -> None:
    """Write ``distance(coordinates)`` into the window of ``field`` within ``reach`` of
    ``centre``: the smaller of old and new (a union of structures); or, given ring ``widths``,
    the centreline nearer zero, with its half ``width`` beside it (a voxel belongs to the ring
    whose centreline it is closest to)."""
    low = np.maximum(np.floor(centre - reach).astype(int), 0)
    high = np.minimum(np.ceil(centre + reach).astype(int) + 1, field.shape)
    if np.any(high <= low):
        return
    window = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    grid = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high, strict=True)), indexing="ij")
    )
    new = distance(grid.astype(np.float32)).astype(np.float32)
    old = field[window]
    if widths is None:
        field[window] = np.minimum(old, new)
        return
    nearer = np.abs(new) < np.abs(old)
    field[window] = np.where(nearer, new, old)
    widths[window] = np.where(nearer, np.float32(width), widths[window])


def _ellipse(centre, axes, rotation):
    """Signed distance (px, to first order) to a rotated ellipse: negative inside."""

    def distance(grid: np.ndarray) -> np.ndarray:
        offset = grid - centre.reshape(-1, *([1] * (grid.ndim - 1)))
        local = np.einsum("ji,j...->i...", rotation, offset) / axes.reshape(
            -1, *([1] * (grid.ndim - 1))
        )
        rho = np.sqrt((local**2).sum(0))
        grad = np.sqrt(((local / axes.reshape(-1, *([1] * (grid.ndim - 1)))) ** 2).sum(0))
        return (rho - 1) / np.maximum(grad / np.maximum(rho, 1e-6), 1e-6)

    return distance


def _circle(centre, radius):
    """Signed distance to a circle (sphere) of ``radius`` around ``centre``."""

    def distance(grid: np.ndarray) -> np.ndarray:
        offset = grid - centre.reshape(-1, *([1] * (grid.ndim - 1)))
        return np.sqrt((offset**2).sum(0)) - radius

    return distance


def _annotation_probabilities(organ, lesion, centreline, widths, jitter) -> np.ndarray:
    """P(annotation = class) per voxel: each structure's displacement there is one clipped
    normal, independent of the others', and later structures are painted over earlier ones."""

    def below(t: np.ndarray) -> np.ndarray:  # P(jitter * clip(z) < t)
        if jitter == 0:
            return (t > 0).astype(np.float64)
        z = t / jitter
        return np.where(z > JITTER_CLIP, 1.0, np.where(z <= -JITTER_CLIP, 0.0, special.ndtr(z)))

    in_organ, in_lesion = below(-organ), below(-lesion)
    in_ring = below(widths - centreline) - below(-widths - centreline)  # |c + delta| < w
    lesion_p = in_lesion
    ring_p = (1 - in_lesion) * in_ring
    organ_p = (1 - in_lesion) * (1 - in_ring) * in_organ
    background = np.clip(1 - lesion_p - ring_p - organ_p, 0, 1)  # (rounding below 0)
    return np.stack([background, organ_p, ring_p, lesion_p], 1).astype(np.float32)


@dataclass(frozen=True)
class ToySegmentation:
    """One synthetic image, an annotation and a hand-made prediction, as ``(1, C, H, W)`` tensors."""

    image: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor
    class_names: tuple[str, ...]


def toy_segmentation(seed: int = 1, sharpness: float = 8.0, size: int = 64) -> ToySegmentation:
    """A prediction that knows the true shapes but not where the annotator drew the boundaries.

    Taught in notebooks/01_what_is_calibration and 02_hard_and_soft_binning.

    The image comes from :func:`generate`, with its annotation (boundaries moved
    by about a pixel, as a second annotator would). The "model" softmaxes ``sharpness`` times
    the slightly blurred one-hot *true* shapes: sure of itself everywhere, hence confidently wrong
    wherever the annotation strays from the truth, as trained networks are near boundaries.
    ``sharpness`` near 1 is a timid model, 8 a typical overconfident one.
    """
    batch = generate(1, (size, size), seed)
    truth = one_hot(torch.from_numpy(batch.true_labels), len(CLASS_NAMES)).numpy()
    smooth = ndimage.gaussian_filter(truth, sigma=(0, 0, 1.0, 1.0))
    probs = torch.softmax(torch.from_numpy(sharpness * smooth), dim=1).float()
    target = one_hot(torch.from_numpy(batch.labels), len(CLASS_NAMES)).float()
    return ToySegmentation(torch.from_numpy(batch.images), probs, target, CLASS_NAMES)


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """A smooth unit-sd field per image of ``(n, *spatial)`` with correlation length ``sigma``
    (px): drawn on a grid 8 times coarser and interpolated, as smooth and 60 times cheaper."""
    coarse = (shape[0], *(-(-s // 8) + 1 for s in shape[1:]))
    field = smooth_noise(rng, coarse, (0,) + (sigma / 8,) * (len(shape) - 1))
    fine = ndimage.zoom(field, (1,) + (8,) * (len(shape) - 1), order=1, grid_mode=False)
    fine = fine[(slice(None), *(slice(0, s) for s in shape[1:]))]
    return fine / fine.std(axis=tuple(range(1, len(shape))), keepdims=True)


def _rotations(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """`n` random orthogonal `d x d` matrices (QR of Gaussian matrices, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, d, d)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


def _paint(distances: np.ndarray) -> np.ndarray:
    """Signed distances `(n, k, *shape)` -> label map `(n, 1, *shape)`; structure k+1 over k."""
    labels = np.zeros((distances.shape[0], 1, *distances.shape[2:]), dtype=np.int64)
    for k in range(distances.shape[1]):
        labels[:, 0][distances[:, k] < 0] = k + 1
    return labels


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec(DatasetSpec):
    """A generated dataset: `n_train`/`n_val`/`n_test` images of `image_size` from `seed`.

    Splits come from disjoint seed streams (`seed`, split), so they never share an image;
    the same spec always gives the same arrays. Resize or reseed with
    `spec.replace(n_train=..., seed=...)`.
    """

    image_size: tuple[int, ...]
    n_train: int
    n_val: int
    n_test: int
    seed: int = 0
    jitter: float = 1.0
    jitter_sigma: float = JITTER_SIGMA
    speckle: float = 0.0
    noise: float = 0.35
    blur: float = 1.0
    organs: int = 1
    organ_axes: tuple[float, float] = (0.2, 0.3)
    rings: int = 1
    ring_radius: tuple[float, float] = (0.12, 0.18)
    ring_half_width: tuple[float, float] = (1.0, 1.5)
    lesions: tuple[int, int] = (1, 1)
    lesion_radius: tuple[float, float] = (2.5, 5.0)
    lesion_prob: float = 0.8
    spread: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.image_size) != self.spatial_dims:
            raise ValueError(f"{self.name}: image_size must have {self.spatial_dims} sizes")
        if min(self.n_train, self.n_val, self.n_test) < 1 or self.seed < 0:
            raise ValueError(f"{self.name}: need at least one image per split and a seed >= 0")

    def generate(self, split: Split, probability: bool = False) -> SyntheticImages:
        """The images of `split`, with the true labels beside the annotated ones (and, with
        `probability`, the exact annotation probabilities: a perfectly calibrated prediction)."""
        check_split(split)
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]
        names = (
            "jitter", "jitter_sigma", "speckle", "noise", "blur", "organs", "organ_axes", "rings",
            "ring_radius", "ring_half_width", "lesions", "lesion_radius", "lesion_prob", "spread",
        )  # fmt: skip
        return generate(
            n,
            self.image_size,
            np.random.SeedSequence([self.seed, SPLITS.index(split)]),
            probability=probability,
            **{name: getattr(self, name) for name in names},
        )

    def cases(self, root: str | Path | None, split: Split) -> list[Case]:
        """In-memory cases `{"image": (1, *size) float32, "label": (1, *size) int64, "id"}`."""
        if root is not None:
            raise ValueError(f"{self.name} is generated in memory: pass root=None, got {root!r}")
        batch = self.generate(split)
        return [
            {"image": image, "label": label, "id": f"{self.name}_{split}_{i:04d}"}
            for i, (image, label) in enumerate(zip(batch.images, batch.labels, strict=True))
        ]

    def _load_transforms(self, intensity: bool = True) -> list[MapTransform]:
        return [EnsureTyped(KEYS)]

    def _preprocessing_steps(self) -> list[str]:
        return ["none: generated on a fixed intensity scale (background ~0, organ ~1)"]


_COMMON = {
    "citation": "Generated by calibtut (calibtut.data.synthetic).",
    "url": "",
    "modality": "synthetic",
    "channel_names": ("intensity",),
    "labels": tuple(enumerate(CLASS_NAMES)),
    "target_spacing": None,
    "intensity": None,
    "include_background": False,
}

# The central experiment's data (notebooks 00 and 03, `make demo`). Designed on the validation
# split for two properties measured there: the baseline's per-image ACE is about 4x its noise
# floor, and the baseline is overconfident (most of its calibration error lies where its
# confidence is more extreme than its accuracy). Structure sizes are fractions of the scan.
SPEC = SyntheticSpec(
    name="synthetic",
    title="calibtut synthetic 2-D scans (the embedded default)",
    description=(
        "Generated in memory from a seed: 384 x 384 scans, each with 18 organs, 18 thin rings "
        "and 27-72 lesions over background, blur, noise and a bias field, annotated by a rater "
        "whose boundaries stray by about 2 px, so that every boundary is genuinely ambiguous. "
        "Trained on 128 x 128 patches; a model trains on a laptop CPU in about two minutes."
    ),
    spatial_dims=2,
    image_size=(384, 384),
    patch_size=(128, 128),
    val_window=(128, 128),
    samples_per_case=9,
    n_train=45,
    n_val=12,
    n_test=20,
    jitter=2.0,
    speckle=1.0,
    noise=0.1,
    blur=0.5,
    organs=18,
    organ_axes=(0.04, 0.068),
    rings=18,
    ring_radius=(0.04, 0.06),
    ring_half_width=(2.0, 3.0),
    lesions=(27, 72),
    lesion_radius=(3.0, 7.0),
    lesion_prob=1.0,
    spread=0.9,
    **_COMMON,
)

SPEC_3D = SyntheticSpec(
    name="synthetic3d",
    title="calibtut synthetic 3-D volumes (smoke tests of the 3-D paths)",
    description=(
        "Generated in memory from a seed: 32^3 volumes with one organ, one ring and a lesion "
        "(absent in 20% of volumes), for testing the 3-D paths on a CPU."
    ),
    spatial_dims=3,
    image_size=(32, 32, 32),
    patch_size=(32, 32, 32),
    val_window=(32, 32, 32),
    n_train=16,
    n_val=4,
    n_test=4,
    **_COMMON,
)
