"""What the reliability figures show, prepared from bins: per-image reliability diagrams, dataset
reliability histograms and the direction of their miscalibration. Plots only draw these.

The examples share one image of four voxels in four bins: 0.2 twice (targets 0 and 1: bin 0,
mean target 0.5) and 0.9 twice (targets 1 and 1: bin 3, mean target 1).

Example:
    >>> import torch
    >>> from calibtut.binning import hard_binning
    >>> from calibtut.metrics.figures import reliability
    >>> bins = hard_binning(torch.tensor([[[0.2, 0.2, 0.9, 0.9]]]), torch.tensor([[[0., 1., 1., 1.]]]), 4)
    >>> reliability(bins).gap
    tensor([[[0.3000,    nan,    nan, 0.1000]]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from calibtut.binning import BinStats, hard_bin_index
from calibtut.metrics.errors import CalibrationErrors, calibration_errors


@dataclass(frozen=True)
class Reliability:
    """What a reliability diagram shows, per image and class: ``(B, C, num_bins)`` tensors.

    ``mean_pred``/``mean_target``/``gap`` are NaN in empty bins; ``errors`` are the image's
    ECE/ACE/MCE and the MCE's bin, computed from the same bins, so the numbers printed on a
    diagram and the bin it frames can never disagree with the metrics.

    Args:
        mean_pred: mean prediction per bin (NaN where empty).
        mean_target: mean target (the bin's accuracy) per bin (NaN where empty).
        gap: ``|mean_pred - mean_target|`` per bin (NaN where empty).
        count: voxels (or soft weight) per bin.
        occupied: which bins hold data.
        errors: the images' :class:`CalibrationErrors` from the same bins.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> r = reliability(hard_binning(p, y, 4))
        >>> r.num_images, r.num_classes, r.num_bins
        (1, 1, 4)
        >>> r.mean_target, r.errors.mce_bin
        (tensor([[[0.5000,    nan,    nan, 1.0000]]]), tensor([[0]]))

    Taught in notebooks/01_what_is_calibration.
    """

    mean_pred: torch.Tensor
    mean_target: torch.Tensor
    gap: torch.Tensor
    count: torch.Tensor
    occupied: torch.Tensor
    errors: CalibrationErrors

    @property
    def num_bins(self) -> int:
        """The number of bins."""
        return self.count.shape[-1]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return self.count.shape[1]

    @property
    def num_images(self) -> int:
        """The number of images."""
        return self.count.shape[0]


def reliability(bins: BinStats) -> Reliability:
    """Prepare per-image reliability diagrams: bin means, gaps, counts and the errors.

    Args:
        bins: per image and class bins (e.g. a run's ``bins.npz``).

    Returns:
        :class:`Reliability`, what :func:`calibtut.plots.reliability_diagram` draws.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> r = reliability(hard_binning(p, y, 4))
        >>> r.mean_pred, r.gap
        (tensor([[[0.2000,    nan,    nan, 0.9000]]]), tensor([[[0.3000,    nan,    nan, 0.1000]]]))

    Taught in notebooks/01_what_is_calibration, 03_training_with_calibration_losses and
    08_exploring_reliability.
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


def dataset_reliability_histogram(bins: BinStats) -> torch.Tensor:
    """Per class a ``num_bins x num_bins`` count matrix ``(C, num_bins, num_bins)``.

    For every image and every occupied confidence bin ``k`` it counts one at
    ``[class, j, k]``, where ``j`` is the (hard) bin of that bin's mean ground truth. Summing
    the results of several batches gives the dataset's histogram without keeping any image.

    Args:
        bins: per image and class bins ``(B, C, num_bins)``.

    Returns:
        int64 counts ``(C, num_bins, num_bins)``: ``[class, ground-truth bin, confidence bin]``.

    Example:
        Confidence bin 0's mean target 0.5 lies on the edge of bins 1 and 2 and, binned as
        MONAI bins it, counts at ground-truth bin 1; confidence bin 3 (mean target 1) counts at
        ground-truth bin 3, on the diagonal:

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> dataset_reliability_histogram(hard_binning(p, y, 4))
        tensor([[[0, 0, 0, 0],
                 [1, 0, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 1]]])
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
    over the images, and both averaged over the classes (the "average" panel: images per class).

    Args:
        histogram: ``(C, num_bins, num_bins)`` counts (float64).
        pooled_count: ``(C, num_bins)`` voxels per confidence bin, summed over the images.
        average: ``(num_bins, num_bins)``, the histogram averaged over the classes.
        average_pooled_count: ``(num_bins,)``, the pooled counts averaged over the classes.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> d = dataset_reliability(hard_binning(p, y, 4))
        >>> d.num_classes, d.num_bins
        (1, 4)
        >>> d.pooled_count
        tensor([[2., 0., 0., 2.]], dtype=torch.float64)

    Taught in notebooks/03_training_with_calibration_losses and 08_exploring_reliability.
    """

    histogram: torch.Tensor
    pooled_count: torch.Tensor
    average: torch.Tensor
    average_pooled_count: torch.Tensor

    @property
    def num_bins(self) -> int:
        """The number of bins (on both axes)."""
        return self.histogram.shape[-1]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return self.histogram.shape[0]


def dataset_reliability(bins: BinStats) -> DatasetReliability:
    """Prepare the dataset reliability histograms of ``bins`` (every image, every class).

    Args:
        bins: per image and class bins of a test set.

    Returns:
        :class:`DatasetReliability`, what :func:`calibtut.plots.dataset_reliability_histograms`
        draws.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> dataset_reliability(hard_binning(p, y, 4)).average
        tensor([[0., 0., 0., 0.],
                [1., 0., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 0., 1.]], dtype=torch.float64)

    Taught in notebooks/03_training_with_calibration_losses and 08_exploring_reliability.
    """
    histogram = dataset_reliability_histogram(bins).double()
    pooled = bins.pooled().count[0].double()
    return DatasetReliability(histogram, pooled, histogram.mean(0), pooled.mean(0))


@dataclass(frozen=True)
class ConfidenceDirection:
    """Per class, the fractions of a dataset histogram's counts that are overconfident, on the
    diagonal and underconfident (each ``(C,)``; they add up to 1).

    Args:
        overconfident: the share of counts whose confidence is more extreme than their truth.
        calibrated: the share on the diagonal.
        underconfident: the share whose confidence is less extreme than their truth.

    Example:
        >>> import torch
        >>> histogram = torch.zeros(1, 4, 4)
        >>> histogram[0, 3, 3] = 3   # confident and right: on the diagonal
        >>> histogram[0, 1, 3] = 1   # confidence bin 3, truth bin 1: overconfident
        >>> confidence_direction(histogram).overconfident
        tensor([0.2500], dtype=torch.float64)

    Taught in notebooks/08_exploring_reliability.
    """

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

    Example:
        Confidence bin 0 (below 0.5) counts at truth bin 1: too sure of the class's absence,
        overconfident. Confidence bin 3 counts at truth bin 3: on the diagonal.

        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
        >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
        >>> d = confidence_direction(dataset_reliability_histogram(hard_binning(p, y, 4)))
        >>> [float(share) for share in (d.overconfident, d.calibrated, d.underconfident)]
        [0.5, 0.5, 0.0]

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
