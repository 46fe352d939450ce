"""Hard and soft binning of probabilities: the one implementation of bins in calibtut.

Every calibration quantity in the package (ECE/ACE/MCE metrics, the mL1-ACE losses,
reliability diagrams, dataset reliability histograms) is computed from the per-image,
per-class bin statistics returned here, so they all agree on where a probability lands.

Conventions (see DESIGN.md):

* Hard bins follow ``monai.metrics.calibration_binning`` exactly: upper edges
  ``linspace(0, 1 + eps32, num_bins + 1)[1:]``, ``torch.bucketize(..., right=False)`` on the
  float32 value, index clamped to ``num_bins - 1``.
* Soft bins share each probability linearly between its two nearest bin centres; below the
  first centre or above the last it belongs wholly to the edge bin. A bin whose total weight is
  under ``empty_weight`` counts as empty.

The fast kernels behind them (every image and class in one scatter-add, chunked, exact MONAI
bins in two operations, one byte per voxel saved for backward) live in
:mod:`calibtut._binning_kernels`; benchmarks/README.md measures them.

Example:
    >>> import torch
    >>> from calibtut.binning import hard_binning
    >>> bins = hard_binning(torch.tensor([[[0.1, 0.2, 0.8]]]), torch.tensor([[[0., 1., 1.]]]), 2)
    >>> bins.count
    tensor([[[2., 1.]]])
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass

import torch

from calibtut import _binning_kernels as kernels

__all__ = [
    "BinStats",
    "bin_edges",
    "bin_centres",
    "hard_bin_index",
    "hard_binning",
    "soft_binning",
    "check_probabilities",
]


@dataclass(frozen=True)
class BinStats:
    """Per image and class bin sums: ``pred_sum``, ``target_sum`` and ``count`` of shape ``(B, C, num_bins)``.

    Sums rather than means are kept because sums add up: pooling images (micro errors),
    merging bins (re-binning at a coarser count) and accumulating a dataset are all additions.
    ``empty_weight`` is the occupancy threshold (0 for hard bins: any count makes a bin occupied).

    Args:
        pred_sum: per bin, the sum of the probabilities that fell in it.
        target_sum: per bin, the sum of their targets (the ground truth).
        count: per bin, how many values fell in it (soft bins: their total weight).
        empty_weight: a bin holding less than this is empty (0: any count makes it occupied).

    Raises:
        ValueError: the three tensors do not share one shape ``(B, C, num_bins)``.

    Example:
        Two bins split at 0.5: 0.1 and 0.2 (targets 0 and 1) in bin 0, 0.8 (target 1) in bin 1.

        >>> import torch
        >>> bins = hard_binning(torch.tensor([[[0.1, 0.2, 0.8]]]), torch.tensor([[[0., 1., 1.]]]), 2)
        >>> bins.num_bins, bins.count
        (2, tensor([[[2., 1.]]]))
        >>> mean_pred, mean_target = bins.means()
        >>> mean_pred, mean_target
        (tensor([[[0.1500, 0.8000]]]), tensor([[[0.5000, 1.0000]]]))

    Taught in notebooks/02_hard_and_soft_binning.
    """

    pred_sum: torch.Tensor
    target_sum: torch.Tensor
    count: torch.Tensor
    empty_weight: float = 0.0

    def __post_init__(self) -> None:
        shapes = {tuple(self.pred_sum.shape), tuple(self.target_sum.shape), tuple(self.count.shape)}
        if len(shapes) != 1 or self.count.ndim != 3:
            raise ValueError(
                "BinStats needs pred_sum, target_sum and count of one shape (B, C, num_bins), got "
                f"{[tuple(t.shape) for t in (self.pred_sum, self.target_sum, self.count)]}."
            )

    @property
    def num_bins(self) -> int:
        """The number of bins (the last axis)."""
        return self.count.shape[-1]

    @property
    def occupied(self) -> torch.Tensor:
        """Boolean mask of bins that hold data (count > 0 and at least ``empty_weight``)."""
        return (self.count > 0) & (self.count >= self.empty_weight)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean prediction and mean target per bin; NaN in empty bins (as MONAI returns them).

        Returns:
            ``(mean_pred, mean_target)``, each ``(B, C, num_bins)``.
        """
        occupied = self.occupied
        safe = torch.where(occupied, self.count, torch.ones_like(self.count))
        nan = torch.full_like(self.count, float("nan"))
        return (
            torch.where(occupied, self.pred_sum / safe, nan),
            torch.where(occupied, self.target_sum / safe, nan),
        )

    def pooled(self) -> BinStats:
        """Bins summed over the image axis (keeping it, size 1): the dataset-level ("micro") bins.

        Returns:
            :class:`BinStats` of shape ``(1, C, num_bins)``.
        """
        return BinStats(
            self.pred_sum.sum(0, keepdim=True),
            self.target_sum.sum(0, keepdim=True),
            self.count.sum(0, keepdim=True),
            self.empty_weight,
        )

    def rebinned(self, num_bins: int) -> BinStats:
        """Merge groups of adjacent bins to ``num_bins`` bins (which must divide the current number).

        Exact for hard bins up to float32 rounding of MONAI's edges: a value lying exactly on a
        shared edge is binned as at the finer count.

        Args:
            num_bins: the coarser number of bins, a divisor of :attr:`num_bins`.

        Returns:
            :class:`BinStats` of shape ``(B, C, num_bins)``.

        Raises:
            ValueError: ``num_bins`` is not a positive integer or does not divide the stored bins.
        """
        num_bins = _check_num_bins(num_bins)
        if self.num_bins % num_bins:
            raise ValueError(f"num_bins={num_bins} must divide the stored {self.num_bins} bins.")
        group = self.num_bins // num_bins

        def merge(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*t.shape[:-1], num_bins, group).sum(-1)

        return BinStats(
            merge(self.pred_sum), merge(self.target_sum), merge(self.count), self.empty_weight
        )

    def select(self, index: slice | int | torch.Tensor) -> BinStats:
        """The bins of some images (index along the batch axis, batch axis kept).

        Args:
            index: an image position, a slice or an index tensor along the batch axis.

        Returns:
            :class:`BinStats` of the chosen images.
        """
        if isinstance(index, int):
            index = slice(index, index + 1)
        return BinStats(
            self.pred_sum[index], self.target_sum[index], self.count[index], self.empty_weight
        )

    @staticmethod
    def cat(parts: list[BinStats]) -> BinStats:
        """Concatenate the bins of several batches along the image axis.

        Args:
            parts: bins of the same classes, number of bins and ``empty_weight``.

        Returns:
            :class:`BinStats` of all their images, in order.

        Raises:
            ValueError: ``parts`` is empty or mixes ``empty_weight`` values.
        """
        if not parts:
            raise ValueError("BinStats.cat needs at least one BinStats.")
        weights = {p.empty_weight for p in parts}
        if len(weights) != 1:
            raise ValueError(
                f"Cannot concatenate bins with different empty_weight values {weights}."
            )
        return BinStats(
            torch.cat([p.pred_sum for p in parts]),
            torch.cat([p.target_sum for p in parts]),
            torch.cat([p.count for p in parts]),
            parts[0].empty_weight,
        )


