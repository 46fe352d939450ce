"""The mL1-ACE losses and ACEDiceCELoss: against a direct float64 loop, by hand, against MONAI's
Dice+CE, by gradcheck and by property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks import one_hot
from reference import direct_l1_ace

from calibtut.binning import BinStats, bin_edges
from calibtut.losses import ACEDiceCELoss, HardL1ACELoss, SoftL1ACELoss, l1_ace


def random_inputs(shape, seed=0, dtype=torch.float32, classes_present=True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64).mul(2)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    target = one_hot(labels, num_classes=shape[1]).double()
    return logits.to(dtype), target.to(dtype)


def none_loss(loss_cls, **kwargs):
    return loss_cls(reduction="none", **kwargs)


LOSSES = {"hard": HardL1ACELoss, "soft": SoftL1ACELoss}


# --- Values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("num_bins", [1, 5, 20])
@pytest.mark.parametrize("ignore_empty", [True, False])
def test_loss_equals_direct_float64_loop(kind, num_bins, ignore_empty):
    logits, target = random_inputs((2, 3, 7, 6), seed=num_bins, dtype=torch.float64)
    target[1, 2] = 0  # class 2 absent from image 1
    target[1, 0] += target[1, 2]
    probs = logits.softmax(1)
    probs.view(-1)[:5] = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.05], dtype=torch.float64)
    loss = LOSSES[kind](num_bins=num_bins, reduction="none", ignore_empty_classes=ignore_empty)
    expected = direct_l1_ace(
        probs, target, num_bins, soft=kind == "soft", ignore_empty=ignore_empty
    )
    torch.testing.assert_close(loss(probs, target)[..., 0, 0], expected, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(
        loss(probs.float(), target.float())[..., 0, 0].double(), expected, atol=2e-6, rtol=1e-5
    )


def test_hand_worked_hard_loss():
    # Two bins split at 0.5. Bin 0: 0.1, 0.2, 0.3 with targets 0, 0, 1: mean 0.2 vs 1/3, gap 2/15.
    # Bin 1: 0.8 with target 1: gap 0.2. mL1-ACE = (2/15 + 0.2) / 2 = 1/6.
    probs = torch.tensor([[[0.1, 0.2, 0.3, 0.8]]])
    target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    torch.testing.assert_close(HardL1ACELoss(num_bins=2)(probs, target), torch.tensor(1 / 6))
    # With 20 bins every value is alone in its bin: gaps 0.1, 0.2, 0.7, 0.2, mean 0.3.
    torch.testing.assert_close(HardL1ACELoss()(probs, target), torch.tensor(0.3))


def test_hand_worked_soft_loss():
    # Two bins, centres 0.25 and 0.75: 0.1 all to bin 0, 0.5 half to each, 0.9 all to bin 1.
    # Targets 0, 1, 1. Bin 0: weight 1.5, pred 0.1 + 0.25 = 0.35, target 0.5: gap |0.35-0.5|/1.5 = 0.1.
    # Bin 1: weight 1.5, pred 0.25 + 0.9 = 1.15, target 0.5 + 1 = 1.5: gap 0.35/1.5 = 7/30.
    # mL1-ACE = (0.1 + 7/30) / 2 = 1/6.
    probs = torch.tensor([[[0.1, 0.5, 0.9]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 1.0, 1.0]]], dtype=torch.float64)
    loss = SoftL1ACELoss(num_bins=2)(probs, target)
    torch.testing.assert_close(loss, torch.tensor(1 / 6, dtype=torch.float64), atol=1e-6, rtol=0)


def test_l1_ace_skips_empty_bins_and_is_zero_without_any():
    bins = BinStats(
        pred_sum=torch.tensor([[[0.6, 0.0, 2.7], [0.0, 0.0, 0.0]]]),
        target_sum=torch.tensor([[[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]]]),
        count=torch.tensor([[[2.0, 0.0, 3.0], [0.0, 0.0, 0.0]]]),
    )
    # Class 0: bins 0 and 2 occupied, gaps |0.3 - 0.5| = 0.2 and |0.9 - 1| = 0.1: mean 0.15.
    torch.testing.assert_close(l1_ace(bins), torch.tensor([[0.15, 0.0]]))


# --- Arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_reductions_and_shapes(kind):
    logits, target = random_inputs((2, 3, 5, 4, 3), seed=1)
    probs = logits.softmax(1)
    none = LOSSES[kind](reduction="none")(probs, target)
    assert none.shape == (2, 3, 1, 1, 1)
    torch.testing.assert_close(LOSSES[kind](reduction="mean")(probs, target), none.mean())
    torch.testing.assert_close(LOSSES[kind](reduction="sum")(probs, target), none.sum())
    assert LOSSES[kind]()(probs, target).shape == ()


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_activations_one_hot_background_and_weights(kind):
    Loss = LOSSES[kind]
    logits, target = random_inputs((2, 3, 6, 6), seed=2)
    labels = target.argmax(1, keepdim=True).float()
    probs = logits.softmax(1)
    plain = none_loss(Loss)(probs, target)
    torch.testing.assert_close(none_loss(Loss, softmax=True)(logits, target), plain)
    torch.testing.assert_close(
        none_loss(Loss, softmax=True, to_onehot_y=True)(logits, labels), plain
    )
    torch.testing.assert_close(
        none_loss(Loss, other_act=lambda x: x.softmax(1))(logits, target), plain
    )
    torch.testing.assert_close(
        none_loss(Loss, sigmoid=True)(logits, target), none_loss(Loss)(logits.sigmoid(), target)
    )
    no_background = none_loss(Loss, softmax=True, include_background=False)(logits, target)
    torch.testing.assert_close(no_background, plain[:, 1:])
    weights = torch.tensor([0.5, 2.0, 0.0])
    weighted = none_loss(Loss, weight=weights)(probs, target)
    torch.testing.assert_close(weighted, plain * weights.view(1, 3, 1, 1))
    torch.testing.assert_close(
        Loss(weight=weights)(probs, target), (plain * weights.view(1, 3, 1, 1)).mean()
    )
    torch.testing.assert_close(none_loss(Loss, weight=3.0)(probs, target), 3 * plain)
    torch.testing.assert_close(
        none_loss(Loss, weight=[1.0, 4.0], include_background=False)(probs, target),
        plain[:, 1:] * torch.tensor([1.0, 4.0]).view(1, 2, 1, 1),
    )


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_ignore_empty_classes(kind):
    logits, target = random_inputs((2, 3, 6, 6), seed=3)
    target[0, 1] = 0
    target[0, 0] = 1 - target[0, 2]
    probs = logits.softmax(1)
    ignoring = none_loss(LOSSES[kind])(probs, target)
    keeping = none_loss(LOSSES[kind], ignore_empty_classes=False)(probs, target)
    assert ignoring[0, 1] == 0 and keeping[0, 1] > 0.05  # predicted but absent: badly calibrated
    mask = torch.ones_like(keeping, dtype=torch.bool)
    mask[0, 1] = False
    torch.testing.assert_close(ignoring[mask], keeping[mask])


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_layouts_and_half_precision(kind):
    logits, target = random_inputs((2, 3, 8, 8, 4), seed=4)
    probs = logits.softmax(1)
    loss = LOSSES[kind]()
    x = probs.clone().requires_grad_(True)
    reference = loss(x, target)
    (reference_grad,) = torch.autograd.grad(reference, x)
    for layout in (torch.channels_last_3d, "transposed"):
        if layout == "transposed":
            y = probs.transpose(2, 4).clone().transpose(2, 4).requires_grad_(True)
        else:
            y = probs.contiguous(memory_format=layout).requires_grad_(True)
        value = loss(y, target.contiguous(memory_format=torch.channels_last_3d))
        (grad,) = torch.autograd.grad(value, y)
        torch.testing.assert_close(value, reference)
        torch.testing.assert_close(grad, reference_grad)
    for dtype in (torch.float16, torch.bfloat16):
        half = probs.to(dtype).requires_grad_(True)
        value = loss(half, target)
        (grad,) = torch.autograd.grad(value, half)
        assert value.dtype == torch.float32 and grad.dtype == dtype
        torch.testing.assert_close(value, loss(half.detach().float(), target))


# --- Gradients ----------------------------------------------------------------------------------


def _far_from_edges_and_centres(probs: torch.Tensor, num_bins: int, margin: float = 1e-3) -> bool:
    points = torch.cat(
        [bin_edges(num_bins).double(), (torch.arange(num_bins) + 0.5).double() / num_bins]
    )
    return bool(((probs.detach().unsqueeze(-1) - points).abs() > margin).all())


def _logits_with_probs_away_from_bins(shape, num_bins, activation):
    """Random float64 logits whose probabilities all lie >= 1e-3 from every bin edge and centre,
    where the hard loss is smooth and the soft shares are linear (the first such seed)."""
    for seed in range(1000):
        logits, target = random_inputs(shape, seed=seed, dtype=torch.float64)
        if _far_from_edges_and_centres(activation(logits), num_bins):
            return logits.requires_grad_(True), target
    raise AssertionError("no seed gave probabilities away from the bin edges")


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("activation", ["none", "softmax", "sigmoid"])
def test_gradcheck_float64(kind, activation):
    num_bins = 5
    act = {
        "none": lambda x: x.softmax(1),
        "softmax": lambda x: x.softmax(1),
        "sigmoid": torch.sigmoid,
    }
    logits, target = _logits_with_probs_away_from_bins((2, 3, 3, 3), num_bins, act[activation])
    if activation == "none":
        inputs = logits.detach().softmax(1).requires_grad_(True)
        loss = LOSSES[kind](num_bins=num_bins, ignore_empty_classes=False)
    else:
        inputs = logits
        loss = LOSSES[kind](num_bins=num_bins, **{activation: True})
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (inputs,))
    loss(inputs, target).backward()
    assert target.grad is None


# --- ACEDiceCELoss ---------------------------------------------------------------------------------


def _monai_dice_ce(dice_weight=0.33, ce_weight=0.33, **kwargs):
    return DiceCELoss(
        squared_pred=True,
        smooth_nr=0.0,
        smooth_dr=1e-5,
        lambda_dice=dice_weight,
        lambda_ce=ce_weight,
        **kwargs,
    )


@pytest.mark.parametrize("binning", ["hard", "soft", None])
def test_ace_dice_ce_equals_monai_dice_ce_plus_ace(binning):
    logits, target = random_inputs((2, 4, 8, 8, 3), seed=5)
    labels = target.argmax(1, keepdim=True).float()
    compound = ACEDiceCELoss(binning=binning, to_onehot_y=True)
    expected = _monai_dice_ce(to_onehot_y=True, softmax=True)(logits, labels)
    if binning is not None:
        expected = expected + 0.33 * LOSSES[binning](softmax=True, to_onehot_y=True)(logits, labels)
    torch.testing.assert_close(compound(logits, labels), expected)
    weighted = ACEDiceCELoss(binning=binning, ace_weight=0.5, dice_weight=0.2, ce_weight=0.7)
    expected = _monai_dice_ce(0.2, 0.7, softmax=True)(logits, target)
    if binning is not None:
        expected = expected + 0.5 * LOSSES[binning](softmax=True)(logits, target)
    torch.testing.assert_close(weighted(logits, target), expected)


@pytest.mark.parametrize("binning", ["hard", "soft"])
def test_ace_dice_ce_with_sigmoid_on_overlapping_regions(binning):
    """BraTS-like nested regions (whole tumour > tumour core > enhancing): multi-label targets."""
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 10, 10, generator=gen)
    radius = (
        torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"))
        .sub(4.5)
        .norm(dim=0)
    )
    target = torch.stack([radius < r for r in (4.0, 2.5, 1.5)]).float().expand(2, 3, 10, 10)
    assert (target.sum(1) > 1).any()  # the regions overlap
    compound = ACEDiceCELoss(binning=binning, sigmoid=True, softmax=False)
    ace = LOSSES[binning](sigmoid=True)(logits, target)
    torch.testing.assert_close(
        ace,
        direct_l1_ace(logits.sigmoid(), target, soft=binning == "soft").mean().float(),
        atol=2e-6,
        rtol=1e-5,
    )
    expected = _monai_dice_ce(sigmoid=True)(logits, target) + 0.33 * ace
    torch.testing.assert_close(compound(logits, target), expected)


def test_ace_dice_ce_inside_deep_supervision():
    logits, target = random_inputs((2, 3, 16, 16), seed=7)
    labels = target.argmax(1, keepdim=True).float()
    coarse = F.avg_pool2d(logits, 2).requires_grad_(True)
    fine = logits.clone().requires_grad_(True)
    compound = ACEDiceCELoss(binning="soft", to_onehot_y=True)
    deep = DeepSupervisionLoss(compound, weight_mode="exp")([fine, coarse], labels)
    small_labels = F.interpolate(labels, size=(8, 8), mode="nearest-exact")
    expected = compound(fine, labels) + 0.5 * compound(coarse, small_labels)
    torch.testing.assert_close(deep, expected)
    deep.backward()
    assert torch.isfinite(fine.grad).all() and coarse.grad.abs().sum() > 0


# --- Properties ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["hard", "soft"]),
)
def test_loss_lies_in_unit_interval(batch, channels, voxels, seed, kind):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, channels, voxels, generator=gen)
    target = (torch.rand(batch, channels, voxels, generator=gen) < 0.5).float()
    loss = none_loss(LOSSES[kind], ignore_empty_classes=False)(probs, target)
    assert ((loss >= 0) & (loss <= 1)).all()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.integers(1, 3)), min_size=1, max_size=6),
    st.sampled_from(["hard", "soft"]),
    st.sampled_from([5, 20]),
    st.randoms(use_true_random=False),
)
def test_perfectly_calibrated_input_has_zero_loss(groups, kind, num_bins, rnd):
    """Groups of 8m voxels predicted k/8 with exactly k m of them positive: every bin's mean
    prediction equals its mean target, whatever the bins (shares are equal within a group)."""
    probs, target = [], []
    for k, m in groups:
        probs += [k / 8] * (8 * m)
        target += [1.0] * (k * m) + [0.0] * ((8 - k) * m)
    order = list(range(len(probs)))
    rnd.shuffle(order)
    probs = torch.tensor(probs)[order].view(1, 1, -1)
    target = torch.tensor(target)[order].view(1, 1, -1)
    loss = LOSSES[kind](num_bins=num_bins, ignore_empty_classes=False)(probs, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1), st.sampled_from(["hard", "soft"]), st.randoms(use_true_random=False)
)
def test_loss_is_invariant_to_voxel_order(seed, kind, rnd):
    logits, target = random_inputs((2, 3, 24), seed=seed)
    order = list(range(24))
    rnd.shuffle(order)
    loss = none_loss(LOSSES[kind], softmax=True)
    torch.testing.assert_close(loss(logits, target), loss(logits[..., order], target[..., order]))


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_bad_input_is_named(kind):
    Loss = LOSSES[kind]
    probs, target = random_inputs((2, 3, 4, 4))
    probs = probs.softmax(1)
    cases = [
        (Loss(), (probs, target[:, :2]), ValueError, "does not match"),
        (Loss(), (probs[:, :, 0, 0], target[:, :, 0, 0]), ValueError, "at least 3 dims"),
        (Loss(), (probs.long(), target), TypeError, "floating point"),
        (Loss(), (probs * 3, target), ValueError, r"\[0, 1\].*activation"),
        (Loss(), (probs.masked_fill(probs > 0.9, float("nan")), target), ValueError, "NaN"),
        (Loss(to_onehot_y=True), (probs, target), ValueError, "label map of shape"),
        (
            Loss(to_onehot_y=True),
            (probs, torch.full((2, 1, 4, 4), 3.0)),
            ValueError,
            r"\[0, 2\] for 3 classes",
        ),
        (Loss(to_onehot_y=True), (probs, torch.full((2, 1, 4, 4), 0.5)), ValueError, "integer"),
        (Loss(weight=[1.0, 2.0]), (probs, target), ValueError, "weight has 2 values.*3 classes"),
        (Loss(), ([0.5], target), TypeError, "torch.Tensor"),
    ]
    for loss, args, error, message in cases:
        with pytest.raises(error, match=message):
            loss(*args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sigmoid": True, "softmax": True}, ValueError, "Incompatible activations"),
        ({"softmax": True, "other_act": torch.tanh}, ValueError, "Incompatible activations"),
        ({"other_act": "tanh"}, TypeError, "callable"),
        ({"num_bins": 0}, ValueError, "num_bins"),
        ({"weight": [1.0, -1.0]}, ValueError, "non-negative"),
        ({"weight": [[1.0]]}, ValueError, "1-D"),
        ({"weight": float("nan")}, ValueError, "non-negative"),
        ({"reduction": "median"}, ValueError, "median"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    for Loss in LOSSES.values():
        with pytest.raises(error, match=message):
            Loss(**kwargs)
    with pytest.raises(ValueError, match="empty_weight"):
        SoftL1ACELoss(empty_weight=-1)


def test_bad_compound_arguments_are_named():
    with pytest.raises(ValueError, match="binning must be"):
        ACEDiceCELoss(binning="medium")
    with pytest.raises(ValueError, match="Incompatible activations"):
        ACEDiceCELoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="ace_weight must be a finite number >= 0"):
        ACEDiceCELoss(ace_weight=-0.1)


@pytest.mark.parametrize("name", ["ace_weight", "dice_weight", "ce_weight", "empty_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, True, "0.3", None])
def test_compound_weights_must_be_finite_non_negative_numbers(name, value):
    """NaN passes `value < 0`: it used to drop the mL1-ACE term without a word."""
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0.*got {value!r}"):
        ACEDiceCELoss(binning="soft", **{name: value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5, True])
def test_soft_loss_empty_weight_must_be_a_finite_non_negative_number(value):
    with pytest.raises(ValueError, match=rf"empty_weight must be a finite number >= 0.*{value!r}"):
        SoftL1ACELoss(empty_weight=value)


def test_good_weights_of_any_real_type_are_accepted():
    for value in (0, 0.0, 1, np.float32(0.5), np.int64(2)):
        ACEDiceCELoss(binning="soft", ace_weight=value, dice_weight=value, empty_weight=value)
        assert SoftL1ACELoss(empty_weight=value).empty_weight == value


@pytest.mark.parametrize("binning", ["hard", "soft", None])
@pytest.mark.parametrize("bad", [5, -1])
def test_compound_loss_checks_labels_before_monai(binning, bad):
    """MONAI's Dice+CE would answer "index 5 is out of bounds"; calibtut names the range."""
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.zeros(2, 1, 4, 4)
    labels[1, 0, 2, 3] = bad
    loss = ACEDiceCELoss(binning=binning, to_onehot_y=True)
    with pytest.raises(ValueError, match=r"label values must lie in \[0, 2\] for 3 classes"):
        loss(logits, labels)
    with pytest.raises(ValueError, match="integer class indices"):
        loss(logits, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="label map of shape"):
        loss(logits, torch.zeros(2, 3, 4, 4))


