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
"""

from __future__ import annotations

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
        return self.count.shape[-1]

    @property
    def occupied(self) -> torch.Tensor:
        """Boolean mask of bins that hold data (count > 0 and at least ``empty_weight``)."""
        return (self.count > 0) & (self.count >= self.empty_weight)

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean prediction and mean target per bin; NaN in empty bins (as MONAI returns them)."""
        occupied = self.occupied
        safe = torch.where(occupied, self.count, torch.ones_like(self.count))
        nan = torch.full_like(self.count, float("nan"))
        return (
            torch.where(occupied, self.pred_sum / safe, nan),
            torch.where(occupied, self.target_sum / safe, nan),
        )

    def pooled(self) -> BinStats:
        """Bins summed over the image axis (keeping it, size 1): the dataset-level ("micro") bins."""
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
        """
        if num_bins < 1 or self.num_bins % num_bins:
            raise ValueError(f"num_bins={num_bins} must divide the stored {self.num_bins} bins.")
        group = self.num_bins // num_bins

        def merge(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(*t.shape[:-1], num_bins, group).sum(-1)

        return BinStats(
            merge(self.pred_sum), merge(self.target_sum), merge(self.count), self.empty_weight
        )

    def select(self, index: slice | int | torch.Tensor) -> BinStats:
        """The bins of some images (index along the batch axis, batch axis kept)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return BinStats(
            self.pred_sum[index], self.target_sum[index], self.count[index], self.empty_weight
        )

    @staticmethod
    def cat(parts: list[BinStats]) -> BinStats:
        """Concatenate the bins of several batches along the image axis."""
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
    """The ``num_bins + 1`` float32 bin edges of MONAI's ``calibration_binning``."""
    _check_num_bins(num_bins)
    return kernels.edges(num_bins, device)


def bin_centres(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Midpoints of the hard bins: the anchors between which soft binning interpolates."""
    edges = bin_edges(num_bins, device)
    return (edges[:-1] + edges[1:]) / 2


def hard_bin_index(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The hard bin (int64) of every value, exactly as ``monai.metrics.calibration_binning`` assigns it.

    NaN goes to bin 0 and values outside [0, 1] to the nearest end bin.
    """
    _check_num_bins(num_bins)
    return kernels.hard_index(probs, num_bins)


def check_probabilities(probs: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error for inputs that would otherwise give silent NaNs or wrong bins."""
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
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)}).")


def _check_values(probs: torch.Tensor, target: torch.Tensor) -> None:
    """One min/max pass per tensor: NaN, inf and out-of-range values all fail ``0 <= min, max <= 1``."""
    lo, hi = _extremes(probs)
    if not (lo >= 0 and hi <= 1):  # written so that NaN fails too
        if not torch.isfinite(probs.detach()).all():
            raise ValueError("probs contains NaN or inf values.")
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "apply softmax/sigmoid first (or set the loss's activation)."
        )
    if target.dtype == torch.bool:
        return
    lo, hi = _extremes(target)
    if not (lo >= 0 and hi <= 1):
        if target.is_floating_point() and not torch.isfinite(target.detach()).all():
            raise ValueError("target contains NaN or inf values.")
        raise ValueError(
            f"target must be one-hot (values in [0, 1]) with the shape of probs, got values in "
            f"[{lo:.4g}, {hi:.4g}]; for a label map (B, 1, *spatial) use to_onehot_y=True in the "
            "losses or monai.networks.one_hot."
        )


def _extremes(t: torch.Tensor) -> tuple[float, float]:
    """Minimum and maximum in one pass and one device-to-host copy (NaN if any value is NaN)."""
    lo, hi = torch.aminmax(t.detach())
    return tuple(torch.stack([lo, hi]).cpu().double().tolist())


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")


def _binning(probs, target, num_bins, function, empty_weight, validate) -> BinStats:
    _check_num_bins(num_bins)
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
    differentiable in ``probs``, including through the shares themselves.
    """
    if not empty_weight >= 0:
        raise ValueError(f"empty_weight must be >= 0, got {empty_weight!r}.")
    return _binning(probs, target, num_bins, kernels.SoftBinSums, float(empty_weight), validate)