def bin_edges(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``num_bins + 1`` float32 bin edges of MONAI's ``calibration_binning``.

    The last edge is ``1 + eps32``, so that 1.0 falls inside the last bin; every inner edge
    sits a hair above ``k / num_bins``, so a value on ``k / num_bins`` lands in the bin below.

    Args:
        num_bins: the number of equal-width bins over [0, 1] (a positive integer).
        device: where to create the edges.

    Returns:
        float32 tensor ``(num_bins + 1,)``.

    Raises:
        ValueError: ``num_bins`` is not a positive integer.

    Example:
        >>> bin_edges(4)
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000])
        >>> bool(bin_edges(4)[-1] > 1)
        True
    """
    return kernels.edges(_check_num_bins(num_bins), device)


def bin_centres(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Midpoints of the hard bins: the anchors between which soft binning interpolates.

    Args:
        num_bins: the number of bins (a positive integer).
        device: where to create the centres.

    Returns:
        float32 tensor ``(num_bins,)``.

    Raises:
        ValueError: ``num_bins`` is not a positive integer.

    Example:
        >>> bin_centres(4)
        tensor([0.1250, 0.3750, 0.6250, 0.8750])
    """
    edges = bin_edges(num_bins, device)
    return (edges[:-1] + edges[1:]) / 2


