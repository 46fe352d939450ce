"""Everything a run's test results hold per image and class, and a MONAI-style accumulator.

Example:
    >>> import torch
    >>> from calibtut.metrics.results import image_results
    >>> p = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])
    >>> y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    >>> image_results(p, y, num_bins=10).errors.ace   # gaps 0.1, 0.6 and 0.2 in each class
    tensor([[0.3000, 0.3000]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, compute_dice

from calibtut.binning import BinStats, _check_num_bins, hard_binning
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
from calibtut.metrics.scores import ImageScores, image_scores


@dataclass(frozen=True)
class ImageResults:
    """Everything the per-image table and the saved bins need for a batch of images.

    ``floor`` and ``draws`` (the noise floor and the label draws behind it) are None when the
    floor was not computed; ``scores`` (Brier, NLL, equal-mass ECE) when they were not.

    Args:
        bins: the hard bins ``(B, C, num_bins)``.
        dice: Dice ``(B, C)`` (NaN where the class is absent).
        errors: ECE/ACE/MCE ``(B, C)`` and the MCE's bin.
        empty: ``(B, C)`` bool, the class is absent from the image's ground truth.
        floor: the noise floors ``(B, C)``, or None.
        draws: the label draws behind the floors, or None.
        scores: the bin-free scores (:class:`~calibtut.metrics.scores.ImageScores`), or None.

    Example:
        >>> import torch
        >>> p = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])   # 2 classes, 3 voxels
        >>> y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
        >>> results = image_results(p, y, num_bins=10)
        >>> results.dice, results.empty
        (tensor([[0.6667, 0.6667]]), tensor([[False, False]]))
        >>> ImageResults.cat([results, results]).dice.shape
        torch.Size([2, 2])
    """

    bins: BinStats
    dice: torch.Tensor
    errors: CalibrationErrors
    empty: torch.Tensor  # (B, C) bool: class absent from the image's ground truth
    floor: NoiseFloor | None = None
    draws: FloorDraws | None = None
    scores: ImageScores | None = None

    @staticmethod
    def cat(parts: list[ImageResults], device: torch.device | str | None = None) -> ImageResults:
        """Several batches' results along the image axis, detached (on ``device`` if given).

        The floors (and the scores) are kept only when every part has them.

        Args:
            parts: the batches' results, of the same classes and number of bins.
            device: where to put the concatenated tensors (None: where each part is).

        Returns:
            :class:`ImageResults` of all their images, in order.

        Raises:
            ValueError: ``parts`` is empty.
        """
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
        scores = None
        if all(p.scores is not None for p in parts):
            scores = ImageScores.cat([p.scores for p in parts], device)
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
            scores=scores,
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
    scores: bool = False,
) -> ImageResults:
    """Bins, Dice, ECE/ACE/MCE and empty flags per image and class for probabilities and one-hot targets.

    With ``include_background=False`` channel 0 is left out of the results, but the argmax behind
    Dice still sees it (dropping it first would hand its voxels to the foreground classes);
    calibration is marginal per class, so leaving a class out changes no other class's numbers.
    ``floor_draws`` > 0 adds the noise floor from that many label draws (:func:`noise_floor`),
    drawn with ``generator``. ``scores`` adds the Brier score, NLL and equal-mass ECE
    (:func:`~calibtut.metrics.scores.image_scores`, ``num_bins`` equal-mass bins): evaluation
    saves them, validation (every few epochs) does without their float64 pass and sort.

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: the one-hot (or multi-label) target of the same shape.
        num_bins: the number of hard bins (a positive integer).
        multilabel: Dice thresholds each channel at 0.5 instead of an argmax.
        include_background: score channel 0 too.
        floor_draws: label draws behind the noise floor (0: no floor).
        generator: for reproducible floor draws.
        scores: compute the bin-free scores too.

    Returns:
        :class:`ImageResults` ``(B, C)`` (``C - 1`` classes without the background).

    Raises:
        ValueError: a bad ``num_bins``, no class left, or input that ``hard_binning`` refuses.

    Example:
        Class 1 is 0.8 (right), 0.4 and 0.1 (wrong, right): gaps 0.2, 0.6 and 0.1, ACE 0.3.

        >>> import torch
        >>> p = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])   # 2 classes, 3 voxels
        >>> y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
        >>> image_results(p, y, num_bins=10, include_background=False).errors.ace
        tensor([[0.3000]])
    """
    num_bins = _check_num_bins(num_bins)
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
        scores=image_scores(probs, target, num_bins) if scores else None,
    )


class CumulativeCalibration(CumulativeIterationMetric):
    """MONAI-style accumulator of per-image bins: call it on each batch, then ``aggregate()``.

    It keeps only ``(B, C, 3, num_bins)`` numbers per batch, never the images, and its
    aggregate gives per-image (macro) and pooled (micro) ECE/ACE/MCE and the dataset
    reliability histograms, all from the same bins.

    Args:
        num_bins: the number of hard bins (a positive integer).
        include_background: score channel 0 too.

    Raises:
        ValueError: ``num_bins`` is not a positive integer.

    Example:
        >>> import torch
        >>> p = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])   # 2 classes, 3 voxels
        >>> y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
        >>> metric = CumulativeCalibration(num_bins=10)
        >>> for batch in range(2):                      # one call per batch
        ...     _ = metric(p, y)
        >>> result = metric.aggregate()
        >>> result["macro_ace"], result["micro_ace"], result["histogram"].shape
        (tensor([0.3000, 0.3000]), tensor([0.3000, 0.3000]), torch.Size([2, 10, 10]))
    """

    def __init__(self, num_bins: int = 20, include_background: bool = True) -> None:
        super().__init__()
        self.num_bins = _check_num_bins(num_bins)
        self.include_background = include_background

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        y_pred, y = _drop_background(y_pred, y, self.include_background)
        bins = hard_binning(y_pred, y, self.num_bins)
        return torch.stack([bins.pred_sum, bins.target_sum, bins.count], dim=2).detach()

    def bins(self) -> BinStats:
        """All accumulated per-image bins.

        Returns:
            :class:`~calibtut.binning.BinStats` of every image seen since the last ``reset()``.

        Raises:
            ValueError: no batch was seen.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("CumulativeCalibration has no data: call it on at least one batch.")
        return BinStats(data[:, :, 0], data[:, :, 1], data[:, :, 2])

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
        """Macro and micro ECE/ACE/MCE per class, per-image errors, and the reliability histograms.

        Returns:
            A dict: ``"per_image"`` (:class:`CalibrationErrors` ``(images, C)``),
            ``"histogram"`` (``(C, num_bins, num_bins)``), and ``"macro_ece"``, ``"micro_ece"``
            (and the same for ``ace`` and ``mce``), each ``(C,)``.

        Raises:
            ValueError: no batch was seen.
        """
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
