"""ACDC 2017: cardiac cine MRI, right ventricle, myocardium and left ventricle.

Reading the real layout (`find_cases`) and writing phantoms in it (`write_phantom_cases`)
live together so that they cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from calibtut.data.dataset_spec import Case, ZScore
from calibtut.data.errors import check_pairs
from calibtut.data.nifti import NiftiDatasetSpec
from calibtut.data.volumes import diagonal_affine, render, save_nifti, smooth_noise, world_grid

LAYOUT = """\
<root>/training/patientNNN/patientNNN_frameMM.nii.gz      image of an annotated frame (ED or ES)
<root>/training/patientNNN/patientNNN_frameMM_gt.nii.gz   its label: 0 background, 1 right ventricle,
                                                          2 myocardium, 3 left ventricle
<root>/testing/patientNNN/...                             the same, for the test set
(patientNNN_4d.nii.gz and Info.cfg are in each patient folder and are not used)"""

PATIENT = re.compile(r"patient\d{3}")
FRAME = re.compile(r"(?P<patient>patient\d{3})_frame(?P<frame>\d{2})(?P<gt>_gt)?\.nii\.gz")


def patient_of(case_id: str) -> str:
    """`patient001_frame01` -> `patient001`. The paper split ACDC's frames, so the two frames
    of one patient may fall on both sides of train/val; `spec("acdc").replace(subject_of=
    patient_of)` keeps them together."""
    return case_id.split("_", 1)[0]


def find_cases(spec: NiftiDatasetSpec, root: Path, part: str) -> list[Case]:
    """The annotated frames under `root/part` (`training` or `testing`)."""
    folder = root / part
    if not folder.is_dir():
        hint = ""
        if (root / "database" / part).is_dir():
            hint = f" (found {root / 'database' / part}: use {root / 'database'} as the root)"
        raise FileNotFoundError(spec.problem(f"missing folder {folder}{hint}"))
    cases: list[Case] = []
    for patient in sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT.fullmatch(p.name)):
        images: dict[str, Path] = {}
        labels: dict[str, Path] = {}
        for path in patient.iterdir():
            match = FRAME.fullmatch(path.name)
            if match and match["patient"] == patient.name:
                (labels if match["gt"] else images)[match["frame"]] = path
        check_pairs(
            spec.problem,
            images,
            labels,
            lambda frame, patient=patient: patient / f"{patient.name}_frame{frame}_gt.nii.gz",
        )
        if not images:
            raise FileNotFoundError(spec.problem(f"no annotated frames in {patient}"))
        cases += [
            {
                "image": str(images[frame]),
                "label": str(labels[frame]),
                "id": f"{patient.name}_frame{frame}",
            }
            for frame in sorted(images)
        ]
    if not cases:
        raise FileNotFoundError(spec.problem(f"no patientNNN folders with frames in {folder}"))
    return cases


# -- phantom ---------------------------------------------------------------------------

PHANTOM_SHAPE = (48, 48, 8)
PHANTOM_SPACING = (1.6, 1.6, 10.0)
PHANTOM_FRAMES = 6
BLOOD, MUSCLE, TISSUE = 280.0, 80.0, 140.0


def _heart(world: np.ndarray, contraction: float, shape: dict[str, float]) -> np.ndarray:
    """Label map of a short-axis stack: LV blood pool in a myocardial ring, RV crescent beside.

    `contraction` is 1 at end-diastole and smaller towards end-systole: the cavities
    shrink and the wall thickens.
    """
    x, y, z = world
    apex = (z - z.min()) / (z.max() - z.min())  # 0 at the base slice, 1 at the apex
    lv_radius = shape["lv"] * contraction * (1 - 0.6 * apex)
    outer = lv_radius + shape["wall"] * (1 + 0.5 * (1 - contraction))
    from_lv = np.hypot(x - shape["x"], y - shape["y"])
    # The RV wraps the LV on the patient's right (RAS -x) and anterior (+y) side: a disk
    # overlapping the LV, minus the LV and its wall, leaves a crescent.
    from_rv = np.hypot(
        x - shape["x"] + shape["rv_shift"], y - shape["y"] - 0.35 * shape["rv_shift"]
    )
    rv_radius = shape["rv"] * (0.4 + 0.6 * contraction) * (1 - 0.8 * apex)
    labels = np.zeros(world.shape[1:], dtype=np.uint8)
    labels[(from_rv < rv_radius) & (from_lv >= outer + 1.5) & (apex < 0.85)] = 1
    labels[(from_lv >= lv_radius) & (from_lv < outer)] = 2
    labels[from_lv < lv_radius] = 3
    return labels


def write_phantom_cases(root: Path, cases: int, rng: np.random.Generator) -> None:
    """`cases` patients, a third of them (at least one) under `testing/`, the rest under `training/`."""
    n_test = max(1, round(cases / 3)) if cases > 1 else 0
    patients = [("training", i + 1) for i in range(cases - n_test)]
    patients += [("testing", 101 + i) for i in range(n_test)]
    affine = diagonal_affine(PHANTOM_SPACING, (-1, -1, 1), PHANTOM_SHAPE)
    world = world_grid(PHANTOM_SHAPE, affine)
    (root / "MANDATORY_CITATION.md").write_text(
        "Phantom in the ACDC layout written by calibtut; cite the ACDC paper for the real data.\n"
    )
    for part, number in patients:
        name = f"patient{number:03d}"
        folder = root / part / name
        shape = {
            "x": rng.uniform(-4, 4),
            "y": rng.uniform(-4, 4),
            "lv": rng.uniform(11, 15),
            "wall": rng.uniform(5, 7),
            "rv": rng.uniform(21, 25),
            "rv_shift": rng.uniform(11, 14),
        }
        end_systole = PHANTOM_FRAMES // 2 + 1
        texture = 25 * smooth_noise(rng, PHANTOM_SHAPE, (3, 3, 0))
        frames = []
        for frame in range(1, PHANTOM_FRAMES + 1):
            phase = (1 - np.cos(2 * np.pi * (frame - 1) / PHANTOM_FRAMES)) / 2  # 0 ED, 1 ES
            labels = _heart(world, 1 - 0.3 * phase, shape)
            means = {0: TISSUE, 1: BLOOD, 2: MUSCLE, 3: BLOOD}
            image = render(labels, means, rng, noise=15.0) + texture * (labels == 0)
            image[:2] = 0  # zero padding at the field-of-view edge, as in ACDC
            image = np.clip(image, 0, None)
            frames.append(image)
            if frame in (1, end_systole):
                save_nifti(folder / f"{name}_frame{frame:02d}.nii.gz", image, affine, np.int16)
                save_nifti(folder / f"{name}_frame{frame:02d}_gt.nii.gz", labels, affine, np.uint8)
        save_nifti(folder / f"{name}_4d.nii.gz", np.stack(frames, axis=-1), affine, np.int16)
        (folder / "Info.cfg").write_text(
            f"ED: 1\nES: {end_systole}\nGroup: NOR\nHeight: {rng.uniform(155, 190):.1f}\n"
            f"NbFrame: {PHANTOM_FRAMES}\nWeight: {rng.uniform(55, 95):.1f}\n"
        )


SPEC = NiftiDatasetSpec(
    name="acdc",
    title="ACDC 2017 (Automated Cardiac Diagnosis Challenge), cardiac cine MRI",
    description=(
        "Short-axis cine MRI of 150 patients (100 training, 50 testing) from the University "
        "Hospital of Dijon, five groups (normal, previous infarction, dilated and hypertrophic "
        "cardiomyopathy, abnormal right ventricle); the end-diastolic and end-systolic frames "
        "are annotated with the right ventricle, myocardium and left ventricle."
    ),
    citation=(
        "O. Bernard et al., Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures "
        "Segmentation and Diagnosis: Is the Problem Solved? IEEE Transactions on Medical Imaging "
        "37(11):2514-2525, 2018."
    ),
    url="https://www.creatis.insa-lyon.fr/Challenge/acdc/",
    modality="MRI",
    channel_names=("cine MRI",),
    labels=((0, "background"), (1, "right ventricle"), (2, "myocardium"), (3, "left ventricle")),
    spatial_dims=3,
    target_spacing=(1.0, 1.0, 5.0),
    patch_size=(256, 256, 16),
    val_window=(256, 256, 16),
    intensity=ZScore(),
    include_background=False,
    samples_per_case=1,
    layout=LAYOUT,
    find_cases=find_cases,
    dev_part="training",
    test_part="testing",
    val_fraction=0.1,
    crop_foreground=True,
    write_phantom_cases=write_phantom_cases,
    phantom_cases=9,
)
