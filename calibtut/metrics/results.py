"""Everything a run's test results hold per image and class, and a MONAI-style accumulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, compute_dice

from calibtut.binning import BinStats, hard_binning
from calibtut.metrics.errors import (
    REDUCTIONS,
    CalibrationErrors,
    _drop_background,
    calibration_errors,
    discretize,
    macro_average,
    micro_errors,
)
from calibtut.metrics.figures import dataset_reliability_histogram
from calibtut.metrics.floor import FloorDraws, NoiseFloor, draw_floor_labels, noise_floor


@dataclass(frozen=True)
class ImageResults:
    """Everything the per-image table and the saved bins need for a batch of images.

    ``floor`` and ``draws`` (the noise floor and the label draws behind it) are None when the
    floor was not computed.
    """

    bins: BinStats
    dice: torch.Tensor
    errors: CalibrationErrors
    empty: torch.Tensor  # (B, C) bool: class absent from the image's ground truth
    floor: NoiseFloor | None = None
    draws: FloorDraws | None = None

    @staticmethod
    def cat(parts: list[ImageResults], device: torch.device | str | None = None) -> ImageResults:
        """Several batches' results along the image axis, detached (on ``device`` if given)."""
        if not parts:
            raise ValueError("ImageResults.cat needs at least one ImageResults.")

        def cat(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([t.detach().to(device or t.device) for t in tensors])

        bins = [p.bins for p in parts]
        errors = [p.errors for p in parts]
        floor = draws = None
        if all(p.floor is not None and p.draws is not None for p in parts):
            floor = NoiseFloor(
                *(
                    cat([getattr(p.floor, n) for p in parts])
                    for n in ("ace", "mce", "ace_se", "mce_se")
                )
            )
            draws = FloorDraws(cat([p.draws.target_sums for p in parts]))
        return ImageResults(
            bins=BinStats(
                cat([b.pred_sum for b in bins]),
                cat([b.target_sum for b in bins]),
                cat([b.count for b in bins]),
                bins[0].empty_weight,
            ),
            dice=cat([p.dice for p in parts]),
            errors=CalibrationErrors(
                *(
                    cat([getattr(e, name) for e in errors])
                    for name in ("ece", "ace", "mce", "mce_bin")
                )
            ),
            empty=cat([p.empty for p in parts]),
            floor=floor,
            draws=draws,
        )


def image_results(
    probs: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 20,
    multilabel: bool = False,
    include_background: bool = True,
    *,
    floor_draws: int = 0,
    generator: torch.Generator | None = None,
) -> ImageResults:
    """Bins, Dice, ECE/ACE/MCE and empty flags per image and class for probabilities and one-hot targets.

    With ``include_background=False`` channel 0 is left out of the results, but the argmax behind
    Dice still sees it (dropping it first would hand its voxels to the foreground classes);
    calibration is marginal per class, so leaving a class out changes no other class's numbers.
    ``floor_draws`` > 0 adds the noise floor from that many label draws (:func:`noise_floor`),
    drawn with ``generator``.
    """
    segmentation = discretize(probs, multilabel)
    probs, target = _drop_background(probs, target, include_background)
    segmentation = segmentation if include_background else segmentation[:, 1:]
    bins = hard_binning(probs, target, num_bins)
    floor = draws = None
    if floor_draws:
        draws = draw_floor_labels(probs, num_bins, floor_draws, generator)
        floor = noise_floor(bins, draws)
    return ImageResults(
        bins=bins,
        dice=compute_dice(segmentation, target, include_background=True),
        errors=calibration_errors(bins),
        empty=bins.target_sum.sum(-1) == 0,
        floor=floor,
        draws=draws,
    )


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
