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

How it is fast (at the AMOS-like shape on a 2-core CPU: the metric about 4x MONAI's
``calibration_binning``, the hard and soft losses about 6x and 10x or more a per-image-and-class
loop; benchmarks/README.md):

* Every image and class at once: one scatter-add per statistic into a ``(B*C, slots)`` table, no
  Python loop over images, classes or bins.
* Voxels are walked in column chunks of about 2**18 values on a CPU, so a chunk's temporaries
  stay in cache and never grow with the image.
* The exact MONAI bin is ``floor(n * p - 1)`` plus one comparison with a float32 edge looked up
  in a table of ``n`` edges, far cheaper than ``bucketize``'s binary search.
* Consecutive voxels rotate through 4 copies of each table (``_lane_offsets``), so the many
  voxels of one crowded bin do not wait on each other's adds; on a CPU two sums share one
  complex-valued scatter (``_PairedSums``).
* The forward pass keeps each voxel's slot (one byte with up to 63 bins) and the backward pass is
  a gather from per-bin tables; no per-voxel weights are stored, so hard and soft binning use
  about the same memory: the gradient plus one byte per voxel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

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
# Values per chunk: on a CPU small enough that a chunk's temporaries stay in cache; on a GPU
# large enough that kernel launches do not dominate.
_CHUNK_VALUES = {"cpu": 1 << 18}
_CHUNK_VALUES_DEFAULT = 1 << 22
_LANES = 4  # copies of each bin table that consecutive voxels rotate through (see _lane_offsets)
_COMPLEX_PAIRS = {"cpu"}  # devices where two sums share one complex scatter (see _PairedSums)


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
    return torch.linspace(0.0, 1.0 + _EPS32, num_bins + 1, device=device)


