"""ECE, ACE and MCE from bins, Dice, and their macro (per image, then averaged) and micro (pooled)
summaries: the metrics of calibtut, equal to MONAI's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.metrics import compute_dice
from monai.networks import one_hot

from calibtut.binning import BinStats, hard_binning

REDUCTIONS = {"expected": "ece", "average": "ace", "maximum": "mce"}
METRIC_TITLES = {
    "dice": "Dice",
    "ece": "ECE",
    "ace": "ACE",
    "mce": "MCE",
    "ace_floor": "ACE floor",
    "mce_floor": "MCE floor",
}
"""How tables and figures name each per-image metric."""


@dataclass(frozen=True)
class CalibrationErrors:
    """ECE, ACE and MCE, each ``(B, C)`` (NaN where a class has no occupied bin).

    ``mce_bin`` is the bin whose gap is the MCE (the first of equal gaps; -1 with no occupied
    bin): the one source of the bin a reliability diagram frames.
    """

    ece: torch.Tensor
    ace: torch.Tensor
    mce: torch.Tensor
    mce_bin: torch.Tensor


def calibration_errors(bins: BinStats) -> CalibrationErrors:
    """ECE, ACE and MCE (and the MCE's bin) from bin statistics, in one pass over the bins.

    Args:
        bins: per image and class bins, ``(B, C, num_bins)``.

    Returns:
        :class:`CalibrationErrors`, each ``(B, C)``.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> errors = calibration_errors(hard_binning(p, y, num_bins=10))
        >>> round(errors.ace.item(), 3), errors.mce_bin.item()
        (0.2, 1)
    """
    mean_pred, mean_target = bins.means()
    gap = (mean_pred - mean_target).abs()
    occupied = bins.occupied
    n_occupied = occupied.sum(-1)
    total = bins.count.sum(-1)
    nan = torch.full_like(total, float("nan"))
    zero_gap = torch.where(occupied, gap, torch.zeros_like(gap))
    ece = torch.where(total > 0, (zero_gap * bins.count).sum(-1) / total.clamp(min=1e-12), nan)
    ace = torch.where(n_occupied > 0, zero_gap.sum(-1) / n_occupied.clamp(min=1), nan)
    # the first occupied bin of the largest gap (an occupied bin of gap 0 beats empty bins)
    largest, mce_bin = torch.where(occupied, zero_gap, torch.full_like(gap, -1.0)).max(-1)
    mce = torch.where(n_occupied > 0, largest, nan)
    mce_bin = torch.where(n_occupied > 0, mce_bin, torch.full_like(mce_bin, -1))
    return CalibrationErrors(ece, ace, mce, mce_bin)


def calibration_error(
    probs: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 20,
    reduction: str = "expected",
    include_background: bool = True,
) -> torch.Tensor:
    """Marginal, per-image calibration error ``(B, C)``: equal to MONAI's ``CalibrationErrorMetric``.

    ``reduction`` is ``"expected"`` (ECE), ``"average"`` (ACE) or ``"maximum"`` (MCE).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}.")
    probs, target = _drop_background(probs, target, include_background)
    errors = calibration_errors(hard_binning(probs, target, num_bins))
    return getattr(errors, REDUCTIONS[reduction])


def _drop_background(probs, target, include_background: bool):
    if include_background:
        return probs, target
    if probs.ndim < 3 or probs.shape[1] < 2:
        raise ValueError(
            f"include_background=False needs at least 2 channels, got shape {tuple(probs.shape)}."
        )
    return probs[:, 1:], target[:, 1:]


def discretize(probs: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Hard segmentation as one-hot: argmax over classes, or threshold 0.5 per channel (multi-label)."""
    if multilabel:
        return (probs >= 0.5).to(probs.dtype)
    return one_hot(probs.argmax(1, keepdim=True), num_classes=probs.shape[1]).to(probs.dtype)


def dice(probs: torch.Tensor, target: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Per image and class Dice ``(B, C)`` of the discretised prediction (MONAI's ``compute_dice``).

    NaN where the class is absent from the ground truth (MONAI's ``ignore_empty``).
    """
    return compute_dice(discretize(probs, multilabel), target, include_background=True)


def macro_average(values: torch.Tensor) -> torch.Tensor:
    """Per-class mean over images of a ``(B, C)`` metric, ignoring NaN (MONAI's ``mean_batch``)."""
    return values.nanmean(0)


def macro_errors(bins: BinStats) -> CalibrationErrors:
    """Per class, the per-image errors averaged over images (NaN skipped), shape ``(C,)``.

    ``mce_bin`` has no meaning once averaged and is -1.
    """
    errors = calibration_errors(bins)
    ece, ace, mce = (macro_average(getattr(errors, name)) for name in ("ece", "ace", "mce"))
    return CalibrationErrors(ece, ace, mce, torch.full(ece.shape, -1, dtype=torch.int64))


def micro_errors(bins: BinStats) -> CalibrationErrors:
    """Dataset-level errors per class: bins pooled over all images first, shape ``(1, C)``."""
    return calibration_errors(bins.pooled())
