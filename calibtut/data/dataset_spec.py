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
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, Dataset, partition_dataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from calibtut.data.errors import InvalidCaseError, describe
from calibtut.data.transforms import CheckLabelValuesd, LabelToRegionsd

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

    `labels` are the dataset's own label values and names. A softmax dataset predicts
    one channel per label value (values must be 0..C-1, background first). A sigmoid
    dataset predicts one channel per entry of `regions`, each a named set of label
    values; regions may overlap (BraTS, KiTS).
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
        if self.regions:
            for region, members in self.regions:
                if not members or not set(members) <= set(values):
                    raise ValueError(
                        f"{self.name}: region {region!r} = {members} must be label values of {values}"
                    )
        elif values != tuple(range(len(values))):
            raise ValueError(
                f"{self.name}: a softmax dataset needs label values 0..C-1, got {values}"
            )

    # -- derived ---------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    @property
    def activation(self) -> Literal["softmax", "sigmoid"]:
        """Softmax over exclusive classes, or independent sigmoids over overlapping regions."""
        return "sigmoid" if self.regions else "softmax"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the output channels (background first for softmax; regions for sigmoid)."""
        if self.regions:
            return tuple(name for name, _ in self.regions)
        return tuple(name for _, name in self.labels)

    @property
    def scored_classes(self) -> tuple[tuple[int, str], ...]:
        """``(output channel, name)`` of each class the metrics score: every channel, less the
        softmax background unless `include_background` (the paper's convention)."""
        start = 0 if self.include_background else 1
        return tuple((i, name) for i, name in enumerate(self.class_names) if i >= start)

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
        """What each output channel predicts, in the dataset's own label values, and whether
        the metrics score it. Taught in notebooks/03 to 07."""
        names = dict(self.labels)
        rows = []
        if self.regions:
            for channel, (region, members) in enumerate(self.regions):
                values = ", ".join(f"{v} {names[v]}" for v in members)
                rows.append({"channel": channel, "predicts": region, "label values": values})
        else:
            for channel, (value, name) in enumerate(self.labels):
                rows.append({"channel": channel, "predicts": name, "label values": str(value)})
        table = pd.DataFrame(rows).set_index("channel")
        scored = {channel for channel, _ in self.scored_classes}
        table["scored"] = [channel in scored for channel in table.index]
        return table

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
            activation=self.activation,
            class_names=list(self.class_names),
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
    def _load_transforms(self) -> list[MapTransform]:
        """The deterministic part: from a case dict to a preprocessed image and label map."""

    @abc.abstractmethod
    def _preprocessing_steps(self) -> list[str]:
        """`_load_transforms` in words."""

    def transforms(self, split: Split) -> Compose:
        """The MONAI pipeline from a case dict to training or evaluation tensors.

        Produces `image` float32 `(in_channels, *spatial)` and `label`: for softmax a
        class-index map int64 `(1, *spatial)`, for sigmoid the region channels float32
        `(out_channels, *spatial)`. Training adds a random patch crop of `patch_size`
        (half the patches centred on foreground, `samples_per_case` per case) and the
        paper's random affine augmentation; validation and test keep the whole image for
        sliding-window inference over `val_window`.
        """
        check_split(split)
        steps = self._load_transforms()
        if split == "train":
            dims = self.spatial_dims
            steps += [
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
        if self.regions:
            steps.append(LabelToRegionsd("label", regions=[values for _, values in self.regions]))
        label_dtype = torch.float32 if self.regions else torch.int64
        steps += [
            EnsureTyped("image", dtype=torch.float32),
            EnsureTyped("label", dtype=label_dtype),
        ]
        return Compose(steps)

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
                return _CacheDataset(cases, transform, **options)
            return _Dataset(cases, transform, **dataset_kwargs)


@dataclass(frozen=True, kw_only=True)
class NiftiDatasetSpec(DatasetSpec):
    """A dataset of NIfTI files in its own published layout, found by `find_cases`.

    Splits: `test_part` names the layout's own test part (ACDC `testing/`, AMOS
    `imagesVa/`); without one, `test_fraction` of the cases is held out with
    `test_seed`. The rest is split into train/val with `val_fraction` and `split_seed`,
    by subject (`subject_of`) so that no subject is in both. `split_file`, a JSON file
    `{"train": [ids], "val": [ids], "test": [ids]}`, overrides all of this.
    """

    layout: str
    find_cases: Callable[[NiftiDatasetSpec, Path, str], list[Case]] = field(repr=False)
    dev_part: str
    test_part: str | None = None
    test_fraction: float = 0.0
    test_seed: int = 42
    val_fraction: float = 0.1
    split_seed: int = 12345
    split_file: str | None = None
    subject_of: Callable[[str], str] | None = field(default=None, repr=False)
    crop_foreground: bool = True
    write_phantom_cases: Callable[[Path, int, np.random.Generator], None] = field(repr=False)
    phantom_cases: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_spacing is None:
            raise ValueError(f"{self.name}: a NIfTI dataset needs a target_spacing")
        if self.test_part is None and not 0 < self.test_fraction < 1:
            raise ValueError(f"{self.name}: without a test part, test_fraction must be in (0, 1)")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"{self.name}: val_fraction must be in (0, 1)")

    def problem(self, what: str) -> str:
        """`what` went wrong, with this dataset's layout and the README."""
        return describe(self.name, what, self.layout)

    def cases(self, root: str | Path | None, split: Split) -> list[Case]:
        check_split(split)
        root = self._existing_root(root)
        if self.split_file is not None:
            return self._cases_from_split_file(root, split)
        if split == "test" and self.test_part is not None:
            how = f"the cases under {self.test_part}"
            return self._nonempty(self.find_cases(self, root, self.test_part), split, how)
        dev = self.find_cases(self, root, self.dev_part)
        how = f"{len(dev)} cases"
        if self.test_part is None:
            dev, test = partition_dataset(
                dev,
                ratios=(1 - self.test_fraction, self.test_fraction),
                shuffle=True,
                seed=self.test_seed,
            )
            how += f", {self.test_fraction:g} of them held out for test with seed {self.test_seed}"
            if split == "test":
                return self._nonempty(test, split, how)
        train, val = self._split_by_subject(dev)
        how += (
            f", {self.val_fraction:g} of the remaining subjects for val with seed {self.split_seed}"
        )
        return self._nonempty(train if split == "train" else val, split, how)

    def _existing_root(self, root: str | Path | None) -> Path:
        if root is None:
            raise ValueError(self.problem("no data root given (root=None)"))
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                self.problem(f"data root {root} does not exist or is not a folder")
            )
        return root

    def _split_by_subject(self, cases: list[Case]) -> tuple[list[Case], list[Case]]:
        subject = self.subject_of or (lambda case_id: case_id)
        subjects = list(dict.fromkeys(subject(case["id"]) for case in cases))
        train_subjects, _ = partition_dataset(
            subjects,
            ratios=(1 - self.val_fraction, self.val_fraction),
            shuffle=True,
            seed=self.split_seed,
        )
        keep = set(train_subjects)
        train = [case for case in cases if subject(case["id"]) in keep]
        val = [case for case in cases if subject(case["id"]) not in keep]
        return train, val

    def _nonempty(self, cases: list[Case], split: str, how: str) -> list[Case]:
        if not cases:
            raise ValueError(
                self.problem(
                    f"the {split} split is empty ({how}); the folder has too few "
                    f"cases for it: add cases or give a split file (spec.replace(split_file=...))"
                )
            )
        return sorted(cases, key=lambda case: case["id"])

    def _cases_from_split_file(self, root: Path, split: str) -> list[Case]:
        path = Path(self.split_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: split file {path} does not exist")
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.name}: split file {path} is not valid JSON: {err}") from err
        if not isinstance(splits, dict) or not all(isinstance(splits.get(s), list) for s in SPLITS):
            raise ValueError(
                f"{self.name}: split file {path} must be a JSON object with lists "
                f'"train", "val" and "test" of case ids'
            )
        counts = Counter(case_id for s in SPLITS for case_id in splits[s])
        repeated = sorted(case_id for case_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(
                f"{self.name}: split file {path} puts {repeated[:5]} in more than one place"
            )
        pool = {case["id"]: case for case in self.find_cases(self, root, self.dev_part)}
        if self.test_part is not None:
            pool.update((case["id"], case) for case in self.find_cases(self, root, self.test_part))
        unknown = [case_id for case_id in splits[split] if case_id not in pool]
        if unknown:
            raise ValueError(
                self.problem(
                    f"split file {path} names case(s) {unknown[:5]} not found under {root}"
                )
            )
        return self._nonempty(
            [pool[case_id] for case_id in splits[split]], split, f"split file {path}"
        )

    def check_cases(self, cases: Sequence[Case], files: bool = True) -> None:
        """Also, with `files`: every image channel and its label are 3-D volumes of the same
        shape and voxel-to-world matrix (headers only, so it is quick)."""
        super().check_cases(cases)
        if not files:
            return
        for case in cases:
            label = self._header(case["label"])
            images = case["image"] if isinstance(case["image"], list | tuple) else [case["image"]]
            for image_path in images:
                image = self._header(image_path)
                if image.shape != label.shape:
                    raise InvalidCaseError(
                        self.problem(
                            f"image {image_path} has shape {image.shape} but its label "
                            f"{case['label']} has shape {label.shape}"
                        )
                    )
                if not np.allclose(image.affine, label.affine, rtol=0, atol=AFFINE_TOLERANCE):
                    raise InvalidCaseError(
                        self.problem(
                            f"image {image_path} and its label {case['label']} have different "
                            f"voxel-to-world matrices (affines):\n{np.round(image.affine, 4)}\n"
                            f"vs\n{np.round(label.affine, 4)}"
                        )
                    )

    def _header(self, path: str | Path) -> nib.spatialimages.SpatialImage:
        try:
            image = nib.load(path)
        except Exception as err:  # nibabel raises several types for unreadable files
            raise InvalidCaseError(self.problem(f"cannot read {path} as NIfTI: {err}")) from err
        if len(image.shape) != 3:
            raise InvalidCaseError(
                self.problem(f"{path} has shape {image.shape}; expected a 3-D volume")
            )
        return image

    def _load_transforms(self) -> list[MapTransform]:
        steps: list[MapTransform] = [
            LoadImaged(KEYS, image_only=True),
            EnsureChannelFirstd(KEYS),
            CheckLabelValuesd("label", self.label_values, dataset=self.name, layout=self.layout),
        ]
        if self.crop_foreground:
            steps.append(CropForegroundd(KEYS, source_key="image"))
        steps += [
            # labels=None: axis names from the image's own space (MONAI's coming default).
            Orientationd(KEYS, axcodes="RAS", labels=None),
            Spacingd(KEYS, pixdim=self.target_spacing, mode=("bilinear", "nearest")),
        ]
        if self.intensity is not None:
            steps.append(self.intensity.transform())
        return steps

    def _preprocessing_steps(self) -> list[str]:
        spacing = " x ".join(f"{s:g}" for s in self.target_spacing)
        return [
            "crop to the bounding box of positive image voxels" if self.crop_foreground else "",
            "reorient to RAS",
            f"resample to {spacing} mm (bilinear image, nearest label)",
            str(self.intensity) if self.intensity is not None else "",
        ]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@contextmanager
def _surface_case_errors() -> Iterator[None]:
    """Re-raise an `InvalidCaseError` that MONAI wrapped in "applying transform" RuntimeErrors.

    MONAI wraps every exception raised inside a pipeline; the user needs our message
    (which file, which layout), not the name of the transform.
    """
    try:
        yield
    except RuntimeError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, InvalidCaseError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


class _Dataset(Dataset):
    def __getitem__(self, index: Any) -> Any:
        with _surface_case_errors():
            return super().__getitem__(index)


class _CacheDataset(CacheDataset):
    def __getitem__(self, index: Any) -> Any:
        with _surface_case_errors():
            return super().__getitem__(index)
