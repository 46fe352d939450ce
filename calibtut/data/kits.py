"""KiTS23: kidney CT with kidney, tumour and cyst, trained with a softmax over these exclusive
labels and evaluated on the challenge's overlapping regions (the paper's setting)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from calibtut.data.dataset_spec import Case, HUWindow
from calibtut.data.nifti import NiftiDatasetSpec
from calibtut.data.volumes import ellipsoid, render, save_nifti, smooth_noise, world_grid

LAYOUT = """\
<root>/case_NNNNN/imaging.nii.gz        CT image
<root>/case_NNNNN/segmentation.nii.gz   its label: 0 background, 1 kidney, 2 tumor, 3 cyst
(case folders may also hold instances/, and <root> kits23.json: not used)"""

CASE = re.compile(r"case_\d{5}")
IMAGE, LABEL = "imaging.nii.gz", "segmentation.nii.gz"


def find_cases(spec: NiftiDatasetSpec, root: Path, part: str) -> list[Case]:
    """Every `case_NNNNN` folder of `root/part` (the whole dataset: `part` is "")."""
    folder = root / part
    case_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and CASE.fullmatch(p.name))
    if not case_dirs:
        hint = ""
        if (folder / "dataset").is_dir():
            hint = f" (found {folder / 'dataset'}: use it as the root)"
        raise FileNotFoundError(spec.problem(f"no case_NNNNN folders in {folder}{hint}"))
    cases: list[Case] = []
    for case in case_dirs:
        image, label = case / IMAGE, case / LABEL
        if not label.is_file():
            raise FileNotFoundError(spec.problem(f"missing label {label}"))
        if not image.is_file():
            raise FileNotFoundError(
                spec.problem(
                    f"label without its image: {label} (expected {image}; the kits23 "
                    f"repository downloads images with kits23_download_data)"
                )
            )
        cases.append({"image": str(image), "label": str(label), "id": case.name})
    return cases


# -- phantom ---------------------------------------------------------------------------

# KiTS stores volumes slice-first: (slices, rows, columns), the first voxel axis running
# inferior, the others posterior and right-to-left: Orientationd has real work to do.
PHANTOM_SHAPE = (16, 48, 48)
SLICE_MM, PIXEL_MM = 3.0, 0.8
HU = {0: 45, 1: 170, 2: 80, 3: 8, 4: -1000, 5: -90, 6: 400}  # 4 air, 5 fat, 6 spine


def phantom_affine() -> np.ndarray:
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = -PIXEL_MM, -PIXEL_MM, -SLICE_MM, 1
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(PHANTOM_SHAPE) - 1) / 2)
    return affine


def write_phantom_cases(root: Path, cases: int, rng: np.random.Generator) -> None:
    """`cases` case folders: two kidneys, an exophytic tumour on one and a cyst, with the
    `instances/` masks and `kits23.json` of the real dataset as distractors."""
    affine = phantom_affine()
    world = world_grid(PHANTOM_SHAPE, affine)
    records = []
    for index in range(cases):
        case = root / f"case_{index:05d}"
        side = rng.choice([-1.0, 1.0])  # the tumour's kidney; the cyst is in the other
        kidneys = [
            ellipsoid(
                world,
                (s * rng.uniform(8, 10), -4 + rng.uniform(-1, 1), rng.uniform(-3, 3)),
                (4.5, 4.0, 11.0) * rng.uniform(0.9, 1.1, size=3),
            )
            for s in (-1.0, 1.0)
        ]
        tumour_centre = (side * rng.uniform(12, 13.5), -4, rng.uniform(-4, 4))
        tumour = ellipsoid(world, tumour_centre, [rng.uniform(3, 4)] * 3)
        cyst = ellipsoid(world, (-side * 9, -4, rng.uniform(-5, 5)), [rng.uniform(1.6, 2.2)] * 3)
        labels = np.zeros(PHANTOM_SHAPE, dtype=np.uint8)
        labels[kidneys[0] | kidneys[1]] = 1
        labels[tumour] = 2
        labels[cyst & (labels == 1)] = 3
        body = ellipsoid(world, (0, 0, 0), (17, 14, 1e3))
        tissue = labels.copy()
        tissue[body & ~ellipsoid(world, (0, 0, 0), (15, 12, 1e3)) & (labels == 0)] = 5
        tissue[ellipsoid(world, (0, -10, 0), (3.5, 3.5, 1e3)) & (labels == 0)] = 6
        tissue[~body] = 4
        image = render(tissue, HU, rng, noise=10.0) + 8 * smooth_noise(
            rng, PHANTOM_SHAPE, (1, 3, 3)
        )
        save_nifti(case / IMAGE, image, affine, np.int16)
        save_nifti(case / LABEL, labels, affine, np.uint8)
        tumour_kidney = 0 if side < 0 else 1
        masses = {tumour_kidney: tumour, 1 - tumour_kidney: labels == 3}
        instances = {f"kidney_instance-{i + 1}": kidneys[i] | masses[i] for i in (0, 1)}
        instances |= {"tumor_instance-1": tumour, "cyst_instance-1": labels == 3}
        for name, mask in instances.items():
            save_nifti(case / "instances" / f"{name}_annotation-1.nii.gz", mask, affine, np.uint8)
        records.append({"case_id": case.name, "age_at_nephrectomy": int(rng.integers(30, 80))})
    (root / "kits23.json").write_text(json.dumps(records, indent=2))


SPEC = NiftiDatasetSpec(
    name="kits",
    title="KiTS23 (Kidney and Kidney Tumor Segmentation Challenge 2023), kidney CT",
    description=(
        "Contrast-enhanced corticomedullary-phase CT of 489 patients who underwent partial or "
        "radical nephrectomy (M Health Fairview), with kidney, tumour and cyst annotations. "
        "As in the paper, the network is trained with a softmax over the four exclusive "
        "labels and evaluated on the challenge's overlapping regions tumour, masses (tumour "
        "and cyst) and kidney and masses, each region's probability the sum of its labels'. "
        "No official labelled test set: 20% of the cases are held out with seed 42 as in the "
        "paper."
    ),
    citation=(
        "N. Heller et al., The KiTS21 Challenge: Automatic segmentation of kidneys, renal "
        "tumors, and renal cysts in corticomedullary-phase CT. arXiv:2307.01984, 2023."
    ),
    url="https://kits-challenge.org/kits23/",
    modality="CT",
    channel_names=("CT",),
    labels=((0, "background"), (1, "kidney"), (2, "tumor"), (3, "cyst")),
    regions=(("tumor", (2,)), ("masses", (2, 3)), ("kidney and masses", (1, 2, 3))),
    spatial_dims=3,
    target_spacing=(1.0, 1.0, 1.0),
    patch_size=(128, 128, 128),
    val_window=(256, 256, 256),
    intensity=HUWindow(-54, 242),
    include_background=True,
    samples_per_case=4,
    layout=LAYOUT,
    find_cases=find_cases,
    dev_part="",
    test_fraction=0.2,
    test_seed=42,
    val_fraction=0.1,
    crop_foreground=True,
    write_phantom_cases=write_phantom_cases,
    phantom_cases=7,
)
