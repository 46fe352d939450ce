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
    "METRIC_TITLES",
    "CalibrationErrors",
    "calibration_errors",
    "calibration_error",
    "discretize",
    "dice",
    "FLOOR_DRAWS",
    "FloorDraws",
    "NoiseFloor",
    "draw_floor_labels",
    "noise_floor",
    "ImageResults",
    "image_results",
    "macro_average",
    "macro_errors",
    "micro_errors",
    "Reliability",
    "reliability",
    "DatasetReliability",
    "dataset_reliability",
    "ConfidenceDirection",
    "confidence_direction",
    "dataset_reliability_histogram",
    "CumulativeCalibration",
]

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


@dataclass(frozen=True)
class Reliability:
    """What a reliability diagram shows, per image and class: ``(B, C, num_bins)`` tensors.

    ``mean_pred``/``mean_target``/``gap`` are NaN in empty bins; ``errors`` are the image's
    ECE/ACE/MCE and the MCE's bin, computed from the same bins, so the numbers printed on a
    diagram and the bin it frames can never disagree with the metrics.
    """

    mean_pred: torch.Tensor
    mean_target: torch.Tensor
    gap: torch.Tensor
    count: torch.Tensor
    occupied: torch.Tensor
    errors: CalibrationErrors

    @property
    def num_bins(self) -> int:
        return self.count.shape[-1]

    @property
    def num_classes(self) -> int:
        return self.count.shape[1]

    @property
    def num_images(self) -> int:
        return self.count.shape[0]


def reliability(bins: BinStats) -> Reliability:
    """Prepare per-image reliability diagrams: bin means, gaps, counts and the errors.

    Args:
        bins: per image and class bins (e.g. a run's ``bins.npz``).

    Returns:
        :class:`Reliability`, what :func:`calibtut.plots.reliability_diagram` draws.

    Taught in notebooks/01_what_is_calibration.
    """
    mean_pred, mean_target = bins.means()
    return Reliability(
        mean_pred=mean_pred,
        mean_target=mean_target,
        gap=(mean_pred - mean_target).abs(),
        count=bins.count,
        occupied=bins.occupied,
        errors=calibration_errors(bins),
    )


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


# --- the noise floor ---------------------------------------------------------------------------

FLOOR_DRAWS = 32
"""Label draws per image behind a noise floor: its Monte Carlo standard error is then about a
sixth of the spread of one draw's ACE (``NoiseFloor.ace_se`` gives it per image and class)."""


