"""Phantom -> cases -> transforms -> batch, for each of the paper's datasets in its real layout."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, partition_dataset
from monai.transforms import (
    ConvertToMultiChannelBasedOnBratsClasses,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    Spacingd,
)
from scipy import ndimage

from calibtut.data import spec, write_phantom
from calibtut.data.acdc import patient_of
from calibtut.data.nifti import published_ids
from calibtut.data.phantoms import MARKER

REAL = ("acdc", "amos", "kits", "brats")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Each dataset's phantom with its default number of cases, written once."""
    base = tmp_path_factory.mktemp("phantoms")
    return {name: write_phantom(name, base / name, seed=1) for name in REAL}


def all_cases(name, root):
    return {split: spec(name).cases(root, split) for split in ("train", "val", "test")}


def ids(cases):
    return [case["id"] for case in cases]


# -- case discovery --------------------------------------------------------------------


def test_acdc_cases_are_the_annotated_frames_only(phantoms):
    root = phantoms["acdc"]
    found = all_cases("acdc", root)
    # 9 patients: 3 testing (patient101-103), 6 training; ED frame01 and ES frame04 each.
    assert ids(found["test"]) == [
        f"patient{p}_frame{f}" for p in (101, 102, 103) for f in ("01", "04")
    ]
    dev = sorted(ids(found["train"]) + ids(found["val"]))
    assert dev == [f"patient{p:03d}_frame{f}" for p in range(1, 7) for f in ("01", "04")]
    # The distractors exist on disk and are not cases.
    assert (root / "training/patient001/patient001_4d.nii.gz").is_file()
    assert (root / "training/patient001/Info.cfg").read_text().startswith("ED: 1\nES: 4\n")
    every_path = [c["image"] for s in found.values() for c in s] + [
        c["label"] for s in found.values() for c in s
    ]
    assert not any("_4d" in p or p.endswith(".cfg") for p in every_path)


def test_acdc_validation_split_is_the_papers_by_frame(phantoms):
    """The authors' acdc17.yaml: partition_dataset(sorted frames, (9, 1), shuffle, seed 12345)."""
    found = all_cases("acdc", phantoms["acdc"])
    frames = sorted(ids(found["train"]) + ids(found["val"]))
    _, paper_val = partition_dataset(frames, ratios=(9, 1), shuffle=True, seed=12345)
    assert ids(found["val"]) == sorted(paper_val) and len(paper_val) == 1
    for case in found["val"]:
        assert case["label"] == case["image"].replace(".nii.gz", "_gt.nii.gz")
    by_patient = spec("acdc").replace(subject_of=patient_of)
    patients = {
        split: {i.split("_")[0] for i in ids(by_patient.cases(phantoms["acdc"], split))}
        for split in ("train", "val")
    }
    assert patients["train"].isdisjoint(patients["val"])  # the option keeps patients together


def test_amos_cases_are_ct_only(phantoms):
    root = phantoms["amos"]
    found = all_cases("amos", root)
    listing = json.loads((root / "dataset.json").read_text())
    numbers = lambda entries: [int(re.search(r"amos_(\d{4})", e["image"])[1]) for e in entries]  # noqa: E731
    ct_tr = [n for n in numbers(listing["training"]) if n < 500]
    ct_va = [n for n in numbers(listing["validation"]) if n < 500]
    assert any(n >= 500 for n in numbers(listing["training"]))  # MRI distractors exist
    assert sorted(ids(found["train"]) + ids(found["val"])) == [
        f"amos_{n:04d}" for n in sorted(ct_tr)
    ]
    assert ids(found["test"]) == [f"amos_{n:04d}" for n in sorted(ct_va)]
    assert len(ct_tr) == 6 and len(ct_va) == 3
    assert (root / "imagesTs").is_dir() and not any("imagesTs" in c["image"] for c in found["test"])


def test_kits_cases_and_held_out_test_split(phantoms):
    root = phantoms["kits"]
    found = all_cases("kits", root)
    every = [f"case_{i:05d}" for i in range(7)]
    assert sorted(ids(found["train"]) + ids(found["val"]) + ids(found["test"])) == every
    # 20% held out with seed 42 as the paper did: int(0.8 * 7 + 0.5) = 6 kept, 1 for test.
    assert len(found["test"]) == 1 and len(found["val"]) == 1 and len(found["train"]) == 5
    _, paper_test = partition_dataset(every, ratios=(0.8, 0.2), shuffle=True, seed=42)
    assert ids(found["test"]) == paper_test
    assert (root / "case_00000/instances/tumor_instance-1_annotation-1.nii.gz").is_file()
    assert all(c["label"].endswith("segmentation.nii.gz") for c in found["train"])


