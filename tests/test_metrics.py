"""calibtut.metrics: ECE/ACE/MCE against MONAI and a direct float64 loop, by hand; Dice; dataset
reliability histograms; micro (pooled) errors; the cumulative metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric, DiceMetric
from monai.networks import one_hot
from reference import direct_errors, direct_floor, direct_hard_bins, direct_histogram

from calibtut.binning import BinStats, hard_binning
from calibtut.metrics import (
    CumulativeCalibration,
    ImageResults,
    calibration_error,
    calibration_errors,
    confidence_direction,
    dataset_reliability,
    dataset_reliability_histogram,
    dice,
    discretize,
    draw_floor_labels,
    image_results,
    macro_average,
    macro_errors,
    micro_errors,
    noise_floor,
    reliability,
)

REDUCTIONS = {"expected": "ece", "average": "ace", "maximum": "mce"}


def inputs(shape, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.randn(shape, generator=gen, dtype=torch.float64).mul(3).softmax(1)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    return probs.to(dtype), one_hot(labels, shape[1]).to(dtype)


def monai_error(probs, target, reduction, include_background=True, num_bins=20):
    metric = CalibrationErrorMetric(
        num_bins=num_bins,
        include_background=include_background,
        calibration_reduction=reduction,
        metric_reduction="none",
    )
    metric(probs, target)
    return metric.aggregate()


def _edge_valued():
    probs, target = inputs((2, 3, 6, 6), seed=1)
    edges = torch.tensor([0.0, 1.0, 0.05, 0.5, 0.95, 0.25])
    probs.view(-1)[:36] = (
        torch.cat(
            [
                edges,
                torch.nextafter(edges, torch.tensor(2.0)),
                torch.nextafter(edges, torch.tensor(-1.0)),
            ]
        )
        .repeat(2)
        .clamp(0.0, 1.0)
    )
    return probs, target


def _empty_class():
    probs, target = inputs((2, 3, 6, 6), seed=2)
    target = torch.zeros_like(target)
    target[:, 0] = 1  # classes 1 and 2 absent; image is all background
    return probs, target


CASES = {
    "random": lambda: inputs((2, 3, 7, 6)),
    "edge values": _edge_valued,
    "empty class and all-background images": _empty_class,
    "all zero": lambda: (torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4)),
    "all one": lambda: (torch.ones(2, 2, 4, 4), torch.ones(2, 2, 4, 4)),
    "one voxel": lambda: (torch.tensor([[[0.7]], [[0.2]]]), torch.tensor([[[1.0]], [[1.0]]])),
    "one channel, batch one": lambda: inputs((1, 1, 5, 5, 5)),
    "channels last": lambda: tuple(
        x.contiguous(memory_format=torch.channels_last_3d) for x in inputs((2, 3, 4, 5, 6))
    ),
    "transposed": lambda: tuple(x.transpose(2, 3) for x in inputs((2, 3, 4, 5))),
    "float64": lambda: inputs((2, 3, 5, 5), dtype=torch.float64),
    "float16": lambda: (inputs((2, 3, 5, 5))[0].half(), inputs((2, 3, 5, 5))[1]),
    "bfloat16": lambda: (inputs((2, 3, 5, 5))[0].bfloat16(), inputs((2, 3, 5, 5))[1]),
    "constant": lambda: (torch.full((2, 3, 4, 4), 0.45), inputs((2, 3, 4, 4))[1]),
}


# --- ECE / ACE / MCE -----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_calibration_error_equals_monai(case, reduction):
    probs, target = CASES[case]()
    ours = calibration_error(probs, target, reduction=reduction)
    torch.testing.assert_close(
        ours.float(), monai_error(probs, target, reduction), equal_nan=True, atol=2e-6, rtol=1e-5
    )
    if probs.shape[1] > 1:
        without = calibration_error(probs, target, reduction=reduction, include_background=False)
        torch.testing.assert_close(
            without.float(),
            monai_error(probs, target, reduction, include_background=False),
            equal_nan=True,
            atol=2e-6,
            rtol=1e-5,
        )


@pytest.mark.parametrize("num_bins", [1, 4, 20])
def test_calibration_errors_equal_direct_float64_loop(num_bins):
    probs, target = inputs((3, 4, 6, 5), seed=3, dtype=torch.float64)
    errors = calibration_errors(hard_binning(probs, target, num_bins))
    expected = direct_errors(direct_hard_bins(probs, target, num_bins))
    for name in ("ece", "ace", "mce"):
        np.testing.assert_allclose(
            getattr(errors, name).numpy(), expected[name], rtol=1e-12, atol=1e-12
        )


def test_hand_worked_errors():
    # Two bins split at 0.5. Bin 0: 0.1, 0.2, 0.3 with targets 0, 0, 1: |0.2 - 1/3| = 2/15.
    # Bin 1: 0.8 with target 1: 0.2. ECE = (3 * 2/15 + 1 * 0.2) / 4 = 0.15;
    # ACE = (2/15 + 0.2) / 2 = 1/6; MCE = 0.2.
    probs = torch.tensor([[[0.1, 0.2, 0.3, 0.8]]])
    target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    for reduction, value in (("expected", 0.15), ("average", 1 / 6), ("maximum", 0.2)):
        torch.testing.assert_close(
            calibration_error(probs, target, num_bins=2, reduction=reduction),
            torch.tensor([[value]]),
        )


def test_errors_are_nan_without_occupied_bins():
    empty = BinStats(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))
    errors = calibration_errors(empty)
    for name in ("ece", "ace", "mce"):
        assert torch.isnan(getattr(errors, name)).all()


def test_macro_and_micro_errors():
    probs, target = inputs((3, 2, 6, 6), seed=4, dtype=torch.float64)
    bins = hard_binning(probs, target, 20)
    per_image = calibration_errors(bins)
    with_nan = per_image.ece.clone()
    with_nan[0, 1] = float("nan")
    torch.testing.assert_close(
        macro_average(with_nan), torch.stack([with_nan[:, 0].mean(), with_nan[1:, 1].mean()])
    )
    # Micro = the errors of one binning of all images' voxels of a class together.
    pooled_probs = probs.movedim(0, 1).reshape(1, 2, -1)
    pooled_target = target.movedim(0, 1).reshape(1, 2, -1)
    micro = micro_errors(bins)
    direct = direct_errors(direct_hard_bins(pooled_probs, pooled_target, 20))
    for name in ("ece", "ace", "mce"):
        np.testing.assert_allclose(getattr(micro, name).numpy(), direct[name], rtol=1e-12)


# --- Dice ------------------------------------------------------------------------------------------


def test_dice_equals_monai_dice_metric_and_a_direct_count():
    probs, target = inputs((3, 3, 8, 8), seed=5)
    target[2, 1] = 0  # absent class: NaN
    target[2, 0] = 1 - target[2, 2]
    ours = dice(probs, target)
    monai = DiceMetric(include_background=True, reduction="none")(discretize(probs), target)
    torch.testing.assert_close(ours, monai, equal_nan=True)
    predicted = probs.argmax(1)
    for b in range(3):
        for c in range(3):
            a, g = predicted[b] == c, target[b, c] > 0
            expected = 2 * (a & g).sum() / (a.sum() + g.sum()) if g.any() else float("nan")
            assert ours[b, c].item() == pytest.approx(float(expected), nan_ok=True)


def test_multilabel_discretisation_thresholds_each_channel():
    probs = torch.tensor([[[0.7, 0.4], [0.5, 0.1]]]).unsqueeze(-1)  # (1, 2, 2, 1): overlap allowed
    assert discretize(probs, multilabel=True).squeeze(-1).tolist() == [[[1.0, 0.0], [1.0, 0.0]]]
    assert discretize(probs).squeeze(-1).tolist() == [[[1.0, 1.0], [0.0, 0.0]]]


# --- Dataset reliability histogram -------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [2, 5, 20])
def test_dataset_reliability_histogram_equals_direct_loop(num_bins):
    probs, target = inputs((4, 3, 6, 6), seed=6)
    bins = hard_binning(probs, target, num_bins)
    hist = dataset_reliability_histogram(bins)
    np.testing.assert_array_equal(
        hist.numpy(), direct_histogram(direct_hard_bins(probs, target, num_bins))
    )
    assert hist.sum() == bins.occupied.sum()
    halves = dataset_reliability_histogram(
        bins.select(slice(0, 2))
    ) + dataset_reliability_histogram(bins.select(slice(2, 4)))
    assert torch.equal(halves, hist)


def test_hand_worked_histogram():
    # One image, one class, two bins: bin 0 holds 0.1 and 0.2 with targets 0, 1 (mean GT 0.5,
    # which is on the edge and so in GT bin 0); bin 1 holds 0.9 with target 1 (GT bin 1).
    probs = torch.tensor([[[0.1, 0.2, 0.9]]])
    target = torch.tensor([[[0.0, 1.0, 1.0]]])
    hist = dataset_reliability_histogram(hard_binning(probs, target, 2))
    assert hist.tolist() == [[[1, 0], [0, 1]]]


# --- Per-image results and the cumulative metric -------------------------------------------------


@pytest.mark.parametrize("include_background", [True, False])
def test_cumulative_calibration_equals_one_computation_on_all_batches(include_background):
    batches = [inputs((b, 3, 6, 5), seed=10 + b) for b in (2, 1, 3)]
    metric = CumulativeCalibration(num_bins=10, include_background=include_background)
    for probs, target in batches:
        metric(probs, target)
    result = metric.aggregate()
    probs = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    if not include_background:
        probs, target = probs[:, 1:], target[:, 1:]
    sums = direct_hard_bins(probs, target, 10)
    per_image = direct_errors(sums)
    pooled = direct_errors(sums.sum(1, keepdims=True))
    for name in ("ece", "ace", "mce"):
        np.testing.assert_allclose(
            getattr(result["per_image"], name).numpy(), per_image[name], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            result[f"macro_{name}"].numpy(), np.nanmean(per_image[name], 0), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            result[f"micro_{name}"].numpy(), pooled[name][0], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_array_equal(result["histogram"].numpy(), direct_histogram(sums))
    # MONAI's decollated (list) input gives the same, and reset empties it.
    metric.reset()
    for p, t in batches:
        metric(list(p), list(t))
    assert torch.equal(metric.bins().count, torch.from_numpy(sums[2]).float())
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()


# --- Bad input ----------------------------------------------------------------------------------


def test_bad_metric_input_is_named():
    probs, target = inputs((1, 2, 4, 4))
    with pytest.raises(ValueError, match="reduction must be one of"):
        calibration_error(probs, target, reduction="median")
    with pytest.raises(ValueError, match="at least 2 channels"):
        calibration_error(probs[:, :1], target[:, :1], include_background=False)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        calibration_error(probs * 2, target)
    with pytest.raises(ValueError, match="same shape"):
        CumulativeCalibration()(probs, target[:, :1])
    with pytest.raises(ValueError, match="num_bins"):
        calibration_error(probs, target, num_bins=0)


def test_image_results_without_background_keeps_argmax_over_all_channels():
    """Dropping the background must not hand its voxels to the foreground classes."""
    # Two voxels: the first is background (0.6) vs class 1 (0.3); the second is class 2.
    probs = torch.tensor([[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]]).view(1, 3, 2, 1)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(1, 3, 2, 1)
    full = image_results(probs, target, num_bins=10)
    fg = image_results(probs, target, num_bins=10, include_background=False)
    # Class 1 is absent from the ground truth and predicted nowhere: Dice NaN (MONAI's ignore_empty),
    # not 0 as an argmax over the foreground channels alone would give (it would predict class 1 at
    # voxel 0). Class 2: predicted and true at voxel 1 only -> Dice 1.
    assert torch.isnan(fg.dice[0, 0]) and fg.dice[0, 1] == 1.0
    torch.testing.assert_close(fg.dice, full.dice[:, 1:], equal_nan=True)
    torch.testing.assert_close(fg.errors.ace, full.errors.ace[:, 1:])
    torch.testing.assert_close(fg.bins.count, full.bins.count[:, 1:])
    assert fg.empty.tolist() == [[True, False]]


# --- Prepared figure data: reliability, dataset histograms, directions --------------------------


def test_mce_bin_and_reliability_equal_the_direct_reference():
    probs, target = inputs((3, 3, 9, 7), seed=11)
    bins = hard_binning(probs, target, 10)
    direct = direct_errors(direct_hard_bins(probs, target, 10))
    prepared = reliability(bins)
    np.testing.assert_array_equal(prepared.errors.mce_bin.numpy(), direct["mce_bin"])
    for name in ("ece", "ace", "mce"):
        np.testing.assert_allclose(getattr(prepared.errors, name).double(), direct[name], rtol=1e-5)
    gap = prepared.gap.double().numpy()
    k = prepared.errors.mce_bin.numpy()
    chosen = np.take_along_axis(gap, k[..., None], -1)[..., 0]
    np.testing.assert_allclose(chosen, direct["mce"], rtol=1e-5)  # the framed bin is the MCE's
    assert np.isnan(gap[~prepared.occupied.numpy()]).all()


def test_empty_class_has_no_mce_bin():
    probs = torch.full((1, 1, 4), 0.5)
    bins = BinStats(torch.zeros(1, 1, 5), torch.zeros(1, 1, 5), torch.zeros(1, 1, 5))
    errors = calibration_errors(bins)
    assert errors.mce_bin.item() == -1 and math.isnan(errors.mce.item())
    assert calibration_errors(hard_binning(probs, torch.zeros_like(probs), 5)).mce_bin.item() == 2


def test_macro_errors_average_images_per_class():
    probs, target = inputs((4, 3, 6, 6), seed=12)
    bins = hard_binning(probs, target, 20)
    direct = direct_errors(direct_hard_bins(probs, target, 20))
    macro = macro_errors(bins)
    for name in ("ece", "ace", "mce"):
        np.testing.assert_allclose(
            getattr(macro, name).double(), np.nanmean(direct[name], 0), rtol=1e-5
        )


def test_dataset_reliability_pools_counts_and_averages_classes():
    probs, target = inputs((4, 3, 6, 6), seed=13)
    bins = hard_binning(probs, target, 10)
    prepared = dataset_reliability(bins)
    sums = direct_hard_bins(probs, target, 10)
    np.testing.assert_array_equal(prepared.histogram.numpy(), direct_histogram(sums))
    np.testing.assert_array_equal(prepared.pooled_count.numpy(), sums[2].sum(0))
    np.testing.assert_allclose(prepared.average.numpy(), direct_histogram(sums).mean(0))
    np.testing.assert_allclose(prepared.average_pooled_count.numpy(), sums[2].sum(0).mean(0))


def test_confidence_direction_sorts_a_hand_made_histogram():
    """4 bins: upper half is confidence bins 2, 3. Counts placed by hand."""
    histogram = torch.zeros(2, 4, 4)
    histogram[0, 0, 3] = 3  # said 0.9, truth 0.1: overconfident
    histogram[0, 3, 0] = 1  # said 0.1, truth 0.9: overconfident (sure of absence)
    histogram[0, 2, 2] = 4  # on the diagonal
    histogram[0, 2, 3] = 2  # said 0.9, truth 0.6: overconfident
    histogram[0, 1, 0] = 2  # said 0.1, truth 0.4: overconfident
    histogram[0, 3, 2] = 3  # said 0.6, truth 0.9: underconfident
    histogram[0, 0, 1] = 5  # said 0.4, truth 0.1: underconfident
    direction = confidence_direction(histogram)
    assert direction.overconfident[0].item() == pytest.approx(8 / 20)
    assert direction.calibrated[0].item() == pytest.approx(4 / 20)
    assert direction.underconfident[0].item() == pytest.approx(8 / 20)
    assert math.isnan(direction.overconfident[1].item())  # no counts at all


# --- The noise floor ---------------------------------------------------------------------------


def test_noise_floor_equals_a_direct_monte_carlo():
    probs, _ = inputs((2, 3, 8, 8), seed=14)
    bins = hard_binning(probs, torch.zeros_like(probs), 20)
    g = torch.Generator().manual_seed(3)
    floor = noise_floor(bins, draw_floor_labels(probs, 20, draws=400, generator=g))
    direct = direct_floor(probs, 20, draws=400, seed=5)
    for name in ("ace", "mce"):
        ours, theirs = getattr(floor, name).double().numpy(), direct[name]
        se = np.hypot(getattr(floor, f"{name}_se").double().numpy(), direct[f"{name}_se"])
        assert (np.abs(ours - theirs) < 4.5 * se).all(), (name, ours, theirs, se)
        assert (ours > 0).all()


def test_noise_floor_hand_worked_cases():
    """One voxel at 0.3: E|y - 0.3| = 0.42. Two voxels at 0.5 in one bin: |S/2 - 0.5| is 0.5, 0,
    0.5 with probabilities 1/4, 1/2, 1/4, so 0.25. Probabilities of exactly 0 and 1: no noise."""
    g = torch.Generator().manual_seed(0)
    cases = {
        0.42: torch.tensor([[[0.3]]]),
        0.25: torch.tensor([[[0.5, 0.5]]]),
        0.0: torch.tensor([[[0.0, 1.0, 1.0]]]),
    }
    for expected, probs in cases.items():
        bins = hard_binning(probs, torch.zeros_like(probs), 20)
        floor = noise_floor(bins, draw_floor_labels(probs, 20, draws=20000, generator=g))
        assert floor.ace.item() == pytest.approx(expected, abs=4 * floor.ace_se.item() + 1e-12)
        assert floor.mce.item() >= floor.ace.item() - 1e-12


def test_floor_draws_rebin_and_pool_like_the_bins():
    probs, _ = inputs((3, 2, 6, 6), seed=15)
    draws = draw_floor_labels(probs, 20, draws=5, generator=torch.Generator().manual_seed(0))
    assert draws.target_sums.shape == (3, 2, 5, 20) and draws.num_draws == 5
    counts = hard_binning(probs, torch.zeros_like(probs), 20).count
    assert (draws.target_sums <= counts.unsqueeze(2)).all()  # a bin's draw never exceeds its voxels
    torch.testing.assert_close(
        draws.rebinned(4).target_sums, draws.target_sums.view(3, 2, 5, 4, 5).sum(-1)
    )
    torch.testing.assert_close(draws.pooled().target_sums, draws.target_sums.sum(0, keepdim=True))
    with pytest.raises(ValueError, match="must divide the stored 20 bins"):
        draws.rebinned(3)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        draw_floor_labels(probs, 20, draws=0)
    bins = hard_binning(probs, torch.zeros_like(probs), 10)
    with pytest.raises(ValueError, match="do not fit bins"):
        noise_floor(bins, draws)


def test_image_results_with_floor_and_their_concatenation():
    probs, target = inputs((2, 3, 6, 6), seed=16)
    g = torch.Generator().manual_seed(1)
    whole = image_results(probs, target, 20, include_background=False, floor_draws=6, generator=g)
    assert whole.floor.ace.shape == (2, 2) and whole.draws.target_sums.shape == (2, 2, 6, 20)
    parts = [
        image_results(probs[i : i + 1], target[i : i + 1], 20, floor_draws=3, generator=g)
        for i in range(2)
    ]
    joined = ImageResults.cat(parts, device="cpu")
    assert joined.bins.count.shape == (2, 3, 20) and joined.floor.mce.shape == (2, 3)
    torch.testing.assert_close(joined.errors.ace, image_results(probs, target, 20).errors.ace)
    assert ImageResults.cat([image_results(probs, target, 20)]).floor is None


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)])
def test_empty_batch_is_named_by_the_metrics(shape):
    probs, target = torch.rand(shape), torch.zeros(shape)
    for include_background in (True, False):
        for reduction in ("expected", "average", "maximum"):
            with pytest.raises(ValueError, match=r"probs is empty \(shape"):
                calibration_error(probs, target, 20, reduction, include_background)
        with pytest.raises(ValueError, match=r"probs is empty \(shape"):
            image_results(probs, target, include_background=include_background)
    with pytest.raises(ValueError, match=r"probs is empty \(shape"):
        CumulativeCalibration()(probs, target)


@pytest.mark.parametrize("num_bins", [np.int64(10), np.int32(10), torch.tensor(10)])
def test_integer_like_num_bins_are_accepted_by_the_metrics(num_bins):
    probs, target = inputs((2, 3, 6, 6), seed=8)
    for reduction in ("expected", "average", "maximum"):
        torch.testing.assert_close(
            calibration_error(probs, target, num_bins, reduction),
            calibration_error(probs, target, 10, reduction),
        )
    results = image_results(probs, target, num_bins, floor_draws=2)
    assert results.bins.num_bins == 10 and results.draws.target_sums.shape[-1] == 10
    metric = CumulativeCalibration(num_bins=num_bins)
    assert type(metric.num_bins) is int
    metric(probs, target)
    assert metric.bins().num_bins == 10
    draws = draw_floor_labels(probs, 20, draws=2)
    assert draws.rebinned(num_bins).target_sums.shape[-1] == 10


@pytest.mark.parametrize("num_bins", [True, np.True_, 10.0, np.float64(10), 0, -1, "10"])
def test_bool_float_and_small_num_bins_are_refused_by_the_metrics(num_bins):
    probs, target = inputs((1, 2, 4, 4))
    draws = draw_floor_labels(probs, 20, draws=2)
    for make in (
        lambda: calibration_error(probs, target, num_bins),
        lambda: image_results(probs, target, num_bins),
        lambda: CumulativeCalibration(num_bins=num_bins),  # at construction, not at first call
        lambda: draw_floor_labels(probs, num_bins),
        lambda: draws.rebinned(num_bins),
    ):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            make()
