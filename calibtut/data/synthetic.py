"""The embedded default dataset: small images generated in memory, with ambiguous boundaries.

Each image holds three structures of very different size, painted in this order over a
background: a large rotated ellipse ("organ"), a thin ring 2-3 px thick ("ring") and a
small disk inside the organ, present in 80% of images ("lesion"). The image is rendered
from the true shapes (class intensities that overlap under noise, partial-volume blur, a
smooth bias field); the label is drawn along boundaries displaced by a smooth random
field, like a second annotator's hand. Near every edge the label therefore disagrees
with anything the image can show, so a perfectly trained model cannot be sure there: a
Dice + cross-entropy model trained on it is measurably overconfident near boundaries,
which is what the calibration losses are for.

Everything is vectorised over the batch: 200 images of 64 x 64 take about half a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.networks import one_hot
from monai.transforms import EnsureTyped, MapTransform
from scipy import ndimage

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
    `true_labels`, the shapes the images were rendered from, `(n, 1, *shape)` int64."""

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray


def generate(
    n: int,
    shape: tuple[int, ...],
    seed: int | np.random.SeedSequence,
    *,
    jitter: float = 1.0,
    noise: float = 0.35,
    blur: float = 1.0,
    lesion_prob: float = 0.8,
) -> SyntheticImages:
    """`n` images of `shape` (2-D or 3-D), the same for the same arguments.

    `jitter`: sd (px) of the annotation's boundary displacement (0: labels = true shapes).
    `noise`: sd of the additive white noise. `blur`: sd (px) of the partial-volume blur.
    `lesion_prob`: probability that an image has a lesion.
    """
    if n < 1 or len(shape) not in (2, 3) or min(shape) < 16:
        raise ValueError(f"need n >= 1 and a 2-D or 3-D shape of at least 16 px, got {n}, {shape}")
    rng = np.random.default_rng(seed)
    d, size = len(shape), min(shape)
    extent = np.asarray(shape, dtype=np.float32)
    grid = np.indices(shape, dtype=np.float32)[None]  # (1, d, *shape)

    def per_image(values: np.ndarray) -> np.ndarray:
        """(n, ...) -> (n, ..., 1, ..., 1) to broadcast against images."""
        return values.reshape(*values.shape, *([1] * d))

    # Organ: a rotated ellipse; distance ~ (rho - 1) / |grad rho|, exact to first order.
    centre = rng.uniform(0.4, 0.6, (n, d)) * extent
    axes = rng.uniform(0.2, 0.3, (n, d)) * size
    rotation = _rotations(rng, n, d)
    local = np.einsum("nji,nj...->ni...", rotation, grid - per_image(centre)) / per_image(axes)
    rho = np.sqrt((local**2).sum(axis=1))
    grad = np.sqrt(((local / per_image(axes)) ** 2).sum(axis=1)) / np.maximum(rho, 1e-6)
    organ = (rho - 1) / np.maximum(grad, 1e-6)

    ring_centre = rng.uniform(0.3, 0.7, (n, d)) * extent
    ring_radius = rng.uniform(0.12, 0.18, n) * size
    ring_half_width = rng.uniform(1.0, 1.5, n)
    from_ring_centre = np.sqrt(((grid - per_image(ring_centre)) ** 2).sum(axis=1))
    from_centreline = from_ring_centre - per_image(ring_radius)
    ring = np.abs(from_centreline) - per_image(ring_half_width)

    # Lesion: inside the organ, within half its semi-axes of its centre.
    direction = rng.standard_normal((n, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    reach = 0.5 * rng.uniform(0, 1, (n, 1)) ** (1 / d)
    lesion_centre = centre + np.einsum("nij,nj->ni", rotation, axes * direction * reach)
    lesion_radius = rng.uniform(2.5, 5.0, n)
    from_lesion_centre = np.sqrt(((grid - per_image(lesion_centre)) ** 2).sum(axis=1))
    lesion = from_lesion_centre - per_image(lesion_radius)
    lesion[rng.random(n) >= lesion_prob] = np.inf

    # The annotation moves each boundary by a smooth displacement; the ring's centreline
    # moves and its width is kept, so a thin structure is displaced, not erased.
    distances = np.stack([organ, ring, lesion], axis=1)  # (n, 3, *shape), < 0 inside
    displacement = smooth_noise(rng, distances.shape, (0, 0) + (JITTER_SIGMA,) * d)
    displacement = jitter * np.clip(displacement, -JITTER_CLIP, JITTER_CLIP)
    annotated = distances + displacement
    annotated[:, 1] = np.abs(from_centreline + displacement[:, 1]) - per_image(ring_half_width)
    true_labels = _paint(distances)
    labels = _paint(annotated)

    means = MEANS * rng.uniform(0.85, 1.15, (n, len(MEANS))).astype(np.float32)
    means[:, 0] = rng.normal(0.0, 0.05, n)
    image = means[per_image(np.arange(n)), true_labels[:, 0]]
    image = ndimage.gaussian_filter(image, sigma=(0,) + (blur,) * d)
    bias = 1 + 0.15 * smooth_noise(rng, image.shape, (0,) + (size / 4,) * d)
    image = image * bias + noise * rng.standard_normal(image.shape, dtype=np.float32)
    return SyntheticImages(image[:, None].astype(np.float32), labels, true_labels)


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
    noise: float = 0.35
    blur: float = 1.0
    lesion_prob: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.image_size) != self.spatial_dims:
            raise ValueError(f"{self.name}: image_size must have {self.spatial_dims} sizes")
        if min(self.n_train, self.n_val, self.n_test) < 1 or self.seed < 0:
            raise ValueError(f"{self.name}: need at least one image per split and a seed >= 0")

    def generate(self, split: Split) -> SyntheticImages:
        """The images of `split`, with the true labels beside the annotated ones."""
        check_split(split)
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]
        return generate(
            n,
            self.image_size,
            np.random.SeedSequence([self.seed, SPLITS.index(split)]),
            jitter=self.jitter,
            noise=self.noise,
            blur=self.blur,
            lesion_prob=self.lesion_prob,
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
    "description": (
        "Generated in memory from a seed: a large organ, a thin ring and a small lesion "
        "(absent in 20% of images) over background, with overlapping intensities, blur, "
        "noise, a bias field and annotation jitter, so that boundaries are genuinely "
        "ambiguous. Small enough to train a model on a laptop CPU in about a minute."
    ),
    "citation": "Generated by calibtut (calibtut.data.synthetic).",
    "url": "",
    "modality": "synthetic",
    "channel_names": ("intensity",),
    "labels": tuple(enumerate(CLASS_NAMES)),
    "target_spacing": None,
    "intensity": None,
    "include_background": False,
}

SPEC = SyntheticSpec(
    name="synthetic",
    title="calibtut synthetic 2-D images (the embedded default)",
    spatial_dims=2,
    image_size=(64, 64),
    patch_size=(64, 64),
    val_window=(64, 64),
    n_train=200,
    n_val=40,
    n_test=60,
    **_COMMON,
)

SPEC_3D = SyntheticSpec(
    name="synthetic3d",
    title="calibtut synthetic 3-D volumes (smoke tests of the 3-D paths)",
    spatial_dims=3,
    image_size=(32, 32, 32),
    patch_size=(32, 32, 32),
    val_window=(32, 32, 32),
    n_train=16,
    n_val=4,
    n_test=4,
    **_COMMON,
)
