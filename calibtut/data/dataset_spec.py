"""Dataset specs: what a dataset is and how calibtut reads it.

A spec holds everything the training loop and the notebooks need to know about a
dataset (channels, classes and how they map to the dataset's label values, spacing,
patch and sliding-window sizes, intensity preprocessing) and turns a folder in the
dataset's real layout into a MONAI dataset: `spec.cases(root, split)` lists the cases,
`spec.transforms(split)` is the MONAI pipeline, `spec.dataset(root, split)` both.

Specs are frozen; `spec.replace(patch_size=..., target_spacing=...)` gives a modified
copy (smoke tests, small GPUs, a split file).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, Dataset
from monai.networks import one_hot
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapLabelValued,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandSpatialCropd,
    RandZoomd,
    ScaleIntensityRanged,
    SpatialPadd,
)

from calibtut.data.errors import InvalidCaseError, describe
from calibtut.data.transforms import LabelToRegionsd

SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]
Case = dict[str, Any]
KEYS = ("image", "label")

# The paper's augmentation (all its RandAffined configs): probability 0.5, rotation,
# shear, translation (in voxels) and scaling ranges of 0.1 on every axis.
AFFINE_PROB = 0.5
AFFINE_RANGE = 0.1

# Voxel-to-world matrices of an image and its label must agree to this (mm).
AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class HUWindow:
    """CT intensities clipped to [low, high] Hounsfield units and scaled to [0, 1]."""

    low: float
    high: float

    def transform(self) -> MapTransform:
        return ScaleIntensityRanged(
            "image", a_min=self.low, a_max=self.high, b_min=0.0, b_max=1.0, clip=True
        )

    def __str__(self) -> str:
        return f"CT window {self.low:g}..{self.high:g} HU scaled to [0, 1]"


@dataclass(frozen=True)
class ZScore:
    """MR intensities standardised per channel over the non-zero (in-body) voxels."""

    def transform(self) -> MapTransform:
        return NormalizeIntensityd("image", nonzero=True, channel_wise=True)

    def __str__(self) -> str:
        return "z-score per channel over non-zero voxels"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(abc.ABC):
    """What a dataset is: channels, classes, geometry, preprocessing, and where it comes from.

    `labels` are the dataset's own label values and names, background first. `regions`,
    when given, are the classes evaluation scores: named sets of label values that may
    overlap (KiTS's tumour ⊂ masses ⊂ kidney and masses; BraTS's ET ⊂ TC ⊂ WT).

    `activation` is how the network is trained. "softmax" (the paper, for every dataset):
    one channel per label, trained with Dice+CE on the exclusive labels; where there are
    regions, each region's probability is the sum of its labels' softmax probabilities at
    evaluation (the authors' `ConvertToKits23ClassesSoftmaxd`). "sigmoid" (an option for
    datasets with regions): one sigmoid channel per region, trained with Dice+BCE on the
    overlapping region masks.
    """

    name: str
    title: str
    description: str
    citation: str
    url: str
    modality: str
    channel_names: tuple[str, ...]
    labels: tuple[tuple[int, str], ...]
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    spatial_dims: int
    target_spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    val_window: tuple[int, ...]
    intensity: HUWindow | ZScore | None
    # Metrics over foreground classes only, as in the paper: softmax specs drop the
    # background channel; every sigmoid region is foreground.
    include_background: bool
    samples_per_case: int = 1
    activation: Literal["softmax", "sigmoid"] = "softmax"
    augmentation: Literal["affine", "brats21"] = "affine"

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"{self.name}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        for what, size in (("patch_size", self.patch_size), ("val_window", self.val_window)):
            if len(size) != self.spatial_dims or any(int(s) < 1 for s in size):
                raise ValueError(
                    f"{self.name}: {what} must be {self.spatial_dims} positive sizes, got {size}"
                )
        if self.target_spacing is not None and (
            len(self.target_spacing) != self.spatial_dims or min(self.target_spacing) <= 0
        ):
            raise ValueError(
                f"{self.name}: target_spacing must be {self.spatial_dims} positive spacings in mm,"
                f" got {self.target_spacing}"
            )
        if self.samples_per_case < 1:
            raise ValueError(f"{self.name}: samples_per_case must be >= 1")
        values = self.label_values
        if len(set(values)) != len(values) or not values or values[0] != 0:
            raise ValueError(
                f"{self.name}: label values must be distinct, background (0) first, got {values}"
            )
        for region, members in self.regions:
            if not members or not set(members) <= set(values) - {0}:
                raise ValueError(
                    f"{self.name}: region {region!r} = {members} must be foreground label values "
                    f"of {values}"
                )
        if self.activation not in ("softmax", "sigmoid"):
            raise ValueError(
                f"{self.name}: activation must be 'softmax' or 'sigmoid', got {self.activation!r}"
            )
        if self.activation == "sigmoid" and not self.regions:
            raise ValueError(
                f"{self.name}: sigmoid training needs regions; {self.name} has exclusive labels "
                "only (use softmax)"
            )

    # -- derived ---------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the network's output channels: the labels (background first) for softmax,
        the regions for sigmoid."""
        if self.activation == "sigmoid":
            return tuple(name for name, _ in self.regions)
        return tuple(name for _, name in self.labels)

    @property
    def evaluated_names(self) -> tuple[str, ...]:
        """Names of the channels evaluation scores and saves: the regions where there are
        some (however the network was trained), else the labels, background first."""
        if self.regions:
            return tuple(name for name, _ in self.regions)
        return tuple(name for _, name in self.labels)

    @property
    def background_channel(self) -> int | None:
        """The evaluated channel of the background (0), or None when regions are evaluated."""
        return None if self.regions else 0

    @property
    def scored_classes(self) -> tuple[tuple[int, str], ...]:
        """``(evaluated channel, name)`` of each class the metrics score: every region, or every
        label less the background unless `include_background` (the paper's convention)."""
        skip = self.background_channel if not self.include_background else None
        return tuple((i, name) for i, name in enumerate(self.evaluated_names) if i != skip)

    def evaluation_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        """The network's probabilities ``(B, out_channels, *spatial)`` as the evaluated
        channels: where regions are evaluated on a softmax over labels, each region's
        probability is the sum of its labels' probabilities (they are exclusive, so the sum is
        the probability that the voxel is in the region); otherwise as they are."""
        if not self.regions or self.activation == "sigmoid":
            return probs
        return torch.stack([probs[:, list(idx)].sum(1) for idx in self._region_indices()], 1)

    def evaluation_target(self, label: torch.Tensor) -> torch.Tensor:
        """The target of the evaluated channels, one-hot ``(B, C, *spatial)`` float: from a
        class-index map ``(B, 1, *spatial)`` (softmax training) or already region channels
        (sigmoid training)."""
        if self.activation == "sigmoid":
            return label.float()
        index = label.long()
        if not self.regions:
            return one_hot(index, num_classes=self.out_channels, dtype=torch.float32)
        masks = [
            torch.isin(index[:, 0], torch.tensor(idx, device=index.device))
            for idx in self._region_indices()
        ]
        return torch.stack(masks, 1).float()

    def _region_indices(self) -> list[tuple[int, ...]]:
        """Each region's labels as output channels of a softmax over the labels."""
        channel = {value: c for c, value in enumerate(self.label_values)}
        return [tuple(channel[v] for v in members) for _, members in self.regions]

    @property
    def out_channels(self) -> int:
        return len(self.class_names)

    @property
    def label_values(self) -> tuple[int, ...]:
        """The dataset's own label values, as found in its label files."""
        return tuple(value for value, _ in self.labels)

    @property
    def preprocessing(self) -> str:
        """The deterministic preprocessing, in words, for notebooks and run configs."""
        steps = [step for step in self._preprocessing_steps() if step]
        return "; ".join(steps)

    def class_table(self) -> pd.DataFrame:
        """What each output channel of the network predicts, in the dataset's own label values,
        and whether the metrics score that channel (a region dataset scores its regions,
        :meth:`region_table`). Taught in notebooks/03 to 07."""
        names = dict(self.labels)
        rows = []
        if self.activation == "sigmoid":
            for channel, (region, members) in enumerate(self.regions):
                values = ", ".join(f"{v} {names[v]}" for v in members)
                rows.append({"channel": channel, "predicts": region, "label values": values})
        else:
            for channel, (value, name) in enumerate(self.labels):
                rows.append({"channel": channel, "predicts": name, "label values": str(value)})
        table = pd.DataFrame(rows).set_index("channel")
        # softmax over labels with regions: the metrics score the regions, not these channels
        direct = self.activation == "sigmoid" or not self.regions
        scored = {channel for channel, _ in self.scored_classes} if direct else set()
        table["scored"] = [channel in scored for channel in table.index]
        return table

    def region_table(self) -> pd.DataFrame:
        """The evaluated regions: their label values and how their probability is obtained
        (empty without regions). Taught in notebooks/06_kits and 07_brats."""
        names = dict(self.labels)
        how = "sum of its labels' softmax" if self.activation == "softmax" else "its own sigmoid"
        rows = [
            {
                "region": region,
                "label values": ", ".join(f"{v} {names[v]}" for v in members),
                "probability": how,
            }
            for region, members in self.regions
        ]
        return pd.DataFrame(rows, columns=["region", "label values", "probability"]).set_index(
            "region"
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description (for run configs and notebook tables)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if callable(value):
                continue
            out[f.name] = str(value) if isinstance(value, HUWindow | ZScore) else _plain(value)
        out.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            class_names=list(self.class_names),
            evaluated_names=list(self.evaluated_names),
            preprocessing=self.preprocessing,
        )
        return out

    def replace(self, **changes: Any) -> DatasetSpec:
        """A copy with `changes` applied and validated, e.g. `replace(patch_size=(32, 32, 16))`."""
        return dataclasses.replace(self, **changes)

    # -- cases -----------------------------------------------------------------------

    @abc.abstractmethod
    def cases(self, root: str | Path | None, split: Split) -> list[Case]:
        """The cases of `split` as `{"image", "label", "id"}` dicts, sorted by id."""

    def check_cases(self, cases: Sequence[Case], files: bool = True) -> None:
        """Refuse a case list the pipelines cannot use (missing keys, duplicate ids).

        `files`: also check the files behind the cases, where there are files.
        """
        seen: set[str] = set()
        for case in cases:
            missing = [key for key in (*KEYS, "id") if key not in case]
            if missing:
                raise ValueError(f"{self.name}: case {case!r} lacks key(s) {missing}")
            if case["id"] in seen:
                raise ValueError(f"{self.name}: case id {case['id']!r} appears twice")
            seen.add(case["id"])

    # -- transforms ------------------------------------------------------------------

    @abc.abstractmethod
    def _load_transforms(self, intensity: bool = True) -> list[MapTransform]:
        """The deterministic part: from a case dict to a preprocessed image and label map
        (with ``intensity``, its intensities normalised)."""

    @abc.abstractmethod
    def _preprocessing_steps(self) -> list[str]:
        """`_load_transforms` in words."""

    def transforms(self, split: Split) -> Compose:
        """The MONAI pipeline from a case dict to training or evaluation tensors.

        Produces `image` float32 `(in_channels, *spatial)` and `label`: for softmax a
        class-index map int64 `(1, *spatial)` (label values mapped to 0..C-1, e.g. BraTS's
        4 to 3), for sigmoid the region channels float32 `(out_channels, *spatial)`. Training adds a random patch crop of `patch_size`
        (half the patches centred on foreground, `samples_per_case` per case) and the
        paper's random affine augmentation; validation and test keep the whole image for
        sliding-window inference over `val_window`. `augmentation` "brats21" is instead the
        paper's BraTS pipeline (from the TRABIT BraTS 2021 entry): random zoom, rotation,
        noise, blur, contrast and flip, a random crop, then the intensity normalisation.
        """
        check_split(split)
        train = split == "train"
        if train and self.augmentation == "brats21":
            steps = self._load_transforms(intensity=False) + self._brats21_augmentation()
        else:
            steps = self._load_transforms()
        if train and self.augmentation == "affine":
            steps += self._affine_augmentation()
        sigmoid = self.activation == "sigmoid"
        if sigmoid:
            steps.append(LabelToRegionsd("label", regions=[values for _, values in self.regions]))
        elif self.label_values != tuple(range(len(self.labels))):
            steps.append(
                MapLabelValued(
                    "label", list(self.label_values), list(range(len(self.labels))), dtype=np.int16
                )
            )
        label_dtype = torch.float32 if sigmoid else torch.int64
        steps += [
            EnsureTyped("image", dtype=torch.float32),
            EnsureTyped("label", dtype=label_dtype),
        ]
        return Compose(steps)

    def _affine_augmentation(self) -> list[MapTransform]:
        """A patch crop (half of them centred on foreground) and the paper's random affine."""
        dims = self.spatial_dims
        return [
            SpatialPadd(KEYS, spatial_size=self.patch_size),
            RandCropByPosNegLabeld(
                KEYS,
                label_key="label",
                spatial_size=self.patch_size,
                pos=1,
                neg=1,
                num_samples=self.samples_per_case,
                image_key="image",
                image_threshold=0,
            ),
            RandAffined(
                KEYS,
                prob=AFFINE_PROB,
                rotate_range=(AFFINE_RANGE,) * (1 if dims == 2 else 3),
                shear_range=(AFFINE_RANGE,) * (2 if dims == 2 else 6),
                translate_range=(AFFINE_RANGE,) * dims,
                scale_range=(AFFINE_RANGE,) * dims,
                mode=("bilinear", "nearest"),
                padding_mode=("zeros", "border"),
            ),
        ]

    def _brats21_augmentation(self) -> list[MapTransform]:
        """The authors' brats21.yaml training augmentation, in its order, normalising last."""
        angle = (-0.261799, 0.261799)  # 15 degrees
        steps: list[MapTransform] = [
            RandZoomd(
                KEYS, min_zoom=0.7, max_zoom=1.5, mode=("trilinear", "nearest"),
                align_corners=(True, None), prob=0.3,
            ),
            RandRotated(
                KEYS, range_x=angle, range_y=angle, range_z=angle, mode=("bilinear", "nearest"),
                align_corners=(True, None), padding_mode=("border", "border"), prob=0.3,
            ),
            RandGaussianNoised("image", mean=0.0, std=0.1, prob=0.2),
            RandGaussianSmoothd(
                "image", sigma_x=(0.5, 1.15), sigma_y=(0.5, 1.15), sigma_z=(0.5, 1.15), prob=0.2
            ),
            RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
            RandFlipd(KEYS, spatial_axis=[0], prob=0.5),
            SpatialPadd(KEYS, spatial_size=self.patch_size),  # (so that every patch has its size)
            RandSpatialCropd(KEYS, roi_size=self.patch_size, random_size=False),
        ]  # fmt: skip
        if self.intensity is not None:
            steps.append(self.intensity.transform())
        return steps

    def dataset(
        self,
        root: str | Path | None,
        split: Split,
        *,
        cache: bool = True,
        check: bool = True,
        **dataset_kwargs: Any,
    ) -> Dataset:
        """The transformed cases of `split`: a MONAI `CacheDataset` (or `Dataset` if not `cache`).

        `check` reads every case's headers first (shapes, affines) so a broken folder fails
        here with the offending file named, not mid-training. The cache fills as items are
        first read (MONAI's `runtime_cache`), in the reading thread: use a
        `ThreadDataLoader` so that the cache persists across epochs. (MONAI's up-front
        fill, `runtime_cache=False`, runs a thread pool that keeps loading after a bad
        case has raised, and can abort the interpreter at exit.) `dataset_kwargs` go to
        the MONAI dataset (e.g. `cache_rate`, `runtime_cache`).
        """
        cases = self.cases(root, split)
        self.check_cases(cases, files=check)
        transform = self.transforms(split)
        with _surface_case_errors():  # a CacheDataset with runtime_cache=False loads here
            if cache:
                options = {"runtime_cache": True, "progress": False, **dataset_kwargs}
                dataset: Dataset = _CacheDataset(cases, transform, **options)
            else:
                dataset = _Dataset(cases, transform, **dataset_kwargs)
        dataset.spec = self
        return dataset


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@contextmanager
def _surface_case_errors(
    spec: DatasetSpec | None = None, case: Case | None = None
) -> Iterator[None]:
    """Re-raise an `InvalidCaseError` that MONAI wrapped in "applying transform" RuntimeErrors,
    and turn any other error while loading ``case`` into one that names the case and its files.

    MONAI wraps every exception raised inside a pipeline; the user needs our message
    (which file, which layout), not the name of the transform.
    """
    try:
        yield
    except Exception as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, InvalidCaseError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        if spec is None or case is None:
            raise
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        files = [
            str(f) for key in KEYS for f in _listed(case.get(key)) if isinstance(f, str | Path)
        ]
        where = f" ({', '.join(files)})" if files else ""
        raise InvalidCaseError(
            describe(
                spec.name,
                f"cannot load case {case.get('id')!r}{where}: {type(root).__name__}: {root}",
                getattr(spec, "layout", "(generated in memory)"),
            )
        ) from err


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


class _Dataset(Dataset):
    spec: DatasetSpec | None = None

    def __getitem__(self, index: Any) -> Any:
        case = self.data[index] if isinstance(index, int) else None
        with _surface_case_errors(self.spec, case):
            return super().__getitem__(index)


class _CacheDataset(CacheDataset):
    spec: DatasetSpec | None = None

    def __getitem__(self, index: Any) -> Any:
        case = self.data[index] if isinstance(index, int) else None
        with _surface_case_errors(self.spec, case):
            return super().__getitem__(index)
