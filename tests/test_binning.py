"""calibtut.binning against MONAI, against direct float64 loops written here, by hand and by property."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.metrics import calibration_binning
from reference import as_sums, direct_hard_bins, direct_soft_bins

from calibtut import _binning_kernels as kernels
from calibtut.binning import (
    BinStats,
    bin_centres,
    bin_edges,
    check_probabilities,
    hard_bin_index,
    hard_binning,
    soft_binning,
)


def random_inputs(shape, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    target = (torch.rand(shape, generator=gen) < 0.4).float()
    return probs, target


def edge_values(num_bins: int) -> torch.Tensor:
    """0, 1, every k/n, every MONAI edge, and the float32 neighbours (one ulp) of each."""
    grid = torch.tensor([k / num_bins for k in range(num_bins + 1)], dtype=torch.float32)
    points = torch.cat([grid, bin_edges(num_bins)])
    around = torch.cat(
        [
            points,
            torch.nextafter(points, torch.tensor(2.0)),
            torch.nextafter(points, torch.tensor(-1.0)),
        ]
    )
    return around[(around >= 0) & (around <= 1)]


def assert_equal_to_monai(probs, target, num_bins):
    ours = hard_binning(probs, target, num_bins)
    mean_p, mean_t, counts = calibration_binning(probs, target.float(), num_bins)
    assert torch.equal(ours.count.float(), counts)
    ours_p, ours_t = ours.means()
    torch.testing.assert_close(ours_p.float(), mean_p, equal_nan=True, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ours_t.float(), mean_t, equal_nan=True, atol=2e-6, rtol=1e-5)


# --- Hard bins equal MONAI's ---------------------------------------------------------------------


def _edge_case(num_bins):
    values = edge_values(num_bins)
    probs = values.view(1, 1, -1).repeat(2, 3, 1)
    target = (torch.arange(probs.numel()) % 3 == 0).float().view(probs.shape)
    return probs, target


INPUTS = {
    "random": lambda n: random_inputs((2, 3, 11, 7)),
    "edge values": _edge_case,
    "all zero": lambda n: (torch.zeros(2, 2, 5, 5), torch.zeros(2, 2, 5, 5)),
    "all one": lambda n: (torch.ones(2, 2, 5, 5), torch.ones(2, 2, 5, 5)),
    "constant": lambda n: (torch.full((2, 3, 4, 4), 0.37), random_inputs((2, 3, 4, 4))[1]),
    "one voxel": lambda n: (torch.tensor([[[0.3]]]), torch.tensor([[[1.0]]])),
    "one channel": lambda n: random_inputs((3, 1, 9, 9)),
    "batch one": lambda n: random_inputs((1, 4, 6, 6, 3)),
    "empty class and all-background image": lambda n: (
        random_inputs((2, 3, 8, 8))[0],
        torch.stack([torch.zeros(3, 8, 8), torch.cat([torch.ones(1, 8, 8), torch.zeros(2, 8, 8)])]),
    ),
}


@pytest.mark.parametrize("num_bins", [1, 2, 5, 7, 20])
@pytest.mark.parametrize("case", sorted(INPUTS))
def test_hard_binning_equals_monai(case, num_bins):
    assert_equal_to_monai(*INPUTS[case](num_bins), num_bins)


@pytest.mark.parametrize(
    "layout",
    [
        "channels_last",
        "channels_last_3d",
        "transposed",
        "channel_slice",
        "float64",
        "float16",
        "bfloat16",
        "bool target",
    ],
)
def test_hard_binning_equals_monai_for_any_layout_and_dtype(layout):
    probs, target = random_inputs(
        (2, 4, 9, 10, 3) if layout == "channels_last_3d" else (2, 4, 9, 10)
    )
    probs.view(-1)[:40] = edge_values(20)[:40]
    if layout == "channels_last":
        probs, target = (x.contiguous(memory_format=torch.channels_last) for x in (probs, target))
    elif layout == "channels_last_3d":
        probs, target = (
            x.contiguous(memory_format=torch.channels_last_3d) for x in (probs, target)
        )
    elif layout == "transposed":
        probs, target = probs.transpose(2, 3), target.transpose(2, 3)
        assert not probs.is_contiguous()
    elif layout == "channel_slice":
        probs, target = probs[:, 1:], target[:, 1:]
    elif layout == "bool target":
        target = target.bool()
    else:
        probs = probs.to(getattr(torch, layout))
    assert hard_binning(probs, target, 20).count.dtype == (
        torch.float64 if layout == "float64" else torch.float32
    )
    assert_equal_to_monai(probs, target, 20)


def test_hard_bin_index_is_exact_near_every_edge():
    """Every float32 within 3 ulps of an edge or of k/n gets bucketize's bin, for many bin counts."""
    for num_bins in [*range(1, 41), 64, 100, 128, 255, 256, 1000]:
        points = torch.cat(
            [
                bin_edges(num_bins),
                torch.arange(num_bins + 1, dtype=torch.float64).div(num_bins).float(),
            ]
        )
        bits = points.view(torch.int32).unsqueeze(1) + torch.arange(-3, 4, dtype=torch.int32)
        values = bits.view(torch.float32).flatten()
        values = values[(values >= 0) & (values <= 1)]
        expected = torch.bucketize(values, bin_edges(num_bins)[1:], right=False).clamp(
            max=num_bins - 1
        )
        assert torch.equal(hard_bin_index(values, num_bins), expected), num_bins