def hard_bin_index(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The hard bin (int64) of every value, exactly as ``monai.metrics.calibration_binning`` assigns it.

    NaN goes to bin 0 and values outside [0, 1] to the nearest end bin.

    Args:
        probs: probabilities of any shape.
        num_bins: the number of bins (a positive integer).

    Returns:
        int64 tensor of the shape of ``probs``: each value's bin in ``[0, num_bins - 1]``.

    Raises:
        ValueError: ``num_bins`` is not a positive integer.

    Example:
        0.25 lies on the edge between bins 0 and 1 of four, and belongs to the bin below:

        >>> import torch
        >>> hard_bin_index(torch.tensor([0.0, 0.25, 0.3, 1.0]), 4)
        tensor([0, 0, 1, 3])

    Taught in notebooks/02_hard_and_soft_binning.
    """
    return kernels.hard_index(probs, _check_num_bins(num_bins))


def check_probabilities(probs: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error for inputs that would otherwise give silent NaNs or wrong bins.

    The checks of :func:`hard_binning` and :func:`soft_binning` (``validate=True``), on their own.

    Args:
        probs: probabilities ``(B, C, *spatial)``, floating point, in [0, 1].
        target: the one-hot target of the same shape (values in [0, 1]).

    Raises:
        TypeError: an input is not a tensor, ``probs`` is not floating point, or ``target`` is
            complex.
        ValueError: the shapes differ or have fewer than 3 dims, an input is empty, or a value is
            NaN, inf or outside [0, 1].

    Example:
        >>> import torch
        >>> check_probabilities(torch.tensor([[[0.2, 0.9]]]), torch.tensor([[[0., 1.]]]))
        >>> check_probabilities(torch.tensor([[[0.2, 1.5]]]), torch.tensor([[[0., 1.]]]))
        Traceback (most recent call last):
        ...
        ValueError: probs must lie in [0, 1], got values in [0.2, 1.5]; ...
    """
    _check_shapes(probs, target)
    _check_values(probs, target)


def _check_shapes(probs: torch.Tensor, target: torch.Tensor) -> None:
    """The checks that need no look at the values (so no GPU synchronisation)."""
    for name, t in (("probs", probs), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
    if probs.ndim < 3:
        raise ValueError(
            f"probs must have shape (B, C, *spatial) with at least 3 dims, got shape {tuple(probs.shape)}."
        )
    if probs.shape != target.shape:
        raise ValueError(
            f"probs and target must have the same shape, got {tuple(probs.shape)} and {tuple(target.shape)}."
        )
    if not probs.is_floating_point():
        raise TypeError(
            f"probs must be a floating-point tensor of probabilities, got {probs.dtype}."
        )
    if target.is_complex():
        raise TypeError(f"target must be real (one-hot), got {target.dtype}.")
    _check_not_empty("probs", probs)


def _check_not_empty(name: str, t: torch.Tensor) -> None:
    """The clear error for a tensor without elements (before any min/max of it)."""
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}).")


def _check_values(probs: torch.Tensor, target: torch.Tensor) -> None:
    """One min/max pass per tensor: NaN, inf and out-of-range values all fail ``0 <= min, max <= 1``."""
    lo, hi = _extremes("probs", probs)
    if not (lo >= 0 and hi <= 1):  # written so that NaN fails too
        if not torch.isfinite(probs.detach()).all():
            raise ValueError("probs contains NaN or inf values.")
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "apply softmax/sigmoid first (or set the loss's activation)."
        )
    if target.dtype == torch.bool:
        return
    lo, hi = _extremes("target", target)
    if not (lo >= 0 and hi <= 1):
        if target.is_floating_point() and not torch.isfinite(target.detach()).all():
            raise ValueError("target contains NaN or inf values.")
        raise ValueError(
            f"target must be one-hot (values in [0, 1]) with the shape of probs, got values in "
            f"[{lo:.4g}, {hi:.4g}]; for a label map (B, 1, *spatial) use to_onehot_y=True in the "
            "losses or monai.networks.one_hot."
        )


def _extremes(name: str, t: torch.Tensor) -> tuple[float, float]:
    """Minimum and maximum in one pass and one device-to-host copy (NaN if any value is NaN).

    An empty tensor has neither: it is refused with the "is empty" error, never reaches aminmax.
    """
    _check_not_empty(name, t)
    lo, hi = torch.aminmax(t.detach())
    return tuple(torch.stack([lo, hi]).cpu().double().tolist())


def _check_num_bins(num_bins: int) -> int:
    """``num_bins`` as an int: the one rule for every bin count of binning, losses and metrics.

    Integer-like values (Python and numpy integers, anything with ``__index__``) are accepted;
    bools (also numpy and torch ones), floats such as 20.0 and values below 1 are refused.
    """
    is_bool = isinstance(num_bins, bool) or getattr(num_bins, "dtype", None) == torch.bool
    try:
        value = None if is_bool else operator.index(num_bins)
    except TypeError:
        value = None
    if value is None or value < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    return value