def bin_centres(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Midpoints of the hard bins: the anchors between which soft binning interpolates."""
    edges = bin_edges(num_bins, device)
    return (edges[:-1] + edges[1:]) / 2


def hard_bin_index(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The hard bin (int64) of every value, exactly as ``monai.metrics.calibration_binning`` assigns it.

    NaN goes to bin 0 and values outside [0, 1] to the nearest end bin.
    """
    _check_num_bins(num_bins)
    flat = probs.detach().reshape(1, -1)
    index = torch.empty(flat.shape, dtype=torch.int64, device=flat.device)
    upper = bin_edges(num_bins, flat.device)[1:]
    scratch = _Scratch(1, _chunk_width(1, flat.shape[1], flat.device), flat.device)
    for start, stop in _chunks(flat.shape[1], scratch.width):
        p32 = _index_values(flat[:, start:stop], torch.float32, True, scratch)
        _hard_index_chunk(p32, upper, scratch, index[:, start:stop])
    return index.view(probs.shape)


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


def _accumulation_dtype(probs: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) accumulates in float32."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def _index_dtype(num_slots: int) -> torch.dtype:
    """Smallest integer type for a per-voxel slot index saved for backward (1 byte for <= 256 slots)."""
    if num_slots <= 256:
        return torch.uint8
    if num_slots <= 1 << 15:
        return torch.int16
    return torch.int32


# --- Walking (B, C, *spatial) tensors as (rows, columns) chunks ---------------------------------


def _rows_view(x: torch.Tensor) -> torch.Tensor | None:
    try:
        return x.view(x.shape[0] * x.shape[1], -1)
    except RuntimeError:
        return None


def _image_rows_friendly(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if each image views as (C, N) (contiguous, channels-last, channel slices), else a copy."""
    try:
        x[0].view(x.shape[1], -1)
        return x
    except RuntimeError:
        return x.contiguous()


def _blocks(*tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """(rows, N) views of the tensors: all images at once if every layout allows, else image by image."""
    whole = [_rows_view(x) for x in tensors]
    if all(v is not None for v in whole):
        return [tuple(whole)]
    channels = tensors[0].shape[1]
    return [tuple(x[b].view(channels, -1) for x in tensors) for b in range(tensors[0].shape[0])]


def _chunk_width(rows: int, columns: int, device: torch.device) -> int:
    values = _CHUNK_VALUES.get(device.type, _CHUNK_VALUES_DEFAULT)
    return max(1, min(columns, values // rows))


def _chunks(columns: int, width: int) -> Iterator[tuple[int, int]]:
    for start in range(0, columns, width):
        yield start, min(start + width, columns)


class _Scratch:
    """Reusable per-chunk work buffers, handed out as contiguous (rows, width) views."""

    def __init__(self, rows: int, width: int, device: torch.device) -> None:
        self.rows, self.width, self.device = rows, width, device
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, dtype: torch.dtype, width: int) -> torch.Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype:
            buffer = torch.empty(self.rows * self.width, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[: self.rows * width].view(self.rows, width)


def _as_dtype(
    values: torch.Tensor, dtype: torch.dtype, scratch: _Scratch, name: str
) -> torch.Tensor:
    """``values`` itself when already ``dtype``, else a converted copy in a scratch buffer."""
    if values.dtype == dtype:
        return values
    return scratch.get(name, dtype, values.shape[1]).copy_(values)


def _index_values(
    values: torch.Tensor, dtype: torch.dtype, sanitize: bool, scratch: _Scratch
) -> torch.Tensor:
    """The values to compute bins from, in ``dtype``; sanitised (NaN -> 0, clamped to [0, 1]) so
    that unvalidated input still indexes a valid bin, while the sums keep the raw values."""
    if not sanitize:
        return _as_dtype(values, dtype, scratch, "index_values")
    out = scratch.get("index_values", dtype, values.shape[1])
    if values.dtype == dtype:
        torch.nan_to_num(values, nan=0.0, out=out)
    else:
        out.copy_(values).nan_to_num_(nan=0.0)
    return out.clamp_(0.0, 1.0)


def _lane_offsets(width: int, slots: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Offsets ``(column % LANES) * slots``: consecutive voxels accumulate into different copies of
    the bin table. Segmentation probabilities crowd into one or two bins, and a scatter-add that
    hits one address over and over waits on its own previous add; spreading them over a few
    copies (summed at the end) makes it several times faster."""
    return (torch.arange(width, device=device) % _LANES * slots).to(dtype).unsqueeze(0)


def _to_index(x: torch.Tensor, scratch: _Scratch, out: torch.Tensor | None = None) -> torch.Tensor:
    """Integral floats to an int32 scratch index, and on to int64 ``out`` when given: through
    int32 is several times faster on a CPU than converting to int64 directly."""
    index32 = scratch.get("index32", torch.int32, x.shape[1]).copy_(x)
    return index32 if out is None else out.copy_(index32)


def _hard_index_chunk(
    p32: torch.Tensor,
    upper: torch.Tensor,
    scratch: _Scratch,
    out: torch.Tensor,
    lanes: torch.Tensor | None = None,
) -> torch.Tensor:
    """MONAI's hard bin of each float32 value in [0, 1] (plus ``lanes``), written into int64 ``out``.

    ``floor(n * p - 1)`` (clamped) is the exact bin or one below it, so one comparison with that
    bin's float32 upper edge settles it: ``bin = k + (p > upper[k])``. This is exact for every
    float32 value and several times faster than ``bucketize``'s binary search.
    """
    n = upper.numel()
    x = scratch.get("x", torch.float32, p32.shape[1])
    edge = scratch.get("edge", torch.float32, p32.shape[1])
    torch.add(upper.new_full((), -1.0), p32, alpha=n, out=x).clamp_(0.0, n - 1).floor_()
    torch.index_select(upper, 0, _to_index(x, scratch).view(-1), out=edge.view(-1))
    x.add_(torch.gt(p32, edge, out=edge))  # 1.0 where p is above the edge
    if lanes is not None:
        x.add_(lanes)
    return _to_index(x, scratch, out)


def _soft_interval_chunk(
    p: torch.Tensor, num_bins: int, scratch: _Scratch, out: torch.Tensor, lanes: torch.Tensor
) -> torch.Tensor:
    """Interval between bin centres of each value in [0, 1] (plus ``lanes``, int64 into ``out``);
    returns the share of the interval's upper bin.

    Interval ``j`` in [0, n] lies between centres ``j - 1`` and ``j``; interval 0 (below the first
    centre) gives everything to bin 0 (share 1) and interval n (above the last) to bin n - 1
    (share 0). With centre spacing ``h = (1 + eps) / n``, ``v = p / h + 1/2`` puts centre ``k`` at
    ``k + 1/2``, so ``j = floor(v)`` and the upper share is ``clamp(v, 1, n) - j``.
    """
    v = scratch.get("share", p.dtype, p.shape[1])
    j = scratch.get("interval", p.dtype, p.shape[1])
    torch.mul(p, num_bins / (1.0 + _EPS32), out=v).add_(0.5)
    torch.floor(v, out=j)
    v.clamp_(1.0, num_bins).sub_(j)
    _to_index(j.add_(lanes), scratch, out)
    return v


# --- The autograd Functions ---------------------------------------------------------------------


def _saved_index(ctx, probs: torch.Tensor, slots: int) -> torch.Tensor | None:
    """Room for each voxel's slot, kept for backward; None when no gradient is wanted (metrics)."""
    if not ctx.needs_input_grad[0]:
        return None
    return torch.empty(probs.shape, dtype=_index_dtype(slots), device=probs.device)


def _present(*tensors: torch.Tensor | None) -> list[torch.Tensor]:
    return [t for t in tensors if t is not None]


class _PairedSums:
    """Two sums over the same (rows, slots) table, such as predictions and targets.

    On a CPU they travel as the real and imaginary parts of one complex scatter-add: a scatter's
    cost is in walking the index, so one complex scatter costs about what one real scatter does.
    Elsewhere (GPU atomics; MPS has no complex) they are two real scatters.
    """

    def __init__(self, rows: int, slots: int, dtype: torch.dtype, device: torch.device) -> None:
        self.complex = device.type in _COMPLEX_PAIRS
        if self.complex:
            complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            self.table = torch.zeros(rows, slots, dtype=complex_dtype, device=device)
        else:
            self.table = torch.zeros(2, rows, slots, dtype=dtype, device=device)

    def add(
        self,
        row: int,
        index: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        scratch: _Scratch,
    ) -> None:
        """Add ``first`` and ``second`` at ``index`` into rows ``row`` onwards."""
        rows = slice(row, row + index.shape[0])
        if self.complex:
            pair = scratch.get("pair", self.table.dtype, index.shape[1])
            self.table[rows].scatter_add_(1, index, torch.complex(first, second, out=pair))
        else:
            self.table[0, rows].scatter_add_(1, index, first)
            self.table[1, rows].scatter_add_(1, index, second)

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.complex:
            return self.table.real, self.table.imag
        return self.table[0], self.table[1]


class _HardBinSums(torch.autograd.Function):
    """Per image and class hard-bin sums; d pred_sum[bin(p)] / dp = 1, counts and targets are constants."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, target: torch.Tensor, num_bins: int, sanitize: bool):  # noqa: D102
        B, C = probs.shape[:2]
        acc = _accumulation_dtype(probs)
        device = probs.device
        slots = _LANES * num_bins
        pred_and_target = _PairedSums(B * C, slots, acc, device)
        count = torch.zeros(B * C, slots, dtype=acc, device=device)
        index = _saved_index(ctx, probs, slots)
        upper = bin_edges(num_bins, device)[1:]
        row = 0
        for p_rows, t_rows, *index_rows in _blocks(probs, target, *_present(index)):
            rows, columns = p_rows.shape
            scratch = _Scratch(rows, _chunk_width(rows, columns, device), device)
            lanes = _lane_offsets(scratch.width, num_bins, torch.float32, device)
            ones = torch.ones(rows, scratch.width, dtype=acc, device=device)
            for start, stop in _chunks(columns, scratch.width):
                w = stop - start
                p, t = p_rows[:, start:stop], t_rows[:, start:stop]
                k = scratch.get("k", torch.int64, w)
                p32 = _index_values(p, torch.float32, sanitize, scratch)
                _hard_index_chunk(p32, upper, scratch, k, lanes[:, :w])
                for i_rows in index_rows:
                    i_rows[:, start:stop].copy_(scratch.get("index32", torch.int32, w))
                p, t = _as_dtype(p, acc, scratch, "p"), _as_dtype(t, acc, scratch, "t")
                pred_and_target.add(row, k, p, t, scratch)
                count[row : row + rows].scatter_add_(1, k, ones[:, :w])
            row += rows
        pred_sum, target_sum, count = (
            s.reshape(B, C, _LANES, num_bins).sum(2) for s in (*pred_and_target.sums(), count)
        )
        ctx.save_for_backward(index)
        ctx.probs_dtype = probs.dtype
        ctx.mark_non_differentiable(target_sum, count)
        return pred_sum, target_sum, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pred, _grad_target, _grad_count):  # noqa: D102
        (index,) = ctx.saved_tensors
        grad = torch.empty(index.shape, dtype=ctx.probs_dtype, device=index.device)
        table = grad_pred.reshape(-1, grad_pred.shape[-1]).repeat(1, _LANES)
        return (
            _gather_grad(index, grad, [table], [], lambda gathered, values: None),
            None,
            None,
            None,
        )


class _SoftBinSums(torch.autograd.Function):
    """Per image and class soft-bin sums, differentiable through the values and through the shares."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, target: torch.Tensor, num_bins: int, sanitize: bool):  # noqa: D102
        B, C = probs.shape[:2]
        acc = _accumulation_dtype(probs)
        device = probs.device
        slots = _LANES * (num_bins + 1)
        # Per interval j between centres: the shares sent up (to bin j) and down (to bin j - 1).
        pred, target_pair, count = (_PairedSums(B * C, slots, acc, device) for _ in range(3))
        index = _saved_index(ctx, probs, slots)
        row = 0
        for p_rows, t_rows, *index_rows in _blocks(probs, target, *_present(index)):
            rows, columns = p_rows.shape
            scratch = _Scratch(rows, _chunk_width(rows, columns, device), device)
            lanes = _lane_offsets(scratch.width, num_bins + 1, acc, device)
            for start, stop in _chunks(columns, scratch.width):
                w = stop - start
                p = _as_dtype(p_rows[:, start:stop], acc, scratch, "p")
                t = _as_dtype(t_rows[:, start:stop], acc, scratch, "t")
                j = scratch.get("j", torch.int64, w)
                clean = _index_values(p, acc, sanitize, scratch)
                share = _soft_interval_chunk(clean, num_bins, scratch, j, lanes[:, :w])
                for i_rows in index_rows:
                    i_rows[:, start:stop].copy_(scratch.get("index32", torch.int32, w))
                rest = torch.sub(1.0, share, out=scratch.get("rest", acc, w))
                count.add(row, j, share, rest, scratch)
                up, down = scratch.get("up", acc, w), scratch.get("down", acc, w)
                for values, pair in ((p, pred), (t, target_pair)):
                    pair.add(
                        row,
                        j,
                        torch.mul(values, share, out=up),
                        torch.mul(values, rest, out=down),
                        scratch,
                    )
            row += rows
        ctx.save_for_backward(probs, target, index)
        ctx.num_bins = num_bins
        # Bin k receives the up-share of interval k and the down-share of interval k + 1.
        pred_sum, target_sum, count = (
            up[..., :-1] + down[..., 1:]
            for up, down in (
                (s.reshape(B, C, _LANES, num_bins + 1).sum(2) for s in pair.sums())
                for pair in (pred, target_pair, count)
            )
        )
        return pred_sum, target_sum, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_pred, grad_target, grad_count):  # noqa: D102
        probs, target, index = ctx.saved_tensors
        n = ctx.num_bins
        slope = n / (1.0 + _EPS32)  # d(upper share)/dp between two centres

        def below_above(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Gradients of the bins below (j - 1) and above (j) each interval j, 0 where none."""
            g = g.reshape(-1, n)
            zero = g.new_zeros(g.shape[0], 1)
            return torch.cat([zero, g], 1), torch.cat([g, zero], 1)

        (below_p, above_p), (below_t, above_t), (below_c, above_c) = map(
            below_above, (grad_pred, grad_target, grad_count)
        )
        diff_p, diff_t, diff_c = above_p - below_p, above_t - below_t, above_c - below_c
        # Inside interval j the upper share is p * slope + 1/2 - j, so the gradient of every
        # statistic is linear in p and t: grad = a[j] + b[j] * p + c[j] * t. Outside the
        # outermost centres the shares are constant and only the value itself carries gradient.
        j = torch.arange(n + 1, dtype=grad_pred.dtype, device=grad_pred.device)
        a = below_p + (0.5 - j) * diff_p + slope * diff_c
        b = 2 * slope * diff_p
        c = slope * diff_t
        a[:, 0], a[:, n] = above_p[:, 0], below_p[:, n]
        b[:, 0] = b[:, n] = c[:, 0] = c[:, n] = 0

        def combine(gathered: list[torch.Tensor], values: list[torch.Tensor]) -> None:
            grad_a, grad_b, grad_c = gathered
            grad_a.addcmul_(grad_b, values[0]).addcmul_(grad_c, values[1])

        tables = [x.repeat(1, _LANES) for x in (a, b, c)]
        grad = _gather_grad(index, torch.empty_like(probs), tables, [probs, target], combine)
        return grad, None, None, None


def _gather_grad(
    index: torch.Tensor,
    grad: torch.Tensor,
    tables: list[torch.Tensor],
    values: list[torch.Tensor],
    combine: Callable[[list[torch.Tensor], list[torch.Tensor]], None],
) -> torch.Tensor:
    """Fill ``grad`` chunk by chunk: gather per-row ``tables`` (B*C, slots) at each voxel's saved
    slot, the first straight into ``grad``, and ``combine`` them in place with the voxel's
    ``values`` (in the tables' dtype)."""
    dtype = tables[0].dtype
    row = 0
    for index_rows, grad_rows, *value_rows in _blocks(index, grad, *values):
        rows, columns = index_rows.shape
        block_tables = [t[row : row + rows] for t in tables]
        scratch = _Scratch(rows, _chunk_width(rows, columns, index.device), index.device)
        for start, stop in _chunks(columns, scratch.width):
            w = stop - start
            k = scratch.get("k", torch.int64, w).copy_(index_rows[:, start:stop])
            out = grad_rows[:, start:stop]
            first = out if out.dtype == dtype else scratch.get("grad", dtype, w)
            gathered = [
                torch.gather(t, 1, k, out=first if i == 0 else scratch.get(f"g{i}", dtype, w))
                for i, t in enumerate(block_tables)
            ]
            chunk_values = [
                _as_dtype(v[:, start:stop], dtype, scratch, f"value{i}")
                for i, v in enumerate(value_rows)
            ]
            combine(gathered, chunk_values)
            if first is not out:
                out.copy_(first)
        row += rows
    return grad


def _binning(probs, target, num_bins, function, empty_weight, validate) -> BinStats:
    _check_num_bins(num_bins)
    _check_shapes(probs, target)
    if validate:
        _check_values(probs, target)
    probs, target = _image_rows_friendly(probs), _image_rows_friendly(target.detach())
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