def test_hard_bin_index_of_invalid_values_matches_monai_clamping():
    values = torch.tensor([-0.5, -0.0, 1.5, float("inf"), float("-inf"), float("nan")])
    assert hard_bin_index(values, 10).tolist() == [0, 0, 9, 9, 0, 0]


# --- Hard and soft bins equal direct loops ----------------------------------------------------


@pytest.mark.parametrize("num_bins", [1, 3, 20])
def test_hard_binning_equals_direct_float64_loop(num_bins):
    probs, target = random_inputs((2, 3, 6, 5), seed=1, dtype=torch.float64)
    edges = edge_values(num_bins)[:30].double()
    probs.view(-1)[: edges.numel()] = edges
    np.testing.assert_allclose(
        as_sums(hard_binning(probs, target, num_bins)),
        direct_hard_bins(probs, target, num_bins),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("num_bins", [1, 2, 3, 20])
def test_soft_binning_equals_direct_per_voxel_loop(num_bins):
    probs, target = random_inputs((2, 3, 5, 4), seed=2, dtype=torch.float64)
    special = torch.cat([bin_centres(num_bins).double(), torch.tensor([0.0, 1.0, 0.001, 0.999])])
    probs.view(-1)[: special.numel()] = special
    expected = direct_soft_bins(probs, target, num_bins)
    np.testing.assert_allclose(as_sums(soft_binning(probs, target, num_bins)), expected, atol=1e-12)
    np.testing.assert_allclose(
        as_sums(soft_binning(probs.float(), target, num_bins)), expected, atol=2e-5
    )


@pytest.mark.parametrize("complex_pairs", [{"cpu"}, set()])
def test_chunked_walk_and_per_image_blocks_give_the_same_bins(monkeypatch, complex_pairs):
    """Tiny chunks (partial last chunk), channels-last (image-by-image blocks) and the real-valued
    scatters used off the CPU change nothing."""
    probs, target = random_inputs((3, 4, 7, 9), seed=3, dtype=torch.float64)
    expected_hard = direct_hard_bins(probs, target, 20)
    expected_soft = direct_soft_bins(probs, target, 20)
    monkeypatch.setitem(kernels._CHUNK_VALUES, "cpu", 50)
    monkeypatch.setattr(kernels, "_COMPLEX_PAIRS", complex_pairs)
    for layout in (torch.contiguous_format, torch.channels_last):
        p, t = probs.contiguous(memory_format=layout), target.contiguous(memory_format=layout)
        np.testing.assert_allclose(as_sums(hard_binning(p, t, 20)), expected_hard, atol=1e-12)
        np.testing.assert_allclose(as_sums(soft_binning(p, t, 20)), expected_soft, atol=1e-12)
        p32, t32 = p.float(), t.float()
        np.testing.assert_allclose(as_sums(hard_binning(p32, t32, 20)), expected_hard, atol=1e-5)
        np.testing.assert_allclose(as_sums(soft_binning(p32, t32, 20)), expected_soft, atol=2e-5)


def test_many_bins_use_a_wider_saved_index():
    probs, target = random_inputs((2, 2, 6, 6), seed=4, dtype=torch.float64)
    for num_bins in (100, 300):
        probs.requires_grad_(True)
        bins = hard_binning(probs, target, num_bins)
        np.testing.assert_allclose(
            as_sums(bins), direct_hard_bins(probs, target, num_bins), atol=1e-12
        )
        weights = torch.randn(bins.pred_sum.shape, dtype=torch.float64)
        (grad,) = torch.autograd.grad((bins.pred_sum * weights).sum(), probs)
        index = hard_bin_index(probs, num_bins).flatten(2)
        expected = weights.gather(2, index).view(probs.shape)
        torch.testing.assert_close(grad, expected)
        soft = soft_binning(probs, target, num_bins)
        np.testing.assert_allclose(
            as_sums(soft), direct_soft_bins(probs, target, num_bins), atol=1e-6
        )


# --- Hand-worked examples ---------------------------------------------------------------------


def test_hand_worked_hard_bins():
    # Two bins split at 0.5: 0.1, 0.2 and 0.5 (an edge belongs to the bin below) in bin 0,
    # 0.6 and 0.9 in bin 1. pred sums 0.8 and 1.5; targets 0+1+0 and 1+1; counts 3 and 2.
    probs = torch.tensor([[[0.1, 0.2, 0.5, 0.6, 0.9]]])
    target = torch.tensor([[[0.0, 1.0, 0.0, 1.0, 1.0]]])
    bins = hard_binning(probs, target, 2)
    torch.testing.assert_close(bins.pred_sum, torch.tensor([[[0.8, 1.5]]]))
    torch.testing.assert_close(bins.target_sum, torch.tensor([[[1.0, 2.0]]]))
    torch.testing.assert_close(bins.count, torch.tensor([[[3.0, 2.0]]]))
    mean_p, mean_t = bins.means()
    torch.testing.assert_close(mean_p, torch.tensor([[[0.8 / 3, 0.75]]]))
    torch.testing.assert_close(mean_t, torch.tensor([[[1 / 3, 1.0]]]))


def test_hand_worked_soft_bins():
    # Two bins, centres 0.25 and 0.75: 0.1 lies below the first centre (all to bin 0), 0.9
    # above the last (all to bin 1), 0.5 halfway (0.5 each) and 0.6 is 0.35/0.5 = 70 % of the
    # way up (0.3 to bin 0, 0.7 to bin 1). Counts: 1 + 0.5 + 0.3 = 1.8 and 0.5 + 0.7 + 1 = 2.2.
    # pred: 0.1 + 0.25 + 0.18 = 0.53 and 0.25 + 0.42 + 0.9 = 1.57; target (0, 1, 1, 0):
    # 0.5 + 0.3 = 0.8 and 0.5 + 0.7 = 1.2.
    probs = torch.tensor([[[0.1, 0.5, 0.6, 0.9]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 1.0, 1.0, 0.0]]], dtype=torch.float64)
    bins = soft_binning(probs, target, 2)
    torch.testing.assert_close(
        bins.count, torch.tensor([[[1.8, 2.2]]], dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        bins.pred_sum, torch.tensor([[[0.53, 1.57]]], dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        bins.target_sum, torch.tensor([[[0.8, 1.2]]], dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_soft_bin_below_empty_weight_is_empty():
    # 0.74 is 98 % of the way from centre 0.25 to 0.75: bin 0 gets weight 0.02. With
    # empty_weight 0.05 bin 0 is empty (NaN means), with 0.01 it is occupied.
    probs = torch.tensor([[[0.74]]], dtype=torch.float64)
    target = torch.ones_like(probs)
    assert not soft_binning(probs, target, 2, empty_weight=0.05).occupied[0, 0, 0]
    bins = soft_binning(probs, target, 2, empty_weight=0.01)
    assert bins.occupied[0, 0].tolist() == [True, True]
    assert math.isnan(soft_binning(probs, target, 2, empty_weight=0.05).means()[0][0, 0, 0])


# --- Gradients ---------------------------------------------------------------------------------


def away_from_edges_and_centres(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Each value moved into the middle half of its half-bin, at least 1/(8 n) from every edge and
    centre: where hard bins are constant and soft shares linear, so finite differences are fair."""
    halves = values * 2 * num_bins
    return (halves.floor().clamp(max=2 * num_bins - 1) + 0.25 + 0.5 * halves.frac()) / (
        2 * num_bins
    )


@pytest.mark.parametrize("num_bins", [1, 4, 20])
def test_gradcheck_float64(num_bins):
    probs, target = random_inputs((2, 3, 4, 3), seed=5, dtype=torch.float64)
    probs = away_from_edges_and_centres(probs, num_bins).requires_grad_(True)

    def hard(x):
        return hard_binning(x, target, num_bins).pred_sum

    def soft(x):
        bins = soft_binning(x, target, num_bins)
        return bins.pred_sum, bins.target_sum, bins.count

    assert torch.autograd.gradcheck(hard, (probs,))
    assert torch.autograd.gradcheck(soft, (probs,))


def test_gradients_through_chunks_and_layouts(monkeypatch):
    probs, target = random_inputs((2, 3, 5, 6), seed=6, dtype=torch.float64)
    probs = away_from_edges_and_centres(probs, 5)
    monkeypatch.setitem(kernels._CHUNK_VALUES, "cpu", 20)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = probs.contiguous(memory_format=layout).requires_grad_(True)
        t = target.contiguous(memory_format=layout)
        assert torch.autograd.gradcheck(lambda v, t=t: hard_binning(v, t, 5).pred_sum, (x,))
        assert torch.autograd.gradcheck(lambda v, t=t: soft_binning(v, t, 5).count, (x,))
    # A channel slice (as with include_background=False) walks image by image.
    x = probs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: hard_binning(v[:, 1:], target[:, 1:], 5).pred_sum, (x,)
    )
    assert torch.autograd.gradcheck(
        lambda v: soft_binning(v[:, 1:], target[:, 1:], 5).pred_sum.sum(-1), (x,)
    )


def test_target_never_receives_gradient_and_counts_are_constants():
    probs, target = random_inputs((2, 2, 4, 4), seed=7)
    probs.requires_grad_(True)
    target.requires_grad_(True)
    hard = hard_binning(probs, target)
    assert not hard.count.requires_grad and not hard.target_sum.requires_grad
    soft = soft_binning(probs, target)
    (
        hard.pred_sum.sum() + soft.pred_sum.sum() + soft.target_sum.sum() + soft.count.sum()
    ).backward()
    assert target.grad is None
    assert probs.grad is not None and torch.isfinite(probs.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    probs, target = random_inputs((2, 3, 16, 16), seed=8)
    half = probs.to(dtype).requires_grad_(True)
    upcast = half.detach().float().requires_grad_(True)
    weights = torch.randn(3, 2, 3, 20)
    for fn in (hard_binning, soft_binning):
        bins, reference = fn(half, target), fn(upcast, target)
        assert bins.pred_sum.dtype == torch.float32
        for name in ("pred_sum", "target_sum", "count"):
            torch.testing.assert_close(getattr(bins, name), getattr(reference, name))
        (grad,) = torch.autograd.grad((bins.pred_sum * weights[0]).sum(), half)
        (expected,) = torch.autograd.grad((reference.pred_sum * weights[0]).sum(), upcast)
        assert grad.dtype == dtype
        torch.testing.assert_close(grad, expected.to(dtype))


def test_unvalidated_invalid_values_still_land_in_valid_bins():
    probs = torch.tensor([[[0.3, float("nan"), 1.5, -0.5]]], requires_grad=True)
    target = torch.ones(1, 1, 4)
    bins = hard_binning(probs, target, 4, validate=False)
    assert bins.count.tolist() == [[[2.0, 1.0, 0.0, 1.0]]]  # NaN and -0.5 in bin 0, 1.5 in bin 3
    assert math.isnan(bins.pred_sum[0, 0, 0]) and bins.pred_sum[0, 0, 3] == 1.5
    soft = soft_binning(probs, target, 4, validate=False)
    torch.testing.assert_close(soft.count.sum(), torch.tensor(4.0))
    bins.pred_sum.nansum().backward()


# --- Properties --------------------------------------------------------------------------------

SPECIAL = [0.0, 1.0, 0.05, 0.5, 0.25, 0.95, 1 / 3, 0.999999, 1e-7]


@st.composite
def probabilities_and_targets(draw, max_voxels=40):
    B, C, N = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, max_voxels))
    values = st.one_of(st.floats(0, 1, width=32), st.sampled_from(SPECIAL))
    probs = draw(arrays(np.float32, (B, C, N), elements=values))
    target = draw(arrays(np.float32, (B, C, N), elements=st.sampled_from([0.0, 1.0])))
    return torch.from_numpy(probs), torch.from_numpy(target)


@settings(max_examples=40, deadline=None)
@given(probabilities_and_targets(), st.sampled_from([1, 3, 10, 20]))
def test_bins_conserve_voxels_predictions_and_targets(inputs, num_bins):
    probs, target = inputs
    N = probs.shape[-1]
    hard = hard_binning(probs, target, num_bins)
    assert torch.equal(hard.count.sum(-1), torch.full(probs.shape[:2], float(N)))
    soft = soft_binning(probs, target, num_bins)
    assert (soft.count >= 0).all()
    for bins in (hard, soft):
        torch.testing.assert_close(bins.count.sum(-1), torch.full(probs.shape[:2], float(N)))
        torch.testing.assert_close(bins.pred_sum.sum(-1), probs.sum(-1), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(bins.target_sum.sum(-1), target.sum(-1), atol=1e-4, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(probabilities_and_targets(), st.randoms(use_true_random=False))
def test_bins_are_invariant_to_voxel_order(inputs, rnd):
    probs, target = inputs
    order = list(range(probs.shape[-1]))
    rnd.shuffle(order)
    hard = hard_binning(probs, target), hard_binning(probs[..., order], target[..., order])
    assert torch.equal(hard[0].count, hard[1].count)
    soft = soft_binning(probs, target), soft_binning(probs[..., order], target[..., order])
    for a, b in (hard, soft):
        for name in ("pred_sum", "target_sum", "count"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(probabilities_and_targets(), st.sampled_from([1, 2, 4, 5, 10]))
def test_rebinned_twenty_bins_equal_hard_binning_at_fewer_bins(inputs, num_bins):
    probs, target = inputs
    # Away from the interior edges k/20, where float32 edges of two bin counts may differ by an ulp.
    grid = torch.arange(1, 20, dtype=torch.float32) / 20
    near = ((probs.unsqueeze(-1) - grid).abs() < 1e-6).any(-1)
    probs = torch.where(near, probs + 1e-5, probs)
    coarse = hard_binning(probs, target, 20).rebinned(num_bins)
    direct = hard_binning(probs, target, num_bins)
    assert torch.equal(coarse.count, direct.count)
    torch.testing.assert_close(coarse.pred_sum, direct.pred_sum)
    torch.testing.assert_close(coarse.target_sum, direct.target_sum)


# --- BinStats ------------------------------------------------------------------------------------


def test_binstats_helpers():
    probs, target = random_inputs((3, 2, 5, 5), seed=9)
    bins = hard_binning(probs, target, 10)
    pooled = bins.pooled()
    assert pooled.count.shape == (1, 2, 10)
    torch.testing.assert_close(pooled.count[0], bins.count.sum(0))
    assert torch.equal(bins.select(1).count, bins.count[1:2])
    joined = BinStats.cat([bins.select(slice(0, 1)), bins.select(slice(1, 3))])
    assert torch.equal(joined.count, bins.count)
    mean_p, _ = bins.means()
    assert (
        torch.isnan(mean_p[~bins.occupied]).all() and not torch.isnan(mean_p[bins.occupied]).any()
    )
    with pytest.raises(ValueError, match="must divide"):
        bins.rebinned(3)
    with pytest.raises(ValueError, match="different empty_weight"):
        BinStats.cat([bins, soft_binning(probs, target, 10)])
    with pytest.raises(ValueError, match="at least one"):
        BinStats.cat([])
    with pytest.raises(ValueError, match="one shape"):
        BinStats(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


# --- Bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "target", "error", "message"),
    [
        (torch.rand(2, 3, 4), torch.rand(2, 3, 5), ValueError, "same shape"),
        (torch.rand(2, 3), torch.rand(2, 3), ValueError, "at least 3 dims"),
        (torch.randint(0, 2, (2, 3, 4)), torch.ones(2, 3, 4), TypeError, "floating-point"),
        (torch.full((1, 1, 3), float("nan")), torch.ones(1, 1, 3), ValueError, "NaN or inf"),
        (torch.tensor([[[0.5, float("inf")]]]), torch.ones(1, 1, 2), ValueError, "NaN or inf"),
        (
            torch.tensor([[[0.5, 1.2]]]),
            torch.ones(1, 1, 2),
            ValueError,
            r"lie in \[0, 1\].*softmax",
        ),
        (torch.tensor([[[-0.1, 0.2]]]), torch.ones(1, 1, 2), ValueError, r"lie in \[0, 1\]"),
        (torch.rand(1, 2, 3), torch.full((1, 2, 3), 2.0), ValueError, "to_onehot_y"),
        (torch.rand(1, 2, 3), torch.full((1, 2, 3), 3), ValueError, "one-hot"),
        (
            torch.rand(1, 2, 3),
            torch.full((1, 2, 3), float("nan")),
            ValueError,
            "target contains NaN",
        ),
        (torch.rand(1, 0, 3), torch.rand(1, 0, 3), ValueError, "empty"),
        (np.zeros((1, 1, 2)), torch.ones(1, 1, 2), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_named(probs, target, error, message):
    for fn in (hard_binning, soft_binning):
        with pytest.raises(error, match=message):
            fn(probs, target)


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_bad_num_bins(num_bins):
    probs, target = random_inputs((1, 1, 4))
    for fn in (
        hard_binning,
        soft_binning,
        lambda p, t, n: hard_bin_index(p, n),
        lambda p, t, n: bin_edges(n),
    ):
        with pytest.raises(ValueError, match="num_bins"):
            fn(probs, target, num_bins)


def test_bad_empty_weight():
    probs, target = random_inputs((1, 1, 4))
    with pytest.raises(ValueError, match="empty_weight"):
        soft_binning(probs, target, 5, empty_weight=-0.1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, True, "0.01"])
def test_empty_weight_must_be_a_finite_non_negative_number(value):
    probs, target = random_inputs((1, 1, 4))
    with pytest.raises(ValueError, match=rf"empty_weight must be a finite number >= 0.*{value!r}"):
        soft_binning(probs, target, 5, empty_weight=value)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4, 4)])
@pytest.mark.parametrize("validate", [True, False])
def test_empty_batch_is_named(shape, validate):
    probs, target = torch.rand(shape), torch.zeros(shape)
    for fn in (hard_binning, soft_binning):
        with pytest.raises(ValueError, match=r"probs is empty \(shape"):
            fn(probs, target, validate=validate)
    with pytest.raises(ValueError, match=r"probs is empty \(shape"):
        check_probabilities(probs, target)


def test_min_max_of_an_empty_tensor_is_refused_before_aminmax():
    from calibtut.binning import _extremes

    with pytest.raises(ValueError, match=r"target is empty \(shape \(2, 0\)\)"):
        _extremes("target", torch.zeros(2, 0))


@pytest.mark.parametrize(
    "num_bins", [np.int64(5), np.int32(5), np.uint16(5), np.array(5), torch.tensor(5)]
)
def test_integer_like_num_bins_are_accepted(num_bins):
    probs, target = random_inputs((2, 2, 6), seed=4)
    for fn in (hard_binning, soft_binning):
        bins = fn(probs, target, num_bins)
        assert bins.num_bins == 5 and type(bins.num_bins) is int
        torch.testing.assert_close(bins.count, fn(probs, target, 5).count)
    assert torch.equal(hard_bin_index(probs, num_bins), hard_bin_index(probs, 5))
    assert torch.equal(bin_edges(num_bins), bin_edges(5))
    assert torch.equal(bin_centres(num_bins), bin_centres(5))
    fine = hard_binning(probs, target, 10)
    torch.testing.assert_close(fine.rebinned(num_bins).count, fine.rebinned(5).count)


@pytest.mark.parametrize("num_bins", [20.0, np.float64(5), np.True_, torch.tensor(True), "5", None])
def test_bool_float_and_other_num_bins_are_refused(num_bins):
    probs, target = random_inputs((1, 1, 4))
    for fn in (
        hard_binning,
        soft_binning,
        lambda p, t, n: hard_bin_index(p, n),
        lambda p, t, n: bin_edges(n),
        lambda p, t, n: hard_binning(p, t, 10).rebinned(n),
    ):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            fn(probs, target, num_bins)
