"""The fast kernels behind :mod:`calibtut.binning` (private: use ``hard_binning``/``soft_binning``).

How they are fast (at the AMOS-like shape on a 2-core CPU: the metric about 4x MONAI's
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

import torch
from torch.autograd.function import once_differentiable

EPS32 = torch.finfo(torch.float32).eps
# Values per chunk: on a CPU small enough that a chunk's temporaries stay in cache; on a GPU
# large enough that kernel launches do not dominate.
_CHUNK_VALUES = {"cpu": 1 << 18}
_CHUNK_VALUES_DEFAULT = 1 << 22
_LANES = 4  # copies of each bin table that consecutive voxels rotate through (see _lane_offsets)
_COMPLEX_PAIRS = {"cpu"}  # devices where two sums share one complex scatter (see _PairedSums)


def edges(num_bins: int, device: torch.device | str | None = None) -> torch.Tensor:
    """MONAI's float32 bin edges ``linspace(0, 1 + eps32, num_bins + 1)`` (unchecked)."""
    return torch.linspace(0.0, 1.0 + EPS32, num_bins + 1, device=device)


def hard_index(probs: torch.Tensor, num_bins: int) -> torch.Tensor:
    """The MONAI hard bin (int64) of every value of ``probs``, walking it in chunks."""
    flat = probs.detach().reshape(1, -1)
    index = torch.empty(flat.shape, dtype=torch.int64, device=flat.device)
    upper = edges(num_bins, flat.device)[1:]
    scratch = _Scratch(1, _chunk_width(1, flat.shape[1], flat.device), flat.device)
    for start, stop in _chunks(flat.shape[1], scratch.width):
        p32 = _index_values(flat[:, start:stop], torch.float32, True, scratch)
        _hard_index_chunk(p32, upper, scratch, index[:, start:stop])
    return index.view(probs.shape)


def image_rows_friendly(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if each image views as (C, N) (contiguous, channels-last, channel slices), else a copy."""
    try:
        x[0].view(x.shape[1], -1)
        return x
    except RuntimeError:
        return x.contiguous()


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
    torch.mul(p, num_bins / (1.0 + EPS32), out=v).add_(0.5)
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


class HardBinSums(torch.autograd.Function):
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
        upper = edges(num_bins, device)[1:]
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


class SoftBinSums(torch.autograd.Function):
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
        slope = n / (1.0 + EPS32)  # d(upper share)/dp between two centres

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
