"""The dataset registry, spec invariants and the synthetic default dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from calibtut.data import DATASETS, generate, spec
from calibtut.data.synthetic import JITTER_CLIP
from calibtut.data.transforms import LabelToRegionsd

# -- registry and specs ----------------------------------------------------------------


def test_registry_knows_the_papers_datasets_and_the_synthetic_ones():
    assert set(DATASETS) == {"acdc", "amos", "kits", "brats", "synthetic", "synthetic3d"}
    for name in DATASETS:
        assert spec(name).name == name


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'kits19'.*acdc.*brats.*synthetic"):
        spec("kits19")


@pytest.mark.parametrize(
    ("name", "in_channels", "class_names", "scored"),
    [
        (
            "acdc",
            1,
            ("background", "right ventricle", "myocardium", "left ventricle"),
            ("right ventricle", "myocardium", "left ventricle"),
        ),
        (
            "kits",
            1,
            ("background", "kidney", "tumor", "cyst"),
            ("tumor", "masses", "kidney and masses"),
        ),
        (
            "brats",
            4,
            ("background", "necrotic tumour core", "peritumoral edema", "enhancing tumour"),
            ("enhancing tumour", "tumour core", "whole tumour"),
        ),
        ("synthetic", 1, ("background", "organ", "ring", "lesion"), ("organ", "ring", "lesion")),
    ],
)
def test_spec_channels_and_classes(name, in_channels, class_names, scored):
    """Every dataset is trained with a softmax over its labels, as in the paper; KiTS and BraTS
    score their overlapping regions, the others their foreground labels."""
    s = spec(name)
    assert s.in_channels == in_channels
    assert s.activation == "softmax"
    assert s.class_names == class_names
    assert s.out_channels == len(class_names)
    assert tuple(name for _, name in s.scored_classes) == scored
    if s.regions:
        regions = s.replace(activation="sigmoid")
        assert regions.class_names == scored and regions.out_channels == 3


def test_amos_has_background_and_fifteen_organs():
    s = spec("amos")
    assert s.out_channels == 16
    assert s.class_names[0] == "background"
    assert s.class_names[15] == "prostate/uterus"
    assert s.label_values == tuple(range(16))


def test_papers_configuration():
    assert spec("acdc").target_spacing == (1.0, 1.0, 5.0)
    assert spec("acdc").patch_size == (256, 256, 16)
    assert spec("amos").patch_size == (176, 176, 64)
    assert spec("amos").val_window == (192, 192, 64)
    assert (spec("amos").intensity.low, spec("amos").intensity.high) == (-100, 200)
    assert (spec("kits").intensity.low, spec("kits").intensity.high) == (-54, 242)
    assert spec("kits").target_spacing == (1.0, 1.0, 1.0)
    assert spec("brats").patch_size == (224, 224, 144)
    assert spec("brats").val_window == (240, 240, 160)
    assert spec("brats").label_values == (0, 1, 2, 4)


def test_summary_is_json_and_names_the_preprocessing():
    for name in DATASETS:
        summary = json.loads(json.dumps(spec(name).summary()))
        assert summary["out_channels"] == spec(name).out_channels
        assert "find_cases" not in summary
    assert "-54..242 HU" in spec("kits").summary()["preprocessing"]
    assert "resample to 1 x 1 x 5 mm" in spec("acdc").preprocessing


def test_replace_overrides_and_validates():
    small = spec("kits").replace(patch_size=(32, 32, 32), target_spacing=(2.0, 2.0, 2.0))
    assert small.patch_size == (32, 32, 32) and small.target_spacing == (2.0, 2.0, 2.0)
    assert spec("kits").patch_size == (128, 128, 128)  # the registered spec is untouched
    with pytest.raises(ValueError, match="patch_size must be 3 positive sizes"):
        spec("kits").replace(patch_size=(32, 32))
    with pytest.raises(ValueError, match="target_spacing"):
        spec("acdc").replace(target_spacing=(1.0, 0.0, 5.0))
    with pytest.raises(ValueError, match="region 'tumor'"):
        spec("kits").replace(regions=(("tumor", (7,)),))


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        spec("synthetic").cases(None, "training")
    with pytest.raises(ValueError, match="split must be one of"):
        spec("synthetic").transforms("validation")


def test_label_to_regions_hand_worked():
    label = torch.tensor([[[0, 1, 2, 3]]])  # (1, 1, 4): one voxel of each KiTS label
    regions = LabelToRegionsd("label", regions=[(1, 2, 3), (2, 3), (2,)])({"label": label})["label"]
    expected = [[[0, 1, 1, 1]], [[0, 0, 1, 1]], [[0, 0, 1, 0]]]
    assert regions.tolist() == [[[bool(v) for v in row] for row in ch] for ch in expected]


# -- synthetic -------------------------------------------------------------------------


def test_same_seed_same_arrays_other_seed_other_arrays():
    s = spec("synthetic").replace(n_train=3, n_val=2, n_test=2)
    a, b = s.generate("train"), s.generate("train")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    other = s.replace(seed=1).generate("train")
    assert not np.array_equal(a.labels, other.labels)
    assert not np.allclose(a.images, other.images)


def test_splits_share_no_image():
    s = spec("synthetic").replace(n_train=4, n_val=4, n_test=4)
    images = {split: s.generate(split).images for split in ("train", "val", "test")}
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        gaps = np.abs(images[first][:, None] - images[second][None]).mean(axis=(2, 3, 4))
        assert gaps.min() > 0.1, f"{first} and {second} share an image"


def test_cases_shapes_dtypes_and_ids():
    cases = spec("synthetic").cases(None, "val")
    assert len(cases) == spec("synthetic").n_val == 12
    assert [c["id"] for c in cases] == [f"synthetic_val_{i:04d}" for i in range(12)]
    assert cases[0]["image"].shape == (1, 384, 384) and cases[0]["image"].dtype == np.float32
    assert cases[0]["label"].shape == (1, 384, 384) and np.issubdtype(
        cases[0]["label"].dtype, np.integer
    )
    with pytest.raises(ValueError, match="generated in memory: pass root=None"):
        spec("synthetic").cases("/data/acdc", "train")


def test_the_default_scans_hold_many_structures_of_very_different_size():
    batch = spec("synthetic").replace(n_test=4).generate("test")
    fractions = [(batch.labels == k).mean() for k in range(4)]
    assert fractions[0] > fractions[1] > fractions[2] > fractions[3] > 0.01
    for true in batch.true_labels[:, 0]:
        organs, count = ndimage.label(true > 0)  # organs, rings and lesions in one scan
        lesions = ndimage.label(true == 3)[1]
        assert count >= 10 and lesions >= 15  # (touching structures count once)


def test_lesion_prob_leaves_some_images_without_a_lesion():
    batch = generate(200, (64, 64), seed=3, lesion_prob=0.8)
    has_lesion = (batch.true_labels == 3).any(axis=(1, 2, 3))
    assert 0.1 < 1 - has_lesion.mean() < 0.3


def test_no_jitter_means_labels_are_the_true_shapes():
    batch = generate(10, (64, 64), seed=5, jitter=0.0, probability=True)
    np.testing.assert_array_equal(batch.labels, batch.true_labels)
    one_hot = np.eye(4)[batch.true_labels[:, 0]].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(batch.probabilities, one_hot)


@pytest.mark.parametrize("speckle", [0.0, 1.0])
def test_annotation_noise_is_real_and_confined_to_boundaries(speckle):
    """Labels disagree with the true shapes often at edges and nowhere far from them, whether
    the displacement is one smooth contour per image (speckle 0) or drawn voxel by voxel (1)."""
    jitter = 1.0
    batch = generate(60, (64, 64), seed=7, jitter=jitter, speckle=speckle)
    true, labels = batch.true_labels[:, 0], batch.labels[:, 0]
    disagree = labels != true
    # Distance of every pixel to the nearest true boundary (between differing classes).
    edges = np.stack([ndimage.morphological_gradient(t, size=3) > 0 for t in true])
    distance = np.stack([ndimage.distance_transform_edt(~e) for e in edges])
    assert 0.02 < disagree.mean() < 0.15
    assert distance[disagree].max() <= JITTER_CLIP * jitter + 1.5
    at_edges = disagree[distance <= 1].mean()
    assert at_edges > 0.15, f"only {at_edges:.2f} of edge pixels are ambiguous"
    # The thin ring is the most ambiguous class: a large share of its pixels disagree.
    assert disagree[true == 2].mean() > 0.2


@pytest.mark.parametrize("speckle", [0.0, 1.0])
def test_the_exact_probabilities_are_calibrated(speckle):
    """Pooled over voxels, the annotation agrees with the exact probabilities bin by bin: they
    are the perfectly calibrated prediction (the labels' only randomness is the rater's)."""
    batch = generate(40, (96, 96), seed=2, jitter=2.0, speckle=speckle, probability=True)
    p = batch.probabilities
    assert p.shape == (40, 4, 96, 96) and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    labels = np.eye(4)[batch.labels[:, 0]].transpose(0, 3, 1, 2)
    edges = np.linspace(0, 1, 11)
    for c in range(1, 4):
        which = np.clip(np.digitize(p[:, c], edges) - 1, 0, 9)
        for k in range(1, 9):  # the ambiguous middle bins
            inside = which == k
            if inside.sum() > 2000:
                gap = abs(p[:, c][inside].mean() - labels[:, c][inside].mean())
                assert gap < 0.03, f"class {c}, bin {k}: gap {gap:.3f}"


def test_the_exact_probabilities_score_at_their_noise_floor():
    """The calibrated prediction's per-image ACE is the ACE noise floor of its probabilities:
    what a perfectly calibrated model is measured at (voxel-independent labels, speckle 1)."""
    from calibtut.metrics import image_results

    s = spec("synthetic").replace(n_test=3)
    batch = s.generate("test", probability=True)
    p = torch.from_numpy(batch.probabilities)[:, 1:]
    y = torch.from_numpy(np.eye(4, dtype=np.float32)[batch.labels[:, 0]]).permute(0, 3, 1, 2)
    results = image_results(
        p, y[:, 1:], 20, floor_draws=32, generator=torch.Generator().manual_seed(0)
    )
    ace, floor = results.errors.ace.mean().item(), results.floor.ace.mean().item()
    assert abs(ace - floor) < 0.2 * floor, (ace, floor)


def test_train_loader_gives_patches_of_every_case():
    s = spec("synthetic").replace(n_train=2, samples_per_case=3)
    from calibtut.train.build import data_loader

    batch = next(iter(data_loader(s.dataset(None, "train"), batch_size=2)))
    assert batch["image"].shape == (6, 1, 128, 128) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (6, 1, 128, 128) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 3}
    assert all(i.startswith("synthetic_train_") for i in batch["id"])


def test_val_pipeline_leaves_the_images_as_generated():
    s = spec("synthetic").replace(n_val=3)
    batch = s.generate("val")
    dataset = s.dataset(None, "val", cache=False)
    for i in range(3):
        np.testing.assert_array_equal(dataset[i]["image"].numpy(), batch.images[i])
        np.testing.assert_array_equal(dataset[i]["label"].numpy(), batch.labels[i])


def test_synthetic3d_smoke_shapes():
    s = spec("synthetic3d")
    assert s.spatial_dims == 3
    item = s.dataset(None, "train", cache=False)[0]
    item = item[0] if isinstance(item, list) else item
    assert item["image"].shape == (1, 32, 32, 32)
    assert item["label"].shape == (1, 32, 32, 32)
    assert set(item["label"].unique().tolist()) <= {0, 1, 2, 3}
