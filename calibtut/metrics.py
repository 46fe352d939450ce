"""Calibration metrics (ECE, ACE, MCE), Dice, per-image results and dataset reliability histograms.

Everything is computed from :class:`calibtut.binning.BinStats`, so a metric, the loss that
optimises it and the plot that shows it all see the same bins. Conventions (DESIGN.md):

* ECE weights each bin's gap |mean prediction - mean target| by its count, ACE averages the
  occupied bins equally, MCE is the largest occupied-bin gap; NaN where nothing is occupied.
* Macro = per image and class, then averaged over images; micro = bins pooled over the dataset
  first, then one error per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, compute_dice
from monai.networks import one_hot

from calibtut.binning import BinStats, hard_bin_index, hard_binning

__all__ = [
    "REDUCTIONS",
    "CalibrationErrors",
    "calibration_errors",
    "calibration_error",
    "discretize",
    "dice",
    "ImageResults",
    "image_results",
    "macro_average",
    "micro_errors",
    "dataset_reliability_histogram",
    "CumulativeCalibration",
]

REDUCTIONS = {"expected": "ece", "average": "ace", "maximum": "mce"}


@dataclass(frozen=True)
class CalibrationErrors:
    """ECE, ACE and MCE, each ``(B, C)`` (NaN where a class has no occupied bin)."""

    ece: torch.Tensor
    ace: torch.Tensor
    mce: torch.Tensor


def calibration_errors(bins: BinStats) -> CalibrationErrors:
    """ECE, ACE and MCE from bin statistics, in one pass over the bins."""
    mean_pred, mean_target = bins.means()
    gap = (mean_pred - mean_target).abs()
    occupied = bins.occupied
    n_occupied = occupied.sum(-1)
    total = bins.count.sum(-1)
    nan = torch.full_like(total, float("nan"))
    zero_gap = torch.where(occupied, gap, torch.zeros_like(gap))
    ece = torch.where(total > 0, (zero_gap * bins.count).sum(-1) / total.clamp(min=1e-12), nan)
    ace = torch.where(n_occupied > 0, zero_gap.sum(-1) / n_occupied.clamp(min=1), nan)
    mce = torch.where(n_occupied > 0, zero_gap.amax(-1), nan)
    return CalibrationErrors(ece, ace, mce)


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


@dataclass(frozen=True)
class ImageResults:
    """Everything the per-image table and the saved bins need for a batch of images."""

    bins: BinStats
    dice: torch.Tensor
    errors: CalibrationErrors
    empty: torch.Tensor  # (B, C) bool: class absent from the image's ground truth

    def rows(self, image_ids: list[str], class_names: list[str]) -> list[dict[str, Any]]:
        """One record per image and class (the columns of a run's ``per_image.csv``)."""
        B, C = self.dice.shape
        if len(image_ids) != B or len(class_names) != C:
            raise ValueError(
                f"Need {B} image ids and {C} class names, got {len(image_ids)} and {len(class_names)}."
            )
        columns = {
            "dice": self.dice,
            "ece": self.errors.ece,
            "ace": self.errors.ace,
            "mce": self.errors.mce,
        }
        values = {k: v.detach().double().cpu().tolist() for k, v in columns.items()}
        empty = self.empty.cpu().tolist()
        return [
            {
                "image_id": image_ids[b],
                "class_index": c,
                "class_name": class_names[c],
                **{k: values[k][b][c] for k in columns},
                "empty": bool(empty[b][c]),
            }
            for b in range(B)
            for c in range(C)
        ]


def image_results(
    probs: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 20,
    multilabel: bool = False,
    include_background: bool = True,
) -> ImageResults:
    """Bins, Dice, ECE/ACE/MCE and empty flags per image and class for probabilities and one-hot targets.

    With ``include_background=False`` channel 0 is left out of the results, but the argmax behind
    Dice still sees it (dropping it first would hand its voxels to the foreground classes);
    calibration is marginal per class, so leaving a class out changes no other class's numbers.
    """
    segmentation = discretize(probs, multilabel)
    probs, target = _drop_background(probs, target, include_background)
    segmentation = segmentation if include_background else segmentation[:, 1:]
    bins = hard_binning(probs, target, num_bins)
    return ImageResults(
        bins=bins,
        dice=compute_dice(segmentation, target, include_background=True),
        errors=calibration_errors(bins),
        empty=bins.target_sum.sum(-1) == 0,
    )


def macro_average(values: torch.Tensor) -> torch.Tensor:
    """Per-class mean over images of a ``(B, C)`` metric, ignoring NaN (MONAI's ``mean_batch``)."""
    return values.nanmean(0)


def micro_errors(bins: BinStats) -> CalibrationErrors:
    """Dataset-level errors per class: bins pooled over all images first, shape ``(1, C)``."""
    return calibration_errors(bins.pooled())


def dataset_reliability_histogram(bins: BinStats) -> torch.Tensor:
    """Per class a ``num_bins x num_bins`` count matrix ``(C, num_bins, num_bins)``.

    For every image and every occupied confidence bin ``k`` it counts one at
    ``[class, j, k]``, where ``j`` is the (hard) bin of that bin's mean ground truth. Summing
    the results of several batches gives the dataset's histogram without keeping any image.
    """
    n = bins.num_bins
    C = bins.count.shape[1]
    _, mean_target = bins.means()
    occupied = bins.occupied
    gt_bin = hard_bin_index(torch.nan_to_num(mean_target), n)
    conf_bin = torch.arange(n, device=gt_bin.device).expand_as(gt_bin)
    cls = torch.arange(C, device=gt_bin.device).view(1, C, 1).expand_as(gt_bin)
    flat = (cls * n * n + gt_bin * n + conf_bin)[occupied]
    return torch.bincount(flat, minlength=C * n * n).view(C, n, n)


class CumulativeCalibration(CumulativeIterationMetric):
    """MONAI-style accumulator of per-image bins: call it on each batch, then ``aggregate()``.

    It keeps only ``(B, C, 3, num_bins)`` numbers per batch, never the images, and its
    aggregate gives per-image (macro) and pooled (micro) ECE/ACE/MCE and the dataset
    reliability histograms, all from the same bins.
    """

    def __init__(self, num_bins: int = 20, include_background: bool = True) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.include_background = include_background

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        y_pred, y = _drop_background(y_pred, y, self.include_background)
        bins = hard_binning(y_pred, y, self.num_bins)
        return torch.stack([bins.pred_sum, bins.target_sum, bins.count], dim=2).detach()

    def bins(self) -> BinStats:
        """All accumulated per-image bins."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("CumulativeCalibration has no data: call it on at least one batch.")
        return BinStats(data[:, :, 0], data[:, :, 1], data[:, :, 2])

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
        """Macro and micro ECE/ACE/MCE per class, per-image errors, and the reliability histograms."""
        bins = self.bins()
        per_image = calibration_errors(bins)
        micro = micro_errors(bins)
        out: dict[str, Any] = {
            "per_image": per_image,
            "histogram": dataset_reliability_histogram(bins),
        }
        for name in REDUCTIONS.values():
            out[f"macro_{name}"] = macro_average(getattr(per_image, name))
            out[f"micro_{name}"] = getattr(micro, name)[0]
        return out
