"""calibtut.metrics: ECE/ACE/MCE against MONAI and a direct float64 loop, by hand; Dice; dataset
reliability histograms; micro (pooled) errors; the cumulative metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric, DiceMetric
from monai.networks import one_hot

from calibtut.binning import BinStats, hard_binning
from calibtut.metrics import (
    CumulativeCalibration,
    calibration_error,
    calibration_errors,
    dataset_reliability_histogram,
    dice,
    discretize,
    image_results,
    macro_average,
    micro_errors,
)

EPS32 = float(torch.finfo(torch.float32).eps)
REDUCTIONS = {"expected": "ece", "average": "ace", "maximum": "mce"}


# --- The direct reference ------------------------------------------------------------------------


def direct_bins(probs: torch.Tensor, target: torch.Tensor, num_bins: int) -> np.ndarray:
    """(3, B, C, n) float64 sums of prediction, target and count; MONAI's bin for each float32 value."""
    upper = torch.linspace(0.0, 1.0 + EPS32, num_bins + 1).double().numpy()[1:]
    p32 = probs.float().double().flatten(2).numpy()
    p, t = probs.double().flatten(2).numpy(), target.double().flatten(2).numpy()
    B, C, _ = p.shape
    out = np.zeros((3, B, C, num_bins))
    for b in range(B):
        for c in range(C):
            bins = np.minimum(np.searchsorted(upper, p32[b, c]), num_bins - 1)
            np.add.at(out[0, b, c], bins, p[b, c])
            np.add.at(out[1, b, c], bins, t[b, c])
            np.add.at(out[2, b, c], bins, 1.0)
    return out


def direct_errors(sums: np.ndarray) -> dict[str, np.ndarray]:
    """ECE (count-weighted gap), ACE (mean gap over occupied bins), MCE (largest gap), per (b, c)."""
    _, B, C, _ = sums.shape
    out = {name: np.full((B, C), np.nan) for name in ("ece", "ace", "mce")}
    for b in range(B):
        for c in range(C):
            pred, tgt, count = sums[:, b, c]
            occupied = count > 0
            if not occupied.any():
                continue
            gaps = np.abs(pred[occupied] - tgt[occupied]) / count[occupied]
            out["ece"][b, c] = (gaps * count[occupied]).sum() / count.sum()
            out["ace"][b, c] = gaps.mean()
            out["mce"][b, c] = gaps.max()
    return out


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
    expected = direct_errors(direct_bins(probs, target, num_bins))
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
    direct = direct_errors(direct_bins(pooled_probs, pooled_target, 20))
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


def direct_histogram(sums: np.ndarray) -> np.ndarray:
    """For every image, class and occupied confidence bin k: one count at (bin of its mean GT, k)."""
    upper = torch.linspace(0.0, 1.0 + EPS32, sums.shape[-1] + 1).double().numpy()[1:]
    _, B, C, n = sums.shape
    hist = np.zeros((C, n, n), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for k in range(n):
                if sums[2, b, c, k] > 0:
                    mean_gt = np.float32(sums[1, b, c, k] / sums[2, b, c, k])
                    hist[c, min(int(np.searchsorted(upper, mean_gt)), n - 1), k] += 1
    return hist


@pytest.mark.parametrize("num_bins", [2, 5, 20])
def test_dataset_reliability_histogram_equals_direct_loop(num_bins):
    probs, target = inputs((4, 3, 6, 6), seed=6)
    bins = hard_binning(probs, target, num_bins)
    hist = dataset_reliability_histogram(bins)
    np.testing.assert_array_equal(
        hist.numpy(), direct_histogram(direct_bins(probs, target, num_bins))
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


def test_image_results_rows():
    probs, target = inputs((2, 3, 5, 5), seed=7)
    target[1, 2] = 0
    target[1, 0] = 1 - target[1, 1]
    results = image_results(probs, target, num_bins=10)
    rows = results.rows(["a", "b"], ["bg", "x", "y"])
    assert [(r["image_id"], r["class_name"]) for r in rows][:4] == [
        ("a", "bg"),
        ("a", "x"),
        ("a", "y"),
        ("b", "bg"),
    ]
    row = rows[5]
    assert row["empty"] is True and math.isnan(row["dice"])
    assert row["ece"] == pytest.approx(calibration_error(probs, target, 10)[1, 2].item())
    assert row["ace"] == pytest.approx(calibration_error(probs, target, 10, "average")[1, 2].item())
    assert not rows[0]["empty"] and rows[0]["dice"] == pytest.approx(
        dice(probs, target)[0, 0].item()
    )
    with pytest.raises(ValueError, match="Need 2 image ids and 3 class names"):
        results.rows(["a"], ["bg", "x", "y"])


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
    sums = direct_bins(probs, target, 10)
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