def test_brats_cases_have_four_channels_in_order(phantoms):
    found = all_cases("brats", phantoms["brats"])
    assert sum(len(c) for c in found.values()) == 14
    assert (len(found["train"]), len(found["val"]), len(found["test"])) == (10, 1, 3)
    test_list = set(published_ids("brats21_test.txt"))
    assert set(ids(found["test"])) <= test_list  # the phantom's cases come from the lists
    assert not (set(ids(found["train"])) | set(ids(found["val"]))) & test_list
    case = found["train"][0]
    assert [p.rsplit("_", 1)[1] for p in case["image"]] == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]
    assert case["label"].endswith(f"{case['id']}_seg.nii.gz")


# The paper's KiTS23 test cases, in the order of its per-image results
# (github.com/cai4cai/Average-Calibration-Losses, bundles/kits23_baseline_dice_ce_1/
# seed_12345/inference_results/mean_dice_raw.csv).
PAPER_KITS_TEST = [
    236, 207, 212, 295, 547, 251, 577, 548, 403, 450, 269, 201, 161, 43, 217, 501, 190, 409,
    259, 105, 53, 489, 1, 532, 571, 49, 80, 205, 34, 263, 466, 91, 439, 562, 52, 445, 264, 241,
    13, 415, 88, 487, 273, 166, 428, 581, 134, 406, 569, 419, 243, 54, 463, 50, 174, 545, 189,
    585, 187, 169, 58, 48, 444, 235, 252, 21, 413, 160, 276, 543, 191, 485, 293, 513, 443, 257,
    408, 149, 130, 151, 459, 99, 472, 87, 558, 430, 214, 566, 121, 588, 20, 188, 71, 106, 270,
    448, 535, 102,
]  # fmt: skip


def test_kits_default_split_is_the_papers(tmp_path):
    """On the 489 KiTS23 case folders (empty files suffice to list cases), the held-out
    test set is exactly the paper's."""
    for number in [*range(300), *range(400, 589)]:
        case = tmp_path / f"case_{number:05d}"
        case.mkdir()
        (case / "imaging.nii.gz").touch()
        (case / "segmentation.nii.gz").touch()
    test = ids(spec("kits").cases(tmp_path, "test"))
    assert test == sorted(f"case_{number:05d}" for number in PAPER_KITS_TEST)
    train, val = spec("kits").cases(tmp_path, "train"), spec("kits").cases(tmp_path, "val")
    assert (len(train), len(val)) == (352, 39)  # 391 kept, 9:1 as in the paper


@pytest.mark.parametrize("name", REAL)
def test_splits_are_disjoint_sorted_and_stable(phantoms, name):
    first, second = all_cases(name, phantoms[name]), all_cases(name, phantoms[name])
    assert first == second
    seen = [i for cases in first.values() for i in ids(cases)]
    assert len(seen) == len(set(seen))
    for cases in first.values():
        assert ids(cases) == sorted(ids(cases))


# -- transforms ------------------------------------------------------------------------

# After Orientationd(RAS) + Spacingd, each axis of n voxels of spacing s becomes
# round((n - 1) * s / t) + 1 voxels of spacing t (MONAI keeps the corner voxel centres).
RESAMPLED_SHAPE = {
    "acdc": (76, 76, 15),  # 48x48x8 at 1.6x1.6x10 -> 1x1x5: 75.2 -> 75 (+1), 14 (+1)
    "amos": (60, 50, 12),  # 48x40x12 at 1.25x1.25x5 -> 1x1x5: 58.75 -> 59, 48.75 -> 49, 11
    "kits": (39, 39, 46),  # stored (16, 48, 48) slice-first at 3, 0.8, 0.8: RAS (48, 48, 16)
    "brats": (40, 44, 32),  # already 1 mm: only the axis flips
}


def first_item(dataset):
    item = dataset[0]
    return item[0] if isinstance(item, list) else item


@pytest.mark.parametrize("name", REAL)
def test_val_transforms_resample_to_the_target_spacing(phantoms, name):
    s = spec(name).replace(crop_foreground=False)
    item = first_item(s.dataset(phantoms[name], "val", cache=False))
    assert item["image"].shape == (s.in_channels, *RESAMPLED_SHAPE[name])
    assert item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"].pixdim, s.target_spacing, rtol=1e-5)
    expected_label_channels = 1 if s.activation == "softmax" else s.out_channels
    assert item["label"].shape == (expected_label_channels, *RESAMPLED_SHAPE[name])