def _check_weight(name: str, value: float) -> float:
    """``value`` as a float, if it is a finite real number >= 0 (not a bool), else a ValueError.

    The one rule for the loss weights and ``empty_weight``: NaN would pass a plain
    ``value < 0`` test and then silently drop (or poison) a term.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0 (not a bool), got {value!r}.")
    return float(value)


def _binning(probs, target, num_bins, function, empty_weight, validate) -> BinStats:
    num_bins = _check_num_bins(num_bins)
    _check_shapes(probs, target)
    if validate:
        _check_values(probs, target)
    probs, target = kernels.image_rows_friendly(probs), kernels.image_rows_friendly(target.detach())
    pred_sum, target_sum, count = function.apply(probs, target, num_bins, not validate)
    return BinStats(pred_sum, target_sum, count, empty_weight)


def hard_binning(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int = 20, validate: bool = True
) -> BinStats:
    """Hard-bin ``probs`` (B, C, *spatial) with their one-hot ``target``, per image and class.

    Counts and means equal ``monai.metrics.calibration_binning``; ``pred_sum`` is differentiable
    in ``probs`` (each value's gradient is that of its bin's sum). ``validate=False`` skips the
    value checks (NaN, range), which cost a host-device synchronisation on a GPU; invalid values
    then still land in a valid bin (NaN in bin 0, out-of-range values in the end bins) and NaN
    propagates to the sums.

    Args:
        probs: probabilities ``(B, C, *spatial)``, floating point, in [0, 1].
        target: the one-hot target of the same shape.
        num_bins: the number of equal-width bins over [0, 1] (a positive integer).
        validate: check the values (NaN, inf, range); the shape checks always run.

    Returns:
        :class:`BinStats` ``(B, C, num_bins)`` with ``empty_weight`` 0.

    Raises:
        TypeError: an input is not a tensor, or ``probs`` is not floating point.
        ValueError: bad shapes, an empty input, a bad ``num_bins``, or (``validate``) values that
            are NaN, inf or outside [0, 1].

    Example:
        Two bins split at 0.5; 0.5 itself lies on the edge and belongs to the bin below:

        >>> import torch
        >>> probs = torch.tensor([[[0.1, 0.2, 0.5, 0.6, 0.9]]])
        >>> target = torch.tensor([[[0.0, 1.0, 0.0, 1.0, 1.0]]])
        >>> bins = hard_binning(probs, target, num_bins=2)
        >>> bins.count, bins.target_sum
        (tensor([[[3., 2.]]]), tensor([[[1., 2.]]]))
        >>> bins.pred_sum
        tensor([[[0.8000, 1.5000]]])

    Taught in notebooks/01_what_is_calibration and 02_hard_and_soft_binning.
    """
    return _binning(probs, target, num_bins, kernels.HardBinSums, 0.0, validate)


def soft_binning(
    probs: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 20,
    empty_weight: float = 0.01,
    validate: bool = True,
) -> BinStats:
    """Soft-bin ``probs`` (B, C, *spatial): linear shares between the two nearest bin centres.

    ``count`` holds effective weights (they sum to the number of voxels); all three sums are
    differentiable in ``probs``, including through the shares themselves, which is what lets
    the soft mL1-ACE move a probability towards a better bin.

    Args:
        probs: probabilities ``(B, C, *spatial)``, floating point, in [0, 1].
        target: the one-hot target of the same shape.
        num_bins: the number of bins (a positive integer).
        empty_weight: a bin whose total weight is under this is empty (a finite number >= 0).
        validate: check the values (NaN, inf, range); the shape checks always run.

    Returns:
        :class:`BinStats` ``(B, C, num_bins)`` carrying ``empty_weight``.

    Raises:
        TypeError: an input is not a tensor, or ``probs`` is not floating point.
        ValueError: bad shapes, an empty input, a bad ``num_bins`` or ``empty_weight``, or
            (``validate``) values that are NaN, inf or outside [0, 1].

    Example:
        Two bins, centres 0.25 and 0.75: 0.5 is halfway (half to each), 0.375 is a quarter of
        the way up (0.75 to bin 0, 0.25 to bin 1):

        >>> import torch
        >>> soft_binning(torch.tensor([[[0.5, 0.375]]]), torch.zeros(1, 1, 2), 2).count
        tensor([[[1.2500, 0.7500]]])

    Taught in notebooks/02_hard_and_soft_binning.
    """
    empty_weight = _check_weight("empty_weight", empty_weight)
    return _binning(probs, target, num_bins, kernels.SoftBinSums, empty_weight, validate)
