"""AMOS 2022: abdominal CT, 15 organs (the CT cases only; ids >= 500 are MRI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from calibtut.data.dataset_spec import Case, HUWindow
from calibtut.data.errors import check_pairs
from calibtut.data.nifti import NiftiDatasetSpec
from calibtut.data.volumes import diagonal_affine, ellipsoid, render, save_nifti, world_grid

CLASSES = (
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
    "bladder",
    "prostate/uterus",
)

FIRST_MRI_ID = 500

LAYOUT = """\
<root>/imagesTr/amos_NNNN.nii.gz   training image (CT when NNNN < 500, MRI otherwise: not used)
<root>/labelsTr/amos_NNNN.nii.gz   its label: 0 background, 1..15 organs (see data/README.md)
<root>/imagesVa/amos_NNNN.nii.gz   validation image: calibtut's test set, as in the paper
<root>/labelsVa/amos_NNNN.nii.gz   its label
(dataset.json and imagesTs/ may be present and are not used)"""

CASE = re.compile(r"amos_(?P<number>\d{4})\.nii\.gz")


def find_cases(spec: NiftiDatasetSpec, root: Path, part: str) -> list[Case]:
    """The CT cases of `imagesPART`/`labelsPART` (`Tr` or `Va`)."""
    images, labels = root / f"images{part}", root / f"labels{part}"
    for folder in (images, labels):
        if not folder.is_dir():
            hint = ""
            nested = [p for p in root.glob(f"*/{folder.name}") if p.is_dir()]
            if nested:
                hint = f" (found {nested[0]}: use {nested[0].parent} as the root)"
            raise FileNotFoundError(spec.problem(f"missing folder {folder}{hint}"))

    def ct_cases(folder: Path) -> dict[str, Path]:
        found = {}
        for path in folder.iterdir():
            match = CASE.fullmatch(path.name)
            if match and int(match["number"]) < FIRST_MRI_ID:
                found[path.name] = path
        return found

    image_files, label_files = ct_cases(images), ct_cases(labels)
    check_pairs(spec.problem, image_files, label_files, lambda name: labels / name)
    if not image_files:
        raise FileNotFoundError(
            spec.problem(f"no CT images amos_NNNN.nii.gz (NNNN < 500) in {images}")
        )
    return [
        {
            "image": str(image_files[name]),
            "label": str(label_files[name]),
            "id": name.removesuffix(".nii.gz"),
        }
        for name in sorted(image_files)
    ]


# -- phantom ---------------------------------------------------------------------------

PHANTOM_SHAPE = (48, 40, 12)
PHANTOM_SPACING = (1.25, 1.25, 5.0)
MRI_SHAPE = (32, 28, 8)
MRI_SPACING = (1.5, 1.5, 6.0)

# Organ label -> (centre, radii) in mm from the volume centre, RAS: +x is the patient's
# left, +y anterior, +z superior. Drawn in this order; later organs overwrite earlier ones.
ORGANS: dict[int, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    6: ((-10, 2, 8), (12, 10, 18)),  # liver, patient's right
    1: ((15, -6, 10), (5, 6, 9)),  # spleen, left
    2: ((-11, -12, -5), (4, 4, 9)),  # right kidney, posterior
    3: ((11, -12, -3), (4, 4, 9)),  # left kidney
    4: ((-6, 9, -2), (3, 3, 5)),  # gallbladder, under the liver
    7: ((9, 6, 12), (7, 6, 9)),  # stomach
    8: ((2, -6, 0), (2.5, 2.5, 40)),  # aorta, a tube through the volume
    9: ((-4, -6, 0), (2.5, 2, 40)),  # inferior vena cava
    10: ((3, 0, -2), (9, 2.5, 3)),  # pancreas
    11: ((-9, -10, 9), (2, 1.5, 3)),  # right adrenal gland
    12: ((9, -10, 10), (2, 1.5, 3)),  # left adrenal gland
    5: ((1, -3, 26), (2, 2, 6)),  # esophagus
    13: ((-3, 4, -9), (5, 2.5, 3)),  # duodenum
    14: ((0, 6, -24), (7, 5, 5)),  # bladder
    15: ((0, 2, -29), (3, 3, 2.5)),  # prostate/uterus
}
# Tissue values beyond the 15 organs, for rendering only.
AIR, FAT, SPINE = 16, 17, 18
CT_HU = {
    0: 40,
    1: 50,
    2: 160,
    3: 160,
    4: 10,
    5: 40,
    6: 60,
    7: 20,
    8: 180,
    9: 120,
    10: 45,
    11: 30,
    12: 30,
    13: 35,
    14: 5,
    15: 40,
    AIR: -1000,
    FAT: -100,
    SPINE: 500,
}


def _abdomen(world: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(organ labels, tissue map) of one abdomen: organs jittered per case, some absent."""
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-2, 2, size=3)
    body = ellipsoid(world, shift, (27 * scale, 22 * scale, 1e3))
    labels = np.zeros(world.shape[1:], dtype=np.uint8)
    for organ, (centre, radii) in ORGANS.items():
        if organ in (4, 15) and rng.random() < 0.2:  # removed gallbladder, small pelvis organ
            continue
        jitter = rng.uniform(0.85, 1.15, size=3)
        labels[
            ellipsoid(world, np.add(centre, shift) * scale, np.multiply(radii, jitter) * scale)
        ] = organ
    labels[~body] = 0
    tissue = labels.copy()
    wall = ellipsoid(world, shift, (24 * scale, 19 * scale, 1e3))
    tissue[body & ~wall & (labels == 0)] = FAT
    tissue[ellipsoid(world, (shift[0], shift[1] - 17 * scale, 0), (4, 4, 1e3)) & (labels == 0)] = (
        SPINE
    )
    tissue[~body] = AIR
    return labels, tissue