def test_acdc_foreground_crop_removes_the_zero_padding(phantoms):
    """ACDC's phantom has two zero rows at the edge of voxel axis 0; the crop removes them."""
    case = spec("acdc").cases(phantoms["acdc"], "val")[0]
    raw = nib.load(case["image"]).get_fdata()
    rows = np.flatnonzero((raw > 0).any(axis=(1, 2)))
    assert (rows[0], rows[-1]) == (2, 47)
    item = spec("acdc").dataset(phantoms["acdc"], "val", cache=False)[0]
    kept = rows[-1] - rows[0] + 1  # 46 voxels of 1.6 mm -> round(45 * 1.6) + 1 = 73
    assert item["image"].shape == (1, round((kept - 1) * 1.6) + 1, 76, 15) == (1, 73, 76, 15)


def test_intensity_preprocessing(phantoms):
    ct = spec("kits").dataset(phantoms["kits"], "val", cache=False)[0]["image"]
    assert float(ct.min()) >= 0.0 and float(ct.max()) <= 1.0
    assert 0.0 < float((ct == 1.0).float().mean()) < 0.5  # kidneys (170 HU) are in the window
    mr = spec("brats").dataset(phantoms["brats"], "val", cache=False)[0]["image"]
    for channel in mr:
        brain = channel[channel != 0]
        assert abs(float(brain.mean())) < 1e-3 and abs(float(brain.std()) - 1) < 1e-2
    assert float((mr[0] == 0).float().mean()) > 0.2  # background stays exactly zero


@pytest.mark.parametrize("name", ("acdc", "amos"))
def test_softmax_labels_are_class_indices(phantoms, name):
    s = spec(name)
    label = s.dataset(phantoms[name], "test", cache=False)[0]["label"]
    assert label.dtype == torch.int64 and label.shape[0] == 1
    values = set(label.unique().tolist())
    assert values <= set(range(s.out_channels))
    assert len(values) >= (4 if name == "acdc" else 10)


def reference_label(path, target_spacing):
    """The label through MONAI's geometry only: load, RAS, nearest resampling."""
    keys = ["label"]
    data = {"label": path}
    for transform in (
        LoadImaged(keys),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=None),
        Spacingd(keys, pixdim=target_spacing, mode="nearest"),
    ):
        data = transform(data)
    return data["label"][0].numpy()


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_kits_regions_from_resampled_labels(phantoms, activation):
    s = spec("kits").replace(crop_foreground=False, activation=activation)
    case = s.cases(phantoms["kits"], "val")[0]
    item = s.dataset(phantoms["kits"], "val", cache=False)[0]
    label = reference_label(case["label"], s.target_spacing)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    regions = s.evaluation_target(item["label"].as_tensor()[None])[0].numpy()
    np.testing.assert_array_equal(regions[0], label == 2)  # tumour
    np.testing.assert_array_equal(regions[1], np.isin(label, (2, 3)))  # masses
    np.testing.assert_array_equal(regions[2], np.isin(label, (1, 2, 3)))  # kidney and masses
    assert regions[0].sum() > 0 and (regions[1] > regions[0]).sum() > 0  # tumour and cyst


def test_brats_default_split_is_the_papers_published_lists(tmp_path):
    """The 1251 BraTS 2021 training cases (empty files suffice to list cases): the test split is
    the authors' brats21_test.txt, validation 19:1 of brats21_train_val.txt with seed 12345."""
    train_val, test = published_ids("brats21_train_val.txt"), published_ids("brats21_test.txt")
    assert len(test) == 200 and len(train_val) == 1051 and not set(test) & set(train_val)
    extra = next(
        f"BraTS2021_{n:05d}" for n in range(2000) if f"BraTS2021_{n:05d}" not in {*train_val, *test}
    )
    for name in [*train_val, *test, extra]:
        case = tmp_path / name
        case.mkdir()
        for suffix in ("flair", "t1", "t1ce", "t2", "seg"):
            (case / f"{name}_{suffix}.nii.gz").touch()
    brats = spec("brats")
    assert ids(brats.cases(tmp_path, "test")) == sorted(test)
    _, paper_val = partition_dataset(sorted(train_val), ratios=(19, 1), shuffle=True, seed=12345)
    assert ids(brats.cases(tmp_path, "val")) == sorted(paper_val)
    train = ids(brats.cases(tmp_path, "train"))
    assert len(train) + len(paper_val) == len(train_val) and extra not in train
    shutil.rmtree(tmp_path / test[0])
    with pytest.raises(
        FileNotFoundError, match=r"1 of the 200 cases of the paper's list brats21_test"
    ):
        brats.cases(tmp_path, "test")