def test_compound_loss_checks_label_values_once_and_keeps_its_value(monkeypatch):
    import calibtut.losses as losses

    value_checks = []
    real = losses._check_label_map

    def counting(target, input, values=True):
        value_checks.append(values)
        real(target, input, values)

    monkeypatch.setattr(losses, "_check_label_map", counting)
    logits, target = random_inputs((2, 3, 4, 4), seed=3)
    labels = target.argmax(1, keepdim=True)
    value = ACEDiceCELoss(binning="hard", to_onehot_y=True)(logits, labels)
    # one look at the label values (a GPU synchronisation) per call, not one per term
    assert value_checks.count(True) == 1
    dice_ce = _monai_dice_ce(to_onehot_y=True, softmax=True)(logits, labels)
    ace = HardL1ACELoss(softmax=True, to_onehot_y=True)(logits, labels)
    torch.testing.assert_close(value, dice_ce + 0.33 * ace)
    unchecked = ACEDiceCELoss(binning="hard", to_onehot_y=True, validate=False)(logits, labels)
    torch.testing.assert_close(unchecked, dice_ce + 0.33 * ace)


EMPTY_SHAPES = [(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4, 4)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("validate", [True, False])
def test_empty_batch_is_named_by_every_loss(shape, validate):
    """A label map used to reach aminmax before any emptiness check (a bare RuntimeError)."""
    logits = torch.randn(shape)
    onehot = torch.zeros(shape)
    labels = torch.zeros(shape[0], 1, *shape[2:])
    losses = (
        [(Loss(validate=validate), onehot) for Loss in LOSSES.values()]
        + [
            (Loss(to_onehot_y=True, softmax=True, validate=validate), labels)
            for Loss in LOSSES.values()
        ]
        + [
            (ACEDiceCELoss(binning=b, validate=validate, **kw), t)
            for b in ("hard", "soft", None)
            for kw, t in (
                ({}, onehot),
                ({"to_onehot_y": True}, labels),
                ({"sigmoid": True}, onehot),
            )
        ]
    )
    for loss, target in losses:
        with pytest.raises(ValueError, match=r"input is empty \(shape"):
            loss(logits, target)


@pytest.mark.parametrize("num_bins", [np.int64(5), np.int32(5), np.uint8(5), torch.tensor(5)])
def test_integer_like_num_bins_are_accepted(num_bins):
    probs, target = random_inputs((2, 3, 4, 4), seed=2)
    probs = probs.softmax(1)
    for Loss in LOSSES.values():
        loss = Loss(num_bins=num_bins)
        assert type(loss.num_bins) is int and loss.num_bins == 5
        torch.testing.assert_close(loss(probs, target), Loss(num_bins=5)(probs, target))
    compound = ACEDiceCELoss(num_bins=num_bins)
    assert compound.ace.num_bins == 5 and type(compound.ace.num_bins) is int


@pytest.mark.parametrize(
    "num_bins", [True, np.True_, torch.tensor(True), 20.0, np.float64(20), 0, -2]
)
def test_bool_float_and_small_num_bins_are_refused_by_the_losses(num_bins):
    for Loss in [*LOSSES.values(), ACEDiceCELoss]:
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            Loss(num_bins=num_bins)


def test_loss_signatures_are_explicit():
    import inspect

    base = list(inspect.signature(HardL1ACELoss.__init__).parameters)
    assert base[:3] == ["self", "num_bins", "include_background"] and "args" not in base
    soft = inspect.signature(SoftL1ACELoss.__init__).parameters
    assert list(soft)[: len(base)] == base
    assert soft["empty_weight"].kind is inspect.Parameter.KEYWORD_ONLY
    assert soft["empty_weight"].default == 0.01
    assert SoftL1ACELoss(7, False).num_bins == 7  # positional arguments as before


def test_single_channel_softmax_is_ignored_with_a_warning():
    probs = torch.rand(2, 1, 5, 5)
    target = (torch.rand(2, 1, 5, 5) > 0.5).float()
    with pytest.warns(UserWarning, match="single channel"):
        value = HardL1ACELoss(softmax=True)(probs, target)
    torch.testing.assert_close(value, HardL1ACELoss()(probs, target))


def test_compound_loss_sigmoid_alone_selects_multilabel():
    """sigmoid=True needs no softmax=False: softmax defaults to `not sigmoid`."""
    logits = torch.randn(2, 3, 8, 8)
    regions = (torch.rand(2, 3, 8, 8) > 0.5).float()
    implicit = ACEDiceCELoss("hard", sigmoid=True)(logits, regions)
    explicit = ACEDiceCELoss("hard", sigmoid=True, softmax=False)(logits, regions)
    torch.testing.assert_close(implicit, explicit)
    with pytest.raises(ValueError, match="Incompatible activations"):
        ACEDiceCELoss("hard", sigmoid=True, softmax=True)