def write_phantom_cases(root: Path, cases: int, rng: np.random.Generator) -> None:
    """`cases` CT cases, a third (at least one) in the validation part; plus MRI cases
    (ids >= 500) in both parts and an unlabelled CT in imagesTs, as distractors."""
    n_va = max(1, round(cases / 3)) if cases > 1 else 0
    ct_ids = sorted(rng.choice(np.arange(1, FIRST_MRI_ID), size=cases + 1, replace=False))
    mri_ids = sorted(rng.choice(np.arange(FIRST_MRI_ID, 600), size=3, replace=False))
    order = rng.permutation(cases)
    parts = {
        "Tr": [ct_ids[i] for i in sorted(order[n_va:])] + mri_ids[:2],
        "Va": [ct_ids[i] for i in sorted(order[:n_va])] + mri_ids[2:],
        "Ts": [ct_ids[cases]],
    }
    ct_affine = diagonal_affine(PHANTOM_SPACING, (-1, -1, 1), PHANTOM_SHAPE)
    mri_affine = diagonal_affine(MRI_SPACING, (-1, -1, 1), MRI_SHAPE)
    listing: dict[str, list[dict[str, str]]] = {"Tr": [], "Va": [], "Ts": []}
    for part, numbers in parts.items():
        for number in numbers:
            name = f"amos_{number:04d}.nii.gz"
            if number < FIRST_MRI_ID:
                labels, tissue = _abdomen(world_grid(PHANTOM_SHAPE, ct_affine), rng)
                image = render(tissue, CT_HU, rng, noise=12.0)
                affine, dtype = ct_affine, np.int16
            else:
                labels, tissue = _abdomen(world_grid(MRI_SHAPE, mri_affine), rng)
                means = {t: 300.0 + 20 * t for t in range(16)} | {
                    AIR: 0.0,
                    FAT: 700.0,
                    SPINE: 150.0,
                }
                image = np.clip(render(tissue, means, rng, noise=20.0), 0, None)
                affine, dtype = mri_affine, np.uint16
            save_nifti(root / f"images{part}" / name, image, affine, dtype)
            entry = {"image": f"./images{part}/{name}"}
            if part != "Ts":
                save_nifti(root / f"labels{part}" / name, labels, affine, np.uint8)
                entry["label"] = f"./labels{part}/{name}"
            listing[part].append(entry)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "AMOS",
                "description": "calibtut phantom in the AMOS 2022 layout",
                "tensorImageSize": "3D",
                "modality": {"0": "CT"},
                "labels": {str(i): name for i, name in enumerate(CLASSES)},
                "numTraining": len(listing["Tr"]),
                "numValidation": len(listing["Va"]),
                "numTest": len(listing["Ts"]),
                "training": listing["Tr"],
                "validation": listing["Va"],
                "test": listing["Ts"],
            },
            indent=2,
        )
    )


SPEC = NiftiDatasetSpec(
    name="amos",
    title="AMOS 2022 (Abdominal Multi-Organ Segmentation), abdominal CT",
    description=(
        "Abdominal CT (and MRI) from two hospitals in Shenzhen with 15 annotated organs; "
        "calibtut uses the CT cases (ids below 500) of the training part for training and "
        "validation and those of the validation part as the test set, as the paper did."
    ),
    citation=(
        "Y. Ji et al., AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile "
        "Medical Image Segmentation. NeurIPS 2022 Datasets and Benchmarks."
    ),
    url="https://amos22.grand-challenge.org/",
    modality="CT",
    channel_names=("CT",),
    labels=tuple(enumerate(CLASSES)),
    spatial_dims=3,
    target_spacing=(1.0, 1.0, 5.0),
    patch_size=(176, 176, 64),
    val_window=(192, 192, 64),
    intensity=HUWindow(-100, 200),
    include_background=False,
    samples_per_case=4,
    layout=LAYOUT,
    find_cases=find_cases,
    dev_part="Tr",
    test_part="Va",
    val_fraction=0.1,
    crop_foreground=True,
    write_phantom_cases=write_phantom_cases,
    phantom_cases=9,
)
