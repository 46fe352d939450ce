"""Independent float64 references the tests compare calibtut with: one image and class at a time,
written from the conventions of DESIGN.md, sharing no code with the package.

* :func:`direct_hard_bins`, :func:`direct_soft_bins`: bin sums ``(3, B, C, num_bins)``
  (prediction, target, count);
* :func:`direct_errors`: ECE/ACE/MCE (and the MCE's bin) from such sums;
* :func:`direct_l1_ace`: the mL1-ACE loss per image and class;
* :func:`direct_histogram`: a dataset reliability histogram;
* :func:`direct_floor`: the noise floor by a plain Monte Carlo loop.
"""

from __future__ import annotations

import numpy as np
import torch

EPS32 = float(torch.finfo(torch.float32).eps)


def monai_edges(num_bins: int) -> np.ndarray:
    """The convention's float32 edges (DESIGN.md), as numbers."""
    return torch.linspace(0.0, 1.0 + EPS32, num_bins + 1).double().numpy()


def hard_bin(values32: np.ndarray, num_bins: int) -> np.ndarray:
    """MONAI's bin of float32 values: the first bin whose upper edge is >= v, clamped."""
    return np.minimum(
        np.searchsorted(monai_edges(num_bins)[1:], values32, side="left"), num_bins - 1
    )


def soft_shares(v: float, num_bins: int) -> dict[int, float]:
    """Linear shares between the two nearest centres (exact midpoints of [0, 1 + eps32]); wholly
    in the edge bin beyond the outermost centres."""
    centres = (np.arange(num_bins) + 0.5) * (1 + EPS32) / num_bins
    if v <= centres[0] or num_bins == 1:
        return {0: 1.0}
    if v >= centres[-1]:
        return {num_bins - 1: 1.0}
    k = int(np.searchsorted(centres, v, side="right")) - 1
    up = (v - centres[k]) / (centres[k + 1] - centres[k])
    return {k: 1.0 - up, k + 1: up}


def _arrays(probs: torch.Tensor, target: torch.Tensor):
    p32 = probs.detach().float().double().flatten(2).numpy()
    p = probs.detach().double().flatten(2).numpy()
    t = target.detach().double().flatten(2).numpy()
    return p32, p, t


def direct_hard_bins(probs: torch.Tensor, target: torch.Tensor, num_bins: int) -> np.ndarray:
    """Per (image, class), each voxel's value, target and 1 added to its MONAI bin, in float64."""
    p32, p, t = _arrays(probs, target)
    B, C, _ = p.shape
    out = np.zeros((3, B, C, num_bins))
    for b in range(B):
        for c in range(C):
            bins = hard_bin(p32[b, c], num_bins)
            for v, label, k in zip(p[b, c], t[b, c], bins, strict=True):
                out[:, b, c, k] += (v, label, 1.0)
    return out


def direct_soft_bins(probs: torch.Tensor, target: torch.Tensor, num_bins: int) -> np.ndarray:
    """Per voxel: shared linearly between its two nearest bin centres (:func:`soft_shares`)."""
    _, p, t = _arrays(probs, target)
    B, C, N = p.shape
    out = np.zeros((3, B, C, num_bins))
    for b in range(B):
        for c in range(C):
            for i in range(N):
                for k, w in soft_shares(p[b, c, i], num_bins).items():
                    out[:, b, c, k] += (w * p[b, c, i], w * t[b, c, i], w)
    return out


def as_sums(bins) -> np.ndarray:
    """A ``BinStats`` as ``(3, B, C, num_bins)`` float64 sums."""
    return np.stack(
        [x.detach().double().numpy() for x in (bins.pred_sum, bins.target_sum, bins.count)]
    )


def direct_errors(sums: np.ndarray, empty_weight: float = 0.0) -> dict[str, np.ndarray]:
    """ECE (count-weighted gap), ACE (mean gap over occupied bins), MCE (largest gap) and the MCE's
    bin (the first of equal gaps), per (image, class); NaN (bin -1) with no occupied bin."""
    _, B, C, _ = sums.shape
    out = {name: np.full((B, C), np.nan) for name in ("ece", "ace", "mce")}
    out["mce_bin"] = np.full((B, C), -1)
    for b in range(B):
        for c in range(C):
            pred, tgt, count = sums[:, b, c]
            occupied = (count > 0) & (count >= empty_weight)
            if not occupied.any():
                continue
            gaps = np.abs(pred[occupied] - tgt[occupied]) / count[occupied]
            out["ece"][b, c] = (gaps * count[occupied]).sum() / count.sum()
            out["ace"][b, c] = gaps.mean()
            out["mce"][b, c] = gaps.max()
            out["mce_bin"][b, c] = np.flatnonzero(occupied)[int(np.argmax(gaps))]
    return out


def direct_l1_ace(probs, target, num_bins=20, soft=False, empty_weight=0.01, ignore_empty=True):
    """The mL1-ACE per (image, class): the ACE of its hard or soft bins (a soft bin under
    ``empty_weight`` is empty), 0 with no occupied bin, and 0 for a class absent from the image
    when ``ignore_empty``."""
    sums = (direct_soft_bins if soft else direct_hard_bins)(probs, target, num_bins)
    ace = direct_errors(sums, empty_weight if soft else 0.0)["ace"]
    ace = np.nan_to_num(ace)
    if ignore_empty:
        ace[target.detach().double().flatten(2).sum(-1).numpy() == 0] = 0.0
    return torch.from_numpy(ace)


def direct_histogram(sums: np.ndarray) -> np.ndarray:
    """For every image, class and occupied confidence bin k: one count at (bin of its mean GT, k)."""
    _, B, C, n = sums.shape
    hist = np.zeros((C, n, n), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for k in range(n):
                if sums[2, b, c, k] > 0:
                    mean_gt = np.float32(sums[1, b, c, k] / sums[2, b, c, k])
                    hist[c, int(hard_bin(np.array([mean_gt]), n)[0]), k] += 1
    return hist


def direct_floor(probs: torch.Tensor, num_bins: int, draws: int, seed: int = 0) -> dict:
    """The noise floor by brute force: draw every voxel's label from its probability with NumPy,
    bin with :func:`direct_hard_bins`, take the ACE and MCE, and average over the draws.

    Returns per (image, class) ``ace``/``mce`` means and their standard errors ``ace_se``/``mce_se``.
    """
    rng = np.random.default_rng(seed)
    p = probs.detach().double()
    aces, mces = [], []
    for _ in range(draws):
        labels = torch.from_numpy((rng.random(p.shape) < p.numpy()).astype(np.float64))
        errors = direct_errors(direct_hard_bins(probs, labels, num_bins))
        aces.append(errors["ace"])
        mces.append(errors["mce"])
    aces, mces = np.stack(aces), np.stack(mces)
    root = np.sqrt(draws)
    return {
        "ace": aces.mean(0),
        "mce": mces.mean(0),
        "ace_se": aces.std(0, ddof=1) / root,
        "mce_se": mces.std(0, ddof=1) / root,
    }
