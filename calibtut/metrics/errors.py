"""ECE, ACE and MCE from bins, Dice, and their macro (per image, then averaged) and micro (pooled)
summaries: the metrics of calibtut, equal to MONAI's.

Example:
    >>> import torch
    >>> from calibtut.metrics.errors import calibration_error
    >>> p = torch.tensor([[[0.2, 0.9]]])   # one image, one class, two voxels
    >>> y = torch.tensor([[[0.0, 1.0]]])
    >>> calibration_error(p, y, reduction="average")  # gaps 0.2 and 0.1
    tensor([[0.1500]])
"""

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
    "brier": "Brier",
    "nll": "NLL",
    "equal_mass_ece": "equal-mass ECE",
    "ace_above_floor": "ACE above floor",
}
"""How tables and figures name each per-image metric (``ace_above_floor``, ACE minus its noise
floor, is derived by reports; ``equal_mass_ece`` is the ECE over equal-mass bins, not the
paper's *average* calibration error ACE)."""


@dataclass(frozen=True)
class CalibrationErrors:
    """ECE, ACE and MCE, each ``(B, C)`` (NaN where a class has no occupied bin).

    ``mce_bin`` is the bin whose gap is the MCE (the first of equal gaps; -1 with no occupied
    bin): the one source of the bin a reliability diagram frames.

    Args:
        ece: expected calibration error: the bins' gaps weighted by their counts.
        ace: average calibration error: the occupied bins' gaps averaged equally.
        mce: maximum calibration error: the largest occupied-bin gap.
        mce_bin: the bin of the MCE (int64; -1 with no occupied bin).

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.9]]])
        >>> errors = calibration_errors(hard_binning(p, torch.tensor([[[0.0, 1.0]]]), 10))
        >>> errors.ace, errors.mce, errors.mce_bin
        (tensor([[0.1500]]), tensor([[0.2000]]), tensor([[1]]))

    Taught in notebooks/01_what_is_calibration.
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
        Bin 1 holds 0.2 twice (targets 0 and 1): gap |0.2 - 0.5| = 0.3; bin 8 holds 0.9 twice
        (targets 1 and 1): gap 0.1. ACE = (0.3 + 0.1) / 2 = 0.2, the MCE (0.3) is bin 1's.

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> errors = calibration_errors(hard_binning(p, y, num_bins=10))
        >>> round(errors.ace.item(), 3), round(errors.mce.item(), 3), errors.mce_bin.item()
        (0.2, 0.3, 1)

    Taught in notebooks/01_what_is_calibration and 02_hard_and_soft_binning.
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

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: the one-hot target of the same shape.
        num_bins: the number of hard bins (a positive integer).
        reduction: ``"expected"``, ``"average"`` or ``"maximum"``.
        include_background: score channel 0 too.

    Returns:
        ``(B, C)`` (``C - 1`` classes without the background); NaN for a class without data.

    Raises:
        ValueError: an unknown ``reduction``, no channel left without the background, a bad
            ``num_bins``, or input :func:`calibtut.binning.hard_binning` refuses (bad shapes, an
            empty batch, values outside [0, 1]).

    Example:
        Two voxels alone in their bins, gaps 0.2 and 0.1 (0.9 is right, 0.2 wrong):

        >>> import torch
        >>> p = torch.tensor([[[0.2, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0]]])
        >>> calibration_error(p, y, reduction="expected"), calibration_error(p, y, reduction="maximum")
        (tensor([[0.1500]]), tensor([[0.2000]]))

    Taught in notebooks/01_what_is_calibration.
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
    """Hard segmentation as one-hot: argmax over classes, or threshold 0.5 per channel (multi-label).

    Args:
        probs: probabilities ``(B, C, *spatial)``.
        multilabel: threshold each channel at 0.5 (overlapping regions) instead of an argmax.

    Returns:
        A one-hot (or multi-hot) tensor of the shape and dtype of ``probs``.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[[0.6, 0.3], [0.4, 0.7]]])   # 2 classes, 2 voxels
        >>> discretize(probs)
        tensor([[[1., 0.],
                 [0., 1.]]])
        >>> discretize(torch.tensor([[[0.6], [0.7]]]), multilabel=True)
        tensor([[[1.],
                 [1.]]])
    """
    if multilabel:
        return (probs >= 0.5).to(probs.dtype)
    return one_hot(probs.argmax(1, keepdim=True), num_classes=probs.shape[1]).to(probs.dtype)


def dice(probs: torch.Tensor, target: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Per image and class Dice ``(B, C)`` of the discretised prediction (MONAI's ``compute_dice``).

    NaN where the class is absent from the ground truth (MONAI's ``ignore_empty``).

    Args:
        probs: probabilities ``(B, C, *spatial)``.
        target: the one-hot target of the same shape.
        multilabel: threshold each channel at 0.5 instead of an argmax (:func:`discretize`).

    Returns:
        ``(B, C)`` Dice of each image and class.

    Example:
        Class 0 is predicted on voxels 0 and 1 but is only voxel 0: Dice 2 * 1 / (2 + 1).

        >>> import torch
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])
        >>> target = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
        >>> dice(probs, target)
        tensor([[0.6667, 0.6667]])
    """
    return compute_dice(discretize(probs, multilabel), target, include_background=True)