@dataclass(frozen=True)
class FloorDraws:
    """Per-bin target sums of labels drawn from a model's own probabilities: ``(B, C, K, num_bins)``.

    Draw ``k`` replaces each voxel's ground truth by ``y ~ Bernoulli(p)``: the labels of a model
    that is perfectly calibrated by construction. The bins' counts and prediction sums do not
    depend on the labels, so these sums are all a floor needs; like the bins they add up, so they
    re-bin and pool exactly (a pooled draw is a draw of the pooled labels).
    """

    target_sums: torch.Tensor

    @property
    def num_draws(self) -> int:
        return self.target_sums.shape[2]

    def rebinned(self, num_bins: int) -> FloorDraws:
        """Merge groups of adjacent bins to ``num_bins`` (a divisor of the current number)."""
        n = self.target_sums.shape[-1]
        if num_bins < 1 or n % num_bins:
            raise ValueError(f"num_bins={num_bins} must divide the stored {n} bins.")
        t = self.target_sums
        return FloorDraws(t.reshape(*t.shape[:-1], num_bins, n // num_bins).sum(-1))

    def pooled(self) -> FloorDraws:
        """Summed over the image axis (kept, size 1): the draws of the pooled ("micro") bins."""
        return FloorDraws(self.target_sums.sum(0, keepdim=True))

    def select(self, index: slice | int) -> FloorDraws:
        """The draws of some images (batch axis kept)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return FloorDraws(self.target_sums[index])

    @staticmethod
    def cat(parts: list[FloorDraws]) -> FloorDraws:
        return FloorDraws(torch.cat([p.target_sums for p in parts]))


@dataclass(frozen=True)
class NoiseFloor:
    """The ACE and MCE that a perfectly calibrated model with the same probabilities would show,
    per image and class ``(B, C)``, with the Monte Carlo standard errors of both."""

    ace: torch.Tensor
    mce: torch.Tensor
    ace_se: torch.Tensor
    mce_se: torch.Tensor


def draw_floor_labels(
    probs: torch.Tensor,
    num_bins: int = 20,
    draws: int = FLOOR_DRAWS,
    generator: torch.Generator | None = None,
) -> FloorDraws:
    """Draw ``draws`` label maps from ``probs`` (each class channel on its own) and bin them.

    Args:
        probs: probabilities ``(B, C, *spatial)``, the classes as the metrics score them.
        num_bins: the hard bins of the metrics.
        draws: how many label maps per image.
        generator: for reproducible draws (on the device of ``probs``).

    Returns:
        :class:`FloorDraws`; :func:`noise_floor` turns them and the image's bins into the floor.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}.")
    flat = probs.detach().flatten(2).float()
    B, C, N = flat.shape
    index = hard_bin_index(flat, num_bins)
    sums = torch.zeros(B, C, draws, num_bins, dtype=torch.float32, device=flat.device)
    for k in range(draws):
        labels = torch.bernoulli(flat.clamp(0, 1), generator=generator)
        sums[:, :, k].scatter_add_(-1, index, labels)
    return FloorDraws(sums)


def noise_floor(bins: BinStats, draws: FloorDraws) -> NoiseFloor:
    """The expected ACE and MCE of a perfectly calibrated predictor with the bins' probabilities.

    Per image and class, the ACE and MCE of each draw's labels in the same bins, averaged over
    the draws. Per-image ACE means something only well above its floor: a bin of a few voxels
    shows a gap even when the model is calibrated.

    Args:
        bins: the images' hard bins (their counts and prediction sums are used).
        draws: :func:`draw_floor_labels` of the same images and classes, at the same number of bins.

    Returns:
        :class:`NoiseFloor` ``(B, C)``.

    Example:
        One voxel at p = 0.3 in its own bin: its label is 1 with probability 0.3 (gap 0.7) and
        0 otherwise (gap 0.3), so the floor is 0.3 * 0.7 + 0.7 * 0.3 = 0.42.

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.3]]])
        >>> bins = hard_binning(p, torch.zeros_like(p))
        >>> g = torch.Generator().manual_seed(0)
        >>> floor = noise_floor(bins, draw_floor_labels(p, draws=4000, generator=g))
        >>> abs(floor.ace.item() - 0.42) < 4 * floor.ace_se.item()
        True

    Taught in notebooks/01_what_is_calibration and 03_training_with_calibration_losses.
    """
    t = draws.target_sums.to(bins.count.dtype)
    if t.shape[:2] != bins.count.shape[:2] or t.shape[-1] != bins.num_bins:
        raise ValueError(
            f"floor draws of shape {tuple(t.shape)} do not fit bins of shape "
            f"{tuple(bins.count.shape)}."
        )
    K = t.shape[2]
    B, C, n = bins.count.shape
    drawn = BinStats(
        bins.pred_sum.unsqueeze(2).expand(B, C, K, n).reshape(B, C * K, n),
        t.reshape(B, C * K, n),
        bins.count.unsqueeze(2).expand(B, C, K, n).reshape(B, C * K, n),
        bins.empty_weight,
    )
    errors = calibration_errors(drawn)
    ace, mce = errors.ace.view(B, C, K), errors.mce.view(B, C, K)
    root = K**0.5
    spread = {
        name: v.std(-1, unbiased=True) / root if K > 1 else torch.full_like(v[..., 0], float("nan"))
        for name, v in (("ace", ace), ("mce", mce))
    }
    return NoiseFloor(ace.mean(-1), mce.mean(-1), spread["ace"], spread["mce"])


# --- per-image results ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class DatasetReliability:
    """What the dataset reliability histograms show: per class a ``(num_bins, num_bins)`` count
    matrix (``[class, ground-truth bin, confidence bin]``), the voxels per confidence bin pooled
    over the images, and both averaged over the classes (the "average" panel: images per class)."""

    histogram: torch.Tensor
    pooled_count: torch.Tensor
    average: torch.Tensor
    average_pooled_count: torch.Tensor

    @property
    def num_bins(self) -> int:
        return self.histogram.shape[-1]

    @property
    def num_classes(self) -> int:
        return self.histogram.shape[0]


def dataset_reliability(bins: BinStats) -> DatasetReliability:
    """Prepare the dataset reliability histograms of ``bins`` (every image, every class).

    Args:
        bins: per image and class bins of a test set.

    Returns:
        :class:`DatasetReliability`, what :func:`calibtut.plots.dataset_reliability_histograms`
        draws.

    Taught in notebooks/03_training_with_calibration_losses and 08_exploring_reliability.
    """
    histogram = dataset_reliability_histogram(bins).double()
    pooled = bins.pooled().count[0].double()
    return DatasetReliability(histogram, pooled, histogram.mean(0), pooled.mean(0))


@dataclass(frozen=True)
class ConfidenceDirection:
    """Per class, the fractions of a dataset histogram's counts that are overconfident, on the
    diagonal and underconfident (each ``(C,)``; they add up to 1)."""

    overconfident: torch.Tensor
    calibrated: torch.Tensor
    underconfident: torch.Tensor


def confidence_direction(histogram: torch.Tensor) -> ConfidenceDirection:
    """Sort a dataset reliability histogram's counts by the direction of their miscalibration.

    A count at (ground-truth bin ``j``, confidence bin ``k``) is *overconfident* when the
    confidence is more extreme than the truth: at confidence 0.5 or above, truth below it
    (``j < k``); below 0.5, truth above it (``j > k``: too sure of the class's absence).
    *Underconfident* is the opposite, and ``j == k`` is on the diagonal.

    Args:
        histogram: ``(C, num_bins, num_bins)`` counts (:func:`dataset_reliability_histogram`).

    Returns:
        :class:`ConfidenceDirection` (NaN for a class with no count).

    Taught in notebooks/08_exploring_reliability.
    """
    n = histogram.shape[-1]
    truth, confidence = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    upper = confidence >= n // 2
    over = ((truth < confidence) & upper) | ((truth > confidence) & ~upper)
    under = ((truth > confidence) & upper) | ((truth < confidence) & ~upper)
    counts = histogram.double()
    total = counts.sum((-2, -1))
    total = torch.where(total > 0, total, torch.full_like(total, float("nan")))

    def share(mask: torch.Tensor) -> torch.Tensor:
        return (counts * mask.to(counts)).sum((-2, -1)) / total

    return ConfidenceDirection(share(over), share(truth == confidence), share(under))


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
