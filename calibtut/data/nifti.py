"""Datasets of NIfTI files in their own published layouts (ACDC, AMOS, KiTS23, BraTS21): how
cases are found, split as the paper split them, and checked before anything trains."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import partition_dataset
from monai.transforms import (
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    Orientationd,
    Spacingd,
)

from calibtut.data.dataset_spec import (
    AFFINE_TOLERANCE,
    KEYS,
    SPLITS,
    Case,
    DatasetSpec,
    Split,
    check_split,
)
from calibtut.data.errors import InvalidCaseError, describe
from calibtut.data.transforms import CheckLabelValuesd

__all__ = ["NiftiDatasetSpec", "published_ids"]

SPLITS_FOLDER = Path(__file__).with_name("splits")


def published_ids(filename: str) -> list[str]:
    """The case ids of one of the authors' published split lists shipped with calibtut
    (``calibtut/data/splits/``: copied from cai4cai/Average-Calibration-Losses, commit 5ad8418)."""
    path = SPLITS_FOLDER / filename
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path} lists a case id more than once")
    return ids


@dataclass(frozen=True, kw_only=True)
class NiftiDatasetSpec(DatasetSpec):
    """A dataset of NIfTI files in its own published layout, found by `find_cases`.

    Splits, as the paper made them: `test_part` names the layout's own test part (ACDC
    `testing/`, AMOS `imagesVa/`); `published_split` names the authors' published lists of
    case ids shipped with calibtut (BraTS: the train+validation and the test ids); otherwise
    `test_fraction` of the cases (sorted by id) is held out with `test_seed`. The rest is
    split into train/val with `val_fraction` and `split_seed` (MONAI's `partition_dataset`,
    as the authors' configs), by subject when `subject_of` is given so that no subject is in
    both. `split_file`, a JSON file `{"train": [ids], "val": [ids], "test": [ids]}`,
    overrides all of this.
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
    published_split: tuple[str, str] | None = None
    subject_of: Callable[[str], str] | None = field(default=None, repr=False)
    crop_foreground: bool = True
    write_phantom_cases: Callable[[Path, int, np.random.Generator], None] = field(repr=False)
    phantom_cases: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_spacing is None:
            raise ValueError(f"{self.name}: a NIfTI dataset needs a target_spacing")
        if (
            self.test_part is None
            and self.published_split is None
            and not 0 < self.test_fraction < 1
        ):
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
        dev = sorted(self.find_cases(self, root, self.dev_part), key=lambda case: case["id"])
        how = f"{len(dev)} cases"
        if self.published_split is not None:
            dev, test = self._published_parts(root, dev)
            how = f"the paper's published lists ({len(dev)} train+val and {len(test)} test cases)"
            if split == "test":
                return self._nonempty(test, split, how)
        elif self.test_part is None:
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

    def _published_parts(self, root: Path, cases: list[Case]) -> tuple[list[Case], list[Case]]:
        """The cases of the published train+val and test lists, sorted by id. Every listed case
        must be under ``root``, so that the test set is the paper's (a phantom, which holds a
        few listed cases, is the exception); cases in neither list are not used."""
        from calibtut.data.phantoms import MARKER  # (phantoms imports this module)

        parts = []
        found = {case["id"]: case for case in cases}
        phantom = (root / MARKER).is_file()
        for filename in self.published_split:
            ids = published_ids(filename)
            missing = [case_id for case_id in ids if case_id not in found]
            if phantom:
                ids = [case_id for case_id in ids if case_id in found]
            elif missing:
                raise FileNotFoundError(
                    self.problem(
                        f"{len(missing)} of the {len(ids)} cases of the paper's list {filename} "
                        f"are not under {root} (e.g. {', '.join(missing[:3])}); use the complete "
                        "dataset, or give a split file (spec.replace(split_file=...))"
                    )
                )
            parts.append([found[case_id] for case_id in sorted(ids)])
        return parts[0], parts[1]

    def _existing_root(self, root: str | Path | None) -> Path:
        if root is None:
            raise ValueError(
                self.problem(
                    "no data folder given: pass the dataset's folder (--data-dir, or data_dir= "
                    "in Python and the notebooks)"
                )
            )
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

    def _load_transforms(self, intensity: bool = True) -> list[MapTransform]:
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
        if intensity and self.intensity is not None:
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