def macro_average(values: torch.Tensor) -> torch.Tensor:
    """Per-class mean over images of a ``(B, C)`` metric, ignoring NaN (MONAI's ``mean_batch``).

    Args:
        values: a per image and class metric ``(B, C)``.

    Returns:
        ``(C,)``; NaN for a class that is NaN in every image.

    Example:
        >>> import torch
        >>> macro_average(torch.tensor([[0.1, float("nan")], [0.3, 0.4]]))
        tensor([0.2000, 0.4000])

    Taught in notebooks/01_what_is_calibration.
    """
    return values.nanmean(0)


def macro_errors(bins: BinStats) -> CalibrationErrors:
    """Per class, the per-image errors averaged over images (NaN skipped), shape ``(C,)``.

    ``mce_bin`` has no meaning once averaged and is -1.

    Args:
        bins: per image and class bins ``(B, C, num_bins)``.

    Returns:
        :class:`CalibrationErrors`, each ``(C,)``.

    Example:
        Two images with 0.2 and 0.9 (one voxel per bin). Image 0's targets are 0, 1 (gaps 0.2
        and 0.1: ACE 0.15), image 1's are 1, 1 (gaps 0.8 and 0.1: ACE 0.45): macro ACE 0.3.

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.9]], [[0.2, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])
        >>> macro_errors(hard_binning(p, y, 10)).ace
        tensor([0.3000])
    """
    errors = calibration_errors(bins)
    ece, ace, mce = (macro_average(getattr(errors, name)) for name in ("ece", "ace", "mce"))
    return CalibrationErrors(ece, ace, mce, torch.full(ece.shape, -1, dtype=torch.int64))


def micro_errors(bins: BinStats) -> CalibrationErrors:
    """Dataset-level errors per class: bins pooled over all images first, shape ``(1, C)``.

    Pooling lets one image's gaps cancel another's, so micro errors are usually lower than
    macro ones: the paper reports both.

    Args:
        bins: per image and class bins ``(B, C, num_bins)``.

    Returns:
        :class:`CalibrationErrors`, each ``(1, C)``.

    Example:
        The images of :func:`macro_errors`, pooled: bin 1 holds 0.2 twice (targets 0 and 1, gap
        0.3), bin 8 holds 0.9 twice (gap 0.1): micro ACE 0.2 against the macro 0.3.

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.9]], [[0.2, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])
        >>> micro_errors(hard_binning(p, y, 10)).ace
        tensor([[0.2000]])

    Taught in notebooks/01_what_is_calibration.
    """
    return calibration_errors(bins.pooled())
