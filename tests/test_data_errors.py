"""Bad data folders: every error names the dataset, the file, the layout and the README,
and nothing in the user's folder is ever written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from calibtut.data import InvalidCaseError, spec, write_phantom
from calibtut.data.phantoms import MARKER

README = "data/README.md"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    roots = {
        name: write_phantom(name, base / name, seed=2) for name in ("acdc", "amos", "kits", "brats")
    }
    for name, root in roots.items():
        if name != "brats":  # BraTS's published split finds a few of its cases only in a phantom
            (root / MARKER).unlink()  # a user's folder, not a phantom
    return roots


@pytest.fixture
def copy(pristine, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(pristine[name], tmp_path / name))

    return make


def check_message(message: str, *needles: str) -> None:
    for needle in (*needles, README):
        assert needle in message, f"{needle!r} not in:\n{message}"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


# -- roots and layouts -----------------------------------------------------------------


@pytest.mark.parametrize("name", ("acdc", "amos", "kits", "brats"))
def test_missing_root(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        spec(name).cases(tmp_path / "nowhere", "train")
    check_message(
        str(err.value), f"{name}:", str(tmp_path / "nowhere"), "does not exist", "<root>/"
    )


def test_no_root():
    with pytest.raises(ValueError, match="no data folder given"):
        spec("kits").dataset(None, "train")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acdc", "missing folder"),
        ("amos", "missing folder"),
        ("kits", "no case_NNNNN folders"),
        ("brats", "no BraTS2021_NNNNN folders"),
    ],
)
def test_empty_root(tmp_path, name, expected):
    with pytest.raises(FileNotFoundError) as err:
        spec(name).cases(tmp_path, "train")
    check_message(str(err.value), f"{name}:", expected, str(tmp_path), "Expected layout of")


def test_wrong_dataset_layout(pristine):
    with pytest.raises(FileNotFoundError) as err:
        spec("acdc").cases(pristine["kits"], "train")
    check_message(
        str(err.value), "missing folder", str(pristine["kits"] / "training"), "patientNNN"
    )
    with pytest.raises(FileNotFoundError) as err:
        spec("brats").cases(pristine["acdc"], "test")
    check_message(str(err.value), "BraTS2021_NNNNN")


def test_root_one_level_too_high_gets_a_hint(copy, tmp_path):
    outer = tmp_path / "ACDC"
    shutil.move(copy("acdc"), outer / "database")
    with pytest.raises(FileNotFoundError, match="use .*database as the root"):
        spec("acdc").cases(outer, "train")
    assert len(spec("acdc").cases(outer / "database", "test")) == 6


# -- files that do not pair up ---------------------------------------------------------


def test_acdc_image_without_label(copy):
    root = copy("acdc")
    (root / "training/patient002/patient002_frame01_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("acdc").cases(root, "train")
    check_message(
        str(err.value),
        "image without its label",
        "patient002_frame01.nii.gz",
        "patient002_frame01_gt.nii.gz",
    )


def test_acdc_label_without_image(copy):
    root = copy("acdc")
    (root / "testing/patient101/patient101_frame04.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("acdc").cases(root, "test")
    check_message(str(err.value), "label without its image", "patient101_frame04_gt.nii.gz")
    assert len(spec("acdc").cases(root, "train")) > 0  # the training part is still fine


def test_amos_image_without_label_and_mri_ignored(copy):
    root = copy("amos")
    mri_labels = [p for p in (root / "labelsTr").iterdir() if int(p.name[5:9]) >= 500]
    for path in mri_labels:  # an MRI case without a label is not a CT case: not an error
        path.unlink()
    ct = sorted(p for p in (root / "labelsTr").iterdir())[0]
    assert len(spec("amos").cases(root, "train")) == 5
    ct.unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("amos").cases(root, "train")
    check_message(
        str(err.value), "image without its label", f"imagesTr/{ct.name}", f"labelsTr/{ct.name}"
    )


def test_kits_missing_imaging_or_segmentation(copy):
    root = copy("kits")
    (root / "case_00003/imaging.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("kits").cases(root, "val")
    check_message(
        str(err.value),
        "label without its image",
        "case_00003/imaging.nii.gz",
        "kits23_download_data",
    )
    shutil.rmtree(root / "case_00003")
    (root / "case_00004/segmentation.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("kits").cases(root, "test")
    check_message(str(err.value), "missing label", "case_00004/segmentation.nii.gz")


def test_brats_missing_modality_or_label(copy):
    root = copy("brats")
    case = sorted(root.glob("BraTS2021_*"))[4]
    (case / f"{case.name}_t1ce.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        spec("brats").cases(root, "train")
    check_message(str(err.value), "missing image", f"{case.name}_t1ce.nii.gz")
    case = sorted(root.glob("BraTS2021_*"))[5]
    (case / f"{case.name}_seg.nii.gz").unlink()
    shutil.rmtree(sorted(root.glob("BraTS2021_*"))[4])
    with pytest.raises(FileNotFoundError) as err:
        spec("brats").cases(root, "train")
    check_message(str(err.value), "image without its label", f"{case.name}_seg.nii.gz")


# -- file contents ---------------------------------------------------------------------


def rewrite(path: Path, data=None, affine=None) -> None:
    image = nib.load(path)
    data = np.asarray(image.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), path)


def test_unknown_label_value_cached_and_uncached(copy):
    root = copy("brats")
    case = spec("brats").cases(root, "test")[0]
    label = np.asarray(nib.load(case["label"]).dataobj).copy()
    label[label == 4] = 3  # BraTS 2023 relabelled enhancing tumour 3; BraTS 2021 uses 4
    rewrite(Path(case["label"]), label)
    for cache in (True, False):
        with pytest.raises(InvalidCaseError) as err:
            dataset = spec("brats").dataset(root, "test", cache=cache)
            dataset[0]
        check_message(str(err.value), "brats:", case["label"], "value(s) 3", "[0, 1, 2, 4]")


def test_label_of_another_shape(copy):
    root = copy("acdc")
    case = spec("acdc").cases(root, "test")[1]
    label = np.asarray(nib.load(case["label"]).dataobj)
    rewrite(Path(case["label"]), label[:, :40])
    with pytest.raises(InvalidCaseError) as err:
        spec("acdc").dataset(root, "test")
    check_message(str(err.value), case["image"], case["label"], "(48, 48, 8)", "(48, 40, 8)")


def test_label_with_another_affine(copy):
    root = copy("kits")
    case = spec("kits").cases(root, "train")[0]
    shifted = nib.load(case["label"]).affine.copy()
    shifted[0, 3] += 2.0
    rewrite(Path(case["label"]), affine=shifted)
    with pytest.raises(InvalidCaseError) as err:
        spec("kits").dataset(root, "train", cache=False)
    check_message(str(err.value), "different voxel-to-world matrices", case["label"])
    # The check can be skipped (at the user's risk); loading then proceeds.
    assert len(spec("kits").dataset(root, "train", cache=False, check=False)) == 5


def test_four_dimensional_image_where_a_volume_is_expected(copy):
    root = copy("acdc")
    case = spec("acdc").cases(root, "test")[0]
    patient = Path(case["image"]).parent
    shutil.copy(patient / f"{patient.name}_4d.nii.gz", case["image"])
    with pytest.raises(InvalidCaseError) as err:
        spec("acdc").dataset(root, "test")
    check_message(str(err.value), case["image"], "expected a 3-D volume")


def test_unreadable_file(copy):
    root = copy("amos")
    case = spec("amos").cases(root, "test")[0]
    Path(case["image"]).write_bytes(b"not a nifti file")
    with pytest.raises(InvalidCaseError) as err:
        spec("amos").dataset(root, "test")
    check_message(str(err.value), "cannot read", case["image"])


# -- splits ----------------------------------------------------------------------------


def test_too_few_cases_for_a_split(tmp_path):
    root = write_phantom("kits", tmp_path / "kits", cases=4)
    assert len(spec("kits").cases(root, "train")) == 3  # int(0.8 * 4 + 0.5) = 3 kept
    with pytest.raises(ValueError, match="the val split is empty .*split file"):
        spec("kits").cases(root, "val")


def test_split_file(pristine, tmp_path):
    root = pristine["kits"]
    split_file = tmp_path / "split.json"
    split_file.write_text(
        json.dumps(
            {"train": ["case_00004", "case_00000"], "val": ["case_00001"], "test": ["case_00006"]}
        )
    )
    s = spec("kits").replace(split_file=str(split_file))
    assert [c["id"] for c in s.cases(root, "train")] == ["case_00000", "case_00004"]
    assert [c["id"] for c in s.cases(root, "test")] == ["case_00006"]

    split_file.write_text(json.dumps({"train": ["case_00099"], "val": [], "test": []}))
    with pytest.raises(ValueError) as err:
        s.cases(root, "train")
    check_message(str(err.value), "case_00099", str(split_file))
    split_file.write_text(json.dumps({"train": ["case_00001"], "val": ["case_00001"], "test": []}))
    with pytest.raises(ValueError, match="more than one place"):
        s.cases(root, "train")
    split_file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        s.cases(root, "train")
    split_file.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match='lists\n? ?"train", "val" and "test"'):
        s.cases(root, "train")


def test_acdc_split_file_reaches_the_testing_part(pristine, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(
        json.dumps(
            {
                "train": ["patient101_frame01"],
                "val": ["patient001_frame01"],
                "test": ["patient002_frame04"],
            }
        )
    )
    s = spec("acdc").replace(split_file=str(split_file))
    assert s.cases(pristine["acdc"], "train")[0]["image"].endswith(
        "testing/patient101/patient101_frame01.nii.gz"
    )


# -- nothing written -------------------------------------------------------------------


def test_reading_never_writes_into_the_data_folder(pristine):
    before = {name: snapshot(root) for name, root in pristine.items()}
    for name, root in pristine.items():
        s = spec(name).replace(patch_size=(16, 16, 8))
        for split in ("train", "val", "test"):
            dataset = s.dataset(root, split, cache=split == "test")
            dataset[0]
    with pytest.raises(FileNotFoundError):
        spec("acdc").cases(pristine["kits"], "train")
    assert {name: snapshot(root) for name, root in pristine.items()} == before
