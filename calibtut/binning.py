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

Both are vectorised over images and classes (one ``bincount`` per statistic over a flattened
``(image, class, bin)`` index) and use O(B*C*N) memory: the backward passes recompute bin
indices from the saved probabilities instead of storing per-voxel weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "BinStats",
    "bin_edges",
    "bin_centres",
    "hard_bin_index",
    "hard_binning",
    "soft_binning",
    "check_probabilities",
]

_EPS32 = torch.finfo(torch.float32).eps


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
            raise ValueError(f"Cannot concatenate bins with different empty_weight values {weights}.")
        return BinStats(
            torch.cat([p.pred_sum for p in parts]),
            torch.cat([p.target_sum for p in parts]),
            torch.cat([p.count for p in parts]),
            parts[0].empty_weight,
        )


def bin_edges(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``num_bins + 1`` float32 bin edges of MONAI's ``calibration_binning``."""
    _check_num_bins(num_bins)
    return torch.linspace(0.0, 1.0 + _EPS32, num_bins + 1, device=device)


def bin_centres(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Midpoints of the hard bins: the anchors between which soft binning interpolates."""
    edges = bin_edges(num_bins, device)
    return (edges[:-1] + edges[1:]) / 2


def hard_bin_index(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The hard bin (int32) of every value, exactly as ``monai.metrics.calibration_binning`` assigns it."""
    upper = bin_edges(num_bins, probs.device)[1:]
    index = torch.bucketize(probs.detach().float(), upper, right=False, out_int32=True)
    return index.clamp_(max=num_bins - 1)


def check_probabilities(probs: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error for inputs that would otherwise give silent NaNs or wrong bins."""
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
        raise TypeError(f"probs must be a floating-point tensor of probabilities, got {probs.dtype}.")
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)}).")
    p = probs.detach()
    if not torch.isfinite(p).all():
        raise ValueError("probs contains NaN or inf values.")
    lo, hi = torch.aminmax(p)
    if lo < 0 or hi > 1:
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo.item():.4g}, {hi.item():.4g}]; "
            "apply softmax/sigmoid first (or set the loss's activation)."
        )
    t = target.detach()
    if t.is_floating_point():
        if not torch.isfinite(t).all():
            raise ValueError("target contains NaN or inf values.")
        lo, hi = torch.aminmax(t)
        if lo < 0 or hi > 1:
            raise ValueError(
                f"target must be one-hot / in [0, 1], got values in [{lo.item():.4g}, {hi.item():.4g}]."
            )
    elif t.dtype != torch.bool and (t.min() < 0 or t.max() > 1):
        raise ValueError(
            "target must be one-hot (0/1) with the shape of probs; for a label map "
            "(B, 1, *spatial) use to_onehot_y=True in the losses or monai.networks.one_hot."
        )


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")


def _accumulation_dtype(probs: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) accumulates in float32."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def _rows(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """View (B, C, *spatial) as (B*C, N) rows in the accumulation dtype; target carries no grad."""
    rows = probs.shape[0] * probs.shape[1]
    dtype = _accumulation_dtype(probs)
    return probs.reshape(rows, -1).to(dtype), target.detach().reshape(rows, -1).to(dtype)


def _row_offsets(rows: int, num_bins: int, device: torch.device) -> torch.Tensor:
    """Offsets that make a per-row bin index unique across rows, so one bincount serves all rows."""
    return (torch.arange(rows, device=device, dtype=torch.int32) * num_bins).unsqueeze(1)


def _hard_flat_index(p: torch.Tensor, num_bins: int) -> torch.Tensor:
    return (hard_bin_index(p, num_bins) + _row_offsets(p.shape[0], num_bins, p.device)).view(-1)


class _HardBinSums(torch.autograd.Function):
    """Per-row hard-bin sums; d pred_sum[bin(n)] / d p[n] = 1, counts and targets are constants."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, t: torch.Tensor, num_bins: int):  # noqa: D102
        size = p.shape[0] * num_bins
        index = _hard_flat_index(p, num_bins)
        count = torch.bincount(index, minlength=size).to(p.dtype)
        pred_sum = torch.bincount(index, weights=p.reshape(-1), minlength=size)
        target_sum = torch.bincount(index, weights=t.reshape(-1), minlength=size)
        ctx.save_for_backward(p)
        ctx.num_bins = num_bins
        ctx.mark_non_differentiable(target_sum, count)
        return pred_sum, target_sum, count

    @staticmethod
    def backward(ctx, grad_pred, _grad_target, _grad_count):  # noqa: D102
        (p,) = ctx.saved_tensors
        index = _hard_flat_index(p, ctx.num_bins)
        return grad_pred[index].view_as(p), None, None


def _soft_neighbours(p: torch.Tensor, num_bins: int):
    """Flat (lower, upper) neighbouring-bin indices, the upper bin's share, and the centre spacing.

    Between two centres the share of the upper bin rises linearly from 0 to 1; outside the
    outermost centres lower == upper and the edge bin takes the whole value.
    """
    centres = bin_centres(num_bins, p.device).to(p.dtype)
    upper = torch.bucketize(p.detach(), centres, right=False, out_int32=True)  # centres below p
    lower = (upper - 1).clamp_(min=0)
    upper.clamp_(max=num_bins - 1)
    spacing = centres[1] - centres[0] if num_bins > 1 else torch.ones((), dtype=p.dtype)
    w_upper = torch.where(lower != upper, (p - centres[lower]) / spacing, torch.zeros_like(p))
    offsets = _row_offsets(p.shape[0], num_bins, p.device)
    return (lower + offsets).view(-1), (upper + offsets).view(-1), w_upper, spacing


class _SoftBinSums(torch.autograd.Function):
    """Per-row soft-bin sums, differentiable through both the values and the bin shares."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, t: torch.Tensor, num_bins: int):  # noqa: D102
        size = p.shape[0] * num_bins
        lower, upper, w_upper, _ = _soft_neighbours(p, num_bins)
        w_lower = 1 - w_upper

        def shared(values: torch.Tensor | None) -> torch.Tensor:
            lo, up = (w_lower, w_upper) if values is None else (w_lower * values, w_upper * values)
            return torch.bincount(lower, weights=lo.view(-1), minlength=size) + torch.bincount(
                upper, weights=up.view(-1), minlength=size
            )

        count, pred_sum, target_sum = shared(None), shared(p), shared(t)
        ctx.save_for_backward(p, t)
        ctx.num_bins = num_bins
        return pred_sum, target_sum, count

    @staticmethod
    def backward(ctx, grad_pred, grad_target, grad_count):  # noqa: D102
        p, t = ctx.saved_tensors
        lower, upper, w_upper, spacing = _soft_neighbours(p, ctx.num_bins)
        lower, upper = lower.view_as(p), upper.view_as(p)
        # d(share_upper)/dp = 1/spacing between centres (0 in the tails) and d(share_lower)/dp = -that,
        # so each statistic contributes g[upper] - g[lower] times d(share * value)/d(share).
        slope = (grad_count[upper] - grad_count[lower]) + t * (grad_target[upper] - grad_target[lower])
        slope += p * (grad_pred[upper] - grad_pred[lower])
        dw = (lower != upper).to(p.dtype) / spacing
        grad = dw * slope + (1 - w_upper) * grad_pred[lower] + w_upper * grad_pred[upper]
        return grad, None, None


def _binning(probs, target, num_bins, function, empty_weight, validate) -> BinStats:
    _check_num_bins(num_bins)
    if validate:
        check_probabilities(probs, target)
    elif probs.shape != target.shape or probs.ndim < 3:
        raise ValueError(
            f"probs and target must share a (B, C, *spatial) shape, got {tuple(probs.shape)} "
            f"and {tuple(target.shape)}."
        )
    shape = (*probs.shape[:2], num_bins)
    p, t = _rows(probs, target)
    pred_sum, target_sum, count = function.apply(p, t, num_bins)
    return BinStats(pred_sum.view(shape), target_sum.view(shape), count.view(shape), empty_weight)


def hard_binning(
    probs: torch.Tensor, target: torch.Tensor, num_bins: int = 20, validate: bool = True
) -> BinStats:
    """Hard-bin ``probs`` (B, C, *spatial) with their one-hot ``target``, per image and class.

    Counts and means equal ``monai.metrics.calibration_binning``; ``pred_sum`` is differentiable
    in ``probs`` (each value's gradient is that of its bin's sum). ``validate=False`` skips the
    value checks (NaN, range), which cost a host-device synchronisation on a GPU.
    """
    return _binning(probs, target, num_bins, _HardBinSums, 0.0, validate)


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
    return _binning(probs, target, num_bins, _SoftBinSums, float(empty_weight), validate)
