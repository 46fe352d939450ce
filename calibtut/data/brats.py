"""BraTS 2021: multi-parametric brain MRI of gliomas, trained with a softmax over its exclusive
labels and evaluated on the overlapping tumour regions (the paper's setting)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from calibtut.data.dataset_spec import Case, ZScore
from calibtut.data.nifti import NiftiDatasetSpec, published_ids
from calibtut.data.volumes import ellipsoid, render, save_nifti, smooth_noise, world_grid

MODALITIES = ("flair", "t1", "t1ce", "t2")

LAYOUT = """\
<root>/BraTS2021_NNNNN/BraTS2021_NNNNN_flair.nii.gz   FLAIR   (input channel 0)
<root>/BraTS2021_NNNNN/BraTS2021_NNNNN_t1.nii.gz      T1      (input channel 1)
<root>/BraTS2021_NNNNN/BraTS2021_NNNNN_t1ce.nii.gz    T1 + Gd (input channel 2)
<root>/BraTS2021_NNNNN/BraTS2021_NNNNN_t2.nii.gz      T2      (input channel 3)
<root>/BraTS2021_NNNNN/BraTS2021_NNNNN_seg.nii.gz     label: 0 background, 1 necrotic tumour
                                                      core, 2 peritumoral edema, 4 enhancing tumour"""

CASE = re.compile(r"BraTS2021_\d{5}")
# The paper's split: its published lists of case ids (cai4cai/Average-Calibration-Losses).
TRAIN_VAL_IDS, TEST_IDS = "brats21_train_val.txt", "brats21_test.txt"


def find_cases(spec: NiftiDatasetSpec, root: Path, part: str) -> list[Case]:
    """Every `BraTS2021_NNNNN` folder of `root/part` with its four modalities and label."""
    folder = root / part
    case_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and CASE.fullmatch(p.name))
    if not case_dirs:
        nested = sorted(p.parent for p in folder.glob("*/BraTS2021_*") if p.is_dir())
        hint = f" (found {nested[0]}: use it as the root)" if nested else ""
        raise FileNotFoundError(spec.problem(f"no BraTS2021_NNNNN folders in {folder}{hint}"))
    cases: list[Case] = []
    for case in case_dirs:
        images = [case / f"{case.name}_{modality}.nii.gz" for modality in MODALITIES]
        label = case / f"{case.name}_seg.nii.gz"
        missing_images = [p for p in images if not p.is_file()]
        if missing_images:
            raise FileNotFoundError(spec.problem(f"missing image {missing_images[0]}"))
        if not label.is_file():
            raise FileNotFoundError(spec.problem(f"image without its label: expected {label}"))
        cases.append({"image": [str(p) for p in images], "label": str(label), "id": case.name})
    return cases


# -- phantom ---------------------------------------------------------------------------

# BraTS volumes are skull-stripped, co-registered to a 1 mm atlas and stored with an
# LPS-like affine (the first two axes flipped); background is exactly zero.
PHANTOM_SHAPE = (40, 44, 32)
# Mean intensity per tissue (0 brain, 1 necrosis, 2 edema, 4 enhancing) per modality.
MEANS = {
    "flair": {0: 300.0, 1: 420.0, 2: 820.0, 4: 600.0},
    "t1": {0: 500.0, 1: 260.0, 2: 430.0, 4: 380.0},
    "t1ce": {0: 550.0, 1: 300.0, 2: 500.0, 4: 1150.0},
    "t2": {0: 400.0, 1: 1000.0, 2: 900.0, 4: 700.0},
}


def phantom_affine() -> np.ndarray:
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = PHANTOM_SHAPE[1] - 1
    return affine


def write_phantom_cases(root: Path, cases: int, rng: np.random.Generator) -> None:
    """`cases` glioma cases: enhancing rim (4) around necrosis (1), inside edema (2)."""
    affine = phantom_affine()
    world = world_grid(PHANTOM_SHAPE, affine)
    centre = world.reshape(3, -1).mean(axis=1)
    # cases of the paper's lists, so that the default (published) split finds them: a quarter
    # of them test cases
    test = rng.choice(published_ids(TEST_IDS), size=max(1, cases // 4), replace=False)
    dev = rng.choice(published_ids(TRAIN_VAL_IDS), size=cases - len(test), replace=False)
    for name in sorted([*test, *dev]):
        brain = ellipsoid(world, centre, (17, 19, 13) * rng.uniform(0.95, 1.05, size=3))
        tumour_centre = centre + rng.uniform(-5, 5, size=3) * (1, 1, 0.5)
        distance = np.sqrt(((world - tumour_centre.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
        distance += 1.2 * smooth_noise(rng, PHANTOM_SHAPE, (3, 3, 3))  # irregular borders
        core_radius = rng.uniform(4, 5.5)
        labels = np.zeros(PHANTOM_SHAPE, dtype=np.uint8)
        labels[distance < rng.uniform(8, 10)] = 2
        labels[distance < core_radius] = 4
        labels[distance < core_radius - rng.uniform(1.5, 2.5)] = 1
        labels[~brain] = 0
        folder = root / name
        for modality in MODALITIES:
            image = render(labels, MEANS[modality], rng, noise=25.0)
            image += 30 * smooth_noise(rng, PHANTOM_SHAPE, (2, 2, 2))
            image[~brain] = 0
            save_nifti(
                folder / f"{name}_{modality}.nii.gz", np.clip(image, 0, None), affine, np.int16
            )
        save_nifti(folder / f"{name}_seg.nii.gz", labels, affine, np.uint8)


SPEC = NiftiDatasetSpec(
    name="brats",
    title="BraTS 2021 (RSNA-ASNR-MICCAI Brain Tumor Segmentation), brain MRI",
    description=(
        "Pre-operative multi-parametric MRI (FLAIR, T1, T1+Gd, T2) of 1251 glioma patients, "
        "skull-stripped and co-registered at 1 mm; labels necrotic core, edema and enhancing "
        "tumour. As in the paper, the network is trained with a softmax over the four "
        "exclusive labels and evaluated on the overlapping regions enhancing tumour, tumour "
        "core and whole tumour, each region's probability the sum of its labels'. The split "
        "is the paper's published one: 1050 train+validation cases (5% validation, seed "
        "12345) and 200 test cases."
    ),
    citation=(
        "U. Baid et al., The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation "
        "and Radiogenomic Classification. arXiv:2107.02314, 2021."
    ),
    url="https://www.synapse.org/brats2021",
    modality="MRI",
    channel_names=MODALITIES,
    labels=(
        (0, "background"),
        (1, "necrotic tumour core"),
        (2, "peritumoral edema"),
        (4, "enhancing tumour"),
    ),
    regions=(
        ("enhancing tumour", (4,)),
        ("tumour core", (1, 4)),
        ("whole tumour", (1, 2, 4)),
    ),
    spatial_dims=3,
    target_spacing=(1.0, 1.0, 1.0),
    patch_size=(224, 224, 144),
    val_window=(240, 240, 160),
    intensity=ZScore(),
    include_background=True,
    samples_per_case=1,
    augmentation="brats21",
    layout=LAYOUT,
    find_cases=find_cases,
    dev_part="",
    published_split=(TRAIN_VAL_IDS, TEST_IDS),
    val_fraction=0.05,
    crop_foreground=False,
    write_phantom_cases=write_phantom_cases,
    phantom_cases=14,
)