def test_kits_known_voxels_map_to_their_regions(phantoms):
    """One stored voxel of each label value, through the region conversion (sigmoid option)."""
    s = spec("kits").replace(
        crop_foreground=False, target_spacing=(0.8, 0.8, 3.0), activation="sigmoid"
    )
    case = s.cases(phantoms["kits"], "val")[0]
    item = s.dataset(phantoms["kits"], "val", cache=False)[0]  # RAS, no resampling
    stored = nib.load(case["label"])
    ras = nib.as_closest_canonical(stored).get_fdata()
    assert item["label"].shape[1:] == ras.shape
    expected = {0: (0, 0, 0), 1: (0, 0, 1), 2: (1, 1, 1), 3: (0, 1, 1)}  # tumor, masses, k&m
    for value, channels in expected.items():
        voxel = tuple(np.argwhere(ras == value)[0])
        assert tuple(int(item["label"][(c, *voxel)]) for c in range(3)) == channels, value


def test_brats_regions_match_monai(phantoms):
    s = spec("brats").replace(activation="sigmoid")
    case = s.cases(phantoms["brats"], "test")[0]
    item = s.dataset(phantoms["brats"], "test", cache=False)[0]
    label = reference_label(case["label"], s.target_spacing)
    assert set(np.unique(label)) == {0, 1, 2, 4}
    tc, wt, et = ConvertToMultiChannelBasedOnBratsClasses()(label[None])
    np.testing.assert_array_equal(item["label"].numpy(), np.stack([et, tc, wt]))
    et_, tc_, wt_ = item["label"].numpy().astype(bool)
    assert (et_ <= tc_).all() and (tc_ <= wt_).all() and et_.sum() < tc_.sum() < wt_.sum()


@pytest.mark.parametrize("name", REAL)
def test_train_batches_are_patches(phantoms, name):
    s = spec(name).replace(patch_size=(24, 24, 8), samples_per_case=2)
    loader = DataLoader(s.dataset(phantoms[name], "train", cache=False), batch_size=2)
    batch = next(iter(loader))
    if s.augmentation == "brats21":  # the paper's BraTS pipeline: one random crop per case
        batch = {k: torch.cat([v, v]) if torch.is_tensor(v) else [*v, *v] for k, v in batch.items()}
    label_channels = 1 if s.activation == "softmax" else s.out_channels
    assert s.activation == "softmax"  # the paper trains every dataset with a softmax
    assert batch["image"].shape == (4, s.in_channels, 24, 24, 8)
    assert batch["label"].shape == (4, label_channels, 24, 24, 8)
    assert batch["image"].dtype == torch.float32
    assert batch["label"].dtype == (torch.int64 if s.activation == "softmax" else torch.float32)
    values = set(range(s.out_channels)) if s.activation == "softmax" else {0, 1}
    assert set(batch["label"].unique().tolist()) <= values
    assert len(batch["id"]) == 4


def test_cached_dataset_matches_uncached(phantoms):
    s = spec("amos")
    cached = s.dataset(phantoms["amos"], "test", cache=True)
    plain = s.dataset(phantoms["amos"], "test", cache=False)
    assert len(cached) == len(plain) == 3
    np.testing.assert_array_equal(cached[1]["image"].numpy(), plain[1]["image"].numpy())


# -- phantom writing -------------------------------------------------------------------


def test_phantom_labels_use_the_datasets_own_values(phantoms):
    expected = {"acdc": {0, 1, 2, 3}, "kits": {0, 1, 2, 3}, "brats": {0, 1, 2, 4}}
    for name, values in expected.items():
        case = spec(name).cases(phantoms[name], "train")[0]
        assert set(np.unique(nib.load(case["label"]).get_fdata()).astype(int)) == values
    amos = spec("amos").cases(phantoms["amos"], "train")[0]
    assert set(np.unique(nib.load(amos["label"]).get_fdata()).astype(int)) >= set(range(14))


def test_phantom_geometry_is_anatomically_ordered(phantoms):
    """ACDC: LV blood pool inside the myocardium; KiTS: tumour on a kidney's surface."""
    acdc = nib.load(spec("acdc").cases(phantoms["acdc"], "train")[0]["label"]).get_fdata()
    base = acdc[..., 0]
    lv = np.argwhere(base == 3).mean(axis=0).round().astype(int)
    ring = [base[lv[0] + d, lv[1]] for d in range(0, 24)]
    assert ring[0] == 3 and 2 in ring  # walking out of the LV crosses the myocardium
    assert (base == 1).sum() > 0  # and an RV beside it
    kits = nib.load(spec("kits").cases(phantoms["kits"], "train")[0]["label"]).get_fdata()
    around = ndimage.binary_dilation(kits == 2) & (kits != 2)
    assert set(np.unique(kits[around]).astype(int)) >= {0, 1}  # exophytic: kidney and outside


