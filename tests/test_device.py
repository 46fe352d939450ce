"""The core on the accelerator: binning, losses and metrics on ``CALIBTUT_TEST_DEVICE``.

On a CPU (CI) this runs the same checks on the CPU; ``benchmarks/gpu_check.sh`` sets
``CALIBTUT_TEST_DEVICE=cuda``, where the binning takes its GPU path (two real scatters instead
of the CPU's complex pair) and the losses run under autocast. Each result is compared with a
float64 computation on the host (tests/reference.py) and with MONAI's own classes on the device.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from monai.metrics import CalibrationErrorMetric
from monai.networks import one_hot
from reference import as_sums, direct_hard_bins, direct_l1_ace, direct_soft_bins

from calibtut import ACEDiceCELoss, HardL1ACELoss, SoftL1ACELoss
from calibtut.binning import BinStats, hard_binning, soft_binning
from calibtut.metrics import calibration_error

DEVICE = torch.device(os.environ.get("CALIBTUT_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():  # asked for, so never skipped
    raise RuntimeError("CALIBTUT_TEST_DEVICE=cuda but torch sees no CUDA device")


def inputs(shape=(2, 4, 24, 20, 6), seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64).mul(3)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    return logits, labels, one_hot(labels, shape[1]).double()


@pytest.mark.parametrize("binning", [hard_binning, soft_binning], ids=["hard", "soft"])
def test_binning_on_the_device_equals_float64_on_the_host(binning):
    logits, _, target = inputs()
    probs = logits.softmax(1)
    bins = binning(probs.float().to(DEVICE), target.float().to(DEVICE), 20)
    direct = (direct_soft_bins if binning is soft_binning else direct_hard_bins)(probs, target, 20)
    assert bins.count.device.type == DEVICE.type
    on_host = [x.cpu() for x in (bins.pred_sum, bins.target_sum, bins.count)]
    np.testing.assert_allclose(as_sums(BinStats(*on_host)), direct, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("reduction", ["expected", "average", "maximum"])
def test_metric_on_the_device_equals_monai_on_the_device(reduction):
    logits, _, target = inputs(seed=1)
    probs, target = logits.softmax(1).float().to(DEVICE), target.float().to(DEVICE)
    metric = CalibrationErrorMetric(num_bins=20, calibration_reduction=reduction,
                                    metric_reduction="none")  # fmt: skip
    metric(probs, target)
    ours = calibration_error(probs, target, reduction=reduction)
    assert ours.device.type == DEVICE.type
    torch.testing.assert_close(ours, metric.aggregate().to(ours), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_class", [HardL1ACELoss, SoftL1ACELoss], ids=["hard", "soft"])
def test_loss_and_gradient_on_the_device_equal_the_host(loss_class):
    logits, _, target = inputs(seed=2)
    probs = logits.softmax(1)
    expected = direct_l1_ace(probs, target, soft=loss_class is SoftL1ACELoss).mean()
    on_host = logits.float().requires_grad_(True)
    on_device = logits.float().to(DEVICE).requires_grad_(True)
    losses = [
        loss_class(softmax=True)(x, target.float().to(x.device)) for x in (on_host, on_device)
    ]
    for loss, x in zip(losses, (on_host, on_device), strict=True):
        loss.backward()
        assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(losses[1].double().cpu(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(on_device.grad.cpu(), on_host.grad, rtol=1e-3, atol=1e-7)


def test_compound_loss_under_autocast_is_finite_and_close_to_float32():
    logits, labels, _ = inputs(seed=3)
    x, y = logits.float().to(DEVICE), labels.to(DEVICE)
    loss = ACEDiceCELoss(binning="soft", to_onehot_y=True, softmax=True)
    full = loss(x, y)
    dtype = (
        torch.bfloat16 if DEVICE.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    )
    with torch.autocast(DEVICE.type, dtype=dtype):
        mixed = loss(x.to(dtype), y)
    assert torch.isfinite(mixed) and mixed.dtype == torch.float32
    assert abs(mixed.item() - full.item()) < 0.02 * full.item()
    baseline = ACEDiceCELoss(binning=None, to_onehot_y=True, softmax=True)(x, y)
    monai = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, lambda_dice=0.33,
                       lambda_ce=0.33)(x, y)  # fmt: skip
    torch.testing.assert_close(baseline, monai, rtol=1e-5, atol=1e-6)
