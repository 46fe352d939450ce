"""Random smooth fields, shapes and NIfTI writing: the drawing kit of the phantoms.

Shapes are drawn in world (RAS, mm) coordinates from the volume's affine, so anatomy
lands in the right place whatever the voxel axis order of the dataset's files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]
) -> np.ndarray:
    """Gaussian white noise blurred by `sigma` (per axis, 0 = independent), rescaled to unit sd.

    The sd is normalised over the blurred axes, separately for every index of the
    others, so each field (e.g. each image of a batch) has unit sd.
    """
    noise = rng.standard_normal(tuple(shape), dtype=np.float32)
    field = ndimage.gaussian_filter(noise, sigma=tuple(sigma), mode="wrap")
    axes = tuple(i for i, s in enumerate(sigma) if s > 0)
    return field / field.std(axis=axes, keepdims=True)


def world_grid(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm), `(3, *shape)`, of every voxel centre of a volume."""
    index = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    return world.reshape(3, *shape)


def ellipsoid(world: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Voxels inside the axis-aligned ellipsoid of `centre` and `radii` (mm)."""
    centre_ = np.asarray(centre, dtype=np.float64).reshape(3, 1, 1, 1)
    radii_ = np.asarray(radii, dtype=np.float64).reshape(3, 1, 1, 1)
    return (((world - centre_) / radii_) ** 2).sum(axis=0) <= 1.0


def render(
    labels: np.ndarray,
    means: Mapping[int, float],
    rng: np.random.Generator,
    noise: float,
    blur: float = 0.7,
) -> np.ndarray:
    """An image from a tissue map: a mean per tissue, partial-volume blur, then noise."""
    lut = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    for tissue, mean in means.items():
        if tissue < lut.size:
            lut[tissue] = mean
    image = ndimage.gaussian_filter(lut[labels], sigma=blur)
    return image + noise * rng.standard_normal(labels.shape, dtype=np.float32)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: type) -> None:
    """Save `data` as NIfTI-1 with `affine` as both qform and sform (scanner), as scanners do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    image = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def diagonal_affine(
    spacing: Sequence[float], signs: Sequence[int], shape: Sequence[int]
) -> np.ndarray:
    """An axis-aligned affine with `spacing` and axis `signs`, centred on the volume."""
    affine = np.diag([*(s * sign for s, sign in zip(spacing, signs, strict=True)), 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2)
    return affine