def test_phantom_rewrite_and_refusal(tmp_path):
    root = write_phantom("kits", tmp_path / "kits", cases=7)
    assert len(list(root.glob("case_*"))) == 7
    write_phantom("kits", root, cases=5)  # an earlier phantom is replaced
    assert sorted(p.name for p in root.glob("case_*")) == [f"case_{i:05d}" for i in range(5)]
    assert json.loads((root / MARKER).read_text())["cases"] == 5

    user = tmp_path / "user_data"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a calibtut phantom"):
        write_phantom("acdc", user)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="positive integer"):
        write_phantom("acdc", tmp_path / "new", cases=0)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="generated in memory"):
        write_phantom("synthetic", tmp_path / "syn")


@pytest.mark.parametrize("name", ["kits", "brats"])
def test_softmax_labels_are_channel_indices_and_regions_sum_them(phantoms, name):
    """Softmax training sees the label values as channel indices (BraTS 4 -> 3); evaluation
    turns probabilities and labels into the regions: each region's probability is the hand
    sum of its labels' probabilities, its target the union of its labels."""
    s = spec(name)
    item = s.dataset(phantoms[name], "test", cache=False)[0]
    label = item["label"].as_tensor()[None]
    assert set(label.unique().tolist()) <= set(range(4))
    values = s.label_values
    probs = torch.softmax(
        torch.randn((1, 4, *label.shape[2:]), generator=torch.Generator().manual_seed(0)), 1
    )
    regions = s.evaluation_probabilities(probs)
    target = s.evaluation_target(label)
    assert regions.shape == target.shape == (1, 3, *label.shape[2:])
    for r, (region, members) in enumerate(s.regions):
        channels = [values.index(v) for v in members]
        by_hand = sum(probs[:, c] for c in channels)
        torch.testing.assert_close(regions[:, r], by_hand)
        inside = torch.zeros_like(label[:, 0], dtype=torch.bool)
        for c in channels:
            inside |= label[:, 0] == c
        assert torch.equal(target[:, r].bool(), inside), region
    assert (regions <= 1 + 1e-6).all()
    assert [n for _, n in s.scored_classes] == [n for n, _ in s.regions]
    sigmoid = s.replace(activation="sigmoid")
    assert sigmoid.evaluation_probabilities(regions) is regions  # sigmoid outputs are regions
    with pytest.raises(ValueError, match="sigmoid training needs regions"):
        spec("acdc").replace(activation="sigmoid")


def test_brats_trains_with_the_papers_augmentation(phantoms):
    """The authors' brats21.yaml pipeline, in its order: zoom, rotation, noise, blur, contrast,
    flip, a random crop, and the per-channel z-score last (after the noise, as they did)."""
    from monai.transforms import RandGaussianNoised, RandSpatialCropd, RandZoomd

    s = spec("brats").replace(patch_size=(24, 24, 16))
    steps = s.transforms("train").transforms
    kinds = [type(t).__name__ for t in steps]
    assert (
        kinds.index("RandZoomd")
        < kinds.index("RandGaussianNoised")
        < kinds.index("RandSpatialCropd")
    )
    assert kinds.index("RandSpatialCropd") < kinds.index("NormalizeIntensityd")
    assert kinds.count("NormalizeIntensityd") == 1 and "RandAffined" not in kinds
    noise = next(t for t in steps if isinstance(t, RandGaussianNoised))
    assert (noise.rand_gaussian_noise.std, noise.rand_gaussian_noise.prob) == (
        0.1,
        1.0,
    ) or noise.prob == 0.2
    assert next(t for t in steps if isinstance(t, RandZoomd)).prob == 0.3
    assert isinstance(steps[kinds.index("RandSpatialCropd")], RandSpatialCropd)
    item = s.dataset(phantoms["brats"], "train", cache=False)[0]
    image = item["image"].as_tensor()
    assert image.shape == (4, 24, 24, 16)
    inside = image[0] != 0
    assert abs(float(image[0][inside].mean())) < 0.2  # z-scored over the brain, last
    assert "RandAffined" in [type(t).__name__ for t in spec("kits").transforms("train").transforms]
