"""Proper scores and equal-mass binning: what a calibration study reports beside ECE/ACE/MCE.

Per image and class (each class channel a binary problem, as every calibtut metric):

* the **Brier score**, ``mean (p - y)^2``, and the **NLL**, ``mean -(y log p + (1 - y) log(1 - p))``:
  proper scores, lowest for the true probabilities, that need no bins at all;
* the **equal-mass ECE** (``equal_mass_ece``): the ECE over *adaptive (equal-mass) bins*, each
  holding the same number of voxels, sorted by probability (Nixon et al., CVPR-W 2019). It is
  not the paper's ACE, the *average* calibration error over equal-width bins; the name says
  "equal mass" so that the two are never confused.

Class-wise ECE (Kull et al., NeurIPS 2019) is the per-class ECE calibtut already reports (each
scored class's row of ``per_image.csv``, and the ``micro`` scope per class in reports).

Example:
    >>> import torch
    >>> p = torch.tensor([[[0.9, 0.6, 0.2, 0.1]]])
    >>> y = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    >>> brier_score(p, y)       # (0.01 + 0.36 + 0.04 + 0.01) / 4
    tensor([[0.1050]], dtype=torch.float64)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "NLL_EPS",
    "ImageScores",
    "image_scores",
    "brier_score",
    "negative_log_likelihood",
    "equal_mass_ece",
]

NLL_EPS = 1e-7
"""Probabilities are clipped to ``[eps, 1 - eps]`` in the NLL: one confidently wrong voxel would
otherwise make an image's NLL infinite (saved float probabilities do reach 0 and 1)."""


def _check(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(probs, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("probs and target must be tensors")
    if probs.shape != target.shape or probs.ndim < 3:
        raise ValueError(
            f"probs {tuple(probs.shape)} and target {tuple(target.shape)} must share one shape "
            "(B, C, *spatial)"
        )
    p = probs.detach().double().flatten(2)
    if p.shape[2] == 0:
        raise ValueError("probs hold no voxels")
    if torch.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1] (no NaN)")
    return p, target.detach().double().flatten(2)


def brier_score(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Brier score per image and class: ``mean over voxels of (p - y)^2``.

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: one-hot (or 0/1 region) labels of the same shape.

    Returns:
        ``(B, C)`` float64.

    Raises:
        TypeError, ValueError: non-tensors, shapes that differ, probabilities outside [0, 1].

    Example:
        >>> import torch
        >>> brier_score(torch.tensor([[[0.8, 0.3]]]), torch.tensor([[[1.0, 0.0]]]))  # (.04+.09)/2
        tensor([[0.0650]], dtype=torch.float64)
    """
    p, y = _check(probs, target)
    return ((p - y) ** 2).mean(2)


def negative_log_likelihood(
    probs: torch.Tensor, target: torch.Tensor, eps: float = NLL_EPS
) -> torch.Tensor:
    """The binary NLL per image and class, ``mean -(y log p + (1 - y) log(1 - p))``, with ``p``
    clipped to ``[eps, 1 - eps]`` (:data:`NLL_EPS`).

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: one-hot (or 0/1 region) labels of the same shape.
        eps: the clipping, in (0, 0.5).

    Returns:
        ``(B, C)`` float64, finite.

    Raises:
        TypeError, ValueError: bad input, or ``eps`` outside (0, 0.5).

    Example:
        A voxel at 0.5 costs log 2 whatever its label:

        >>> import torch
        >>> negative_log_likelihood(torch.full((1, 1, 4), 0.5), torch.tensor([[[1.0, 0, 0, 1]]]))
        tensor([[0.6931]], dtype=torch.float64)
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    p, y = _check(probs, target)
    p = p.clamp(eps, 1 - eps)
    return -(y * p.log() + (1 - y) * (-p).log1p()).mean(2)


def equal_mass_ece(probs: torch.Tensor, target: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """The ECE over adaptive (equal-mass) bins, per image and class.

    Each class's voxels are sorted by probability and cut into ``num_bins`` bins of (as nearly
    as possible) equal count; the ECE is the count-weighted mean of ``|mean p - mean y|``. With
    many confident voxels near 0, equal-width bins put almost all of them in the first bin;
    equal-mass bins spread them, so the error is measured where the voxels are.

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: one-hot (or 0/1 region) labels of the same shape.
        num_bins: the number of bins (a positive integer; fewer voxels than bins: one per voxel).

    Returns:
        ``(B, C)`` float64.

    Raises:
        TypeError, ValueError: bad input or ``num_bins``.

    Example:
        Four voxels, two bins of two: (0.1, 0.2) against (0, 1) and (0.7, 0.9) against (1, 1):
        gaps 0.35 and 0.2, each weighing a half.

        >>> import torch
        >>> p = torch.tensor([[[0.9, 0.1, 0.7, 0.2]]])
        >>> y = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])
        >>> round(float(equal_mass_ece(p, y, num_bins=2)), 4)
        0.275
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    p, y = _check(probs, target)
    n = p.shape[2]
    p, order = torch.sort(p, dim=2, stable=True)
    y = y.gather(2, order)
    # counts differ by at most one, the larger first (numpy.array_split's convention)
    k = min(num_bins, n)
    sizes = torch.full((k,), n // k, dtype=torch.long)
    sizes[: n % k] += 1
    bins = torch.repeat_interleave(torch.arange(k), sizes).to(p.device)
    shape = (*p.shape[:2], k)
    index = bins.expand_as(p)
    sum_p = torch.zeros(shape, dtype=p.dtype, device=p.device).scatter_add_(2, index, p)
    sum_y = torch.zeros(shape, dtype=p.dtype, device=p.device).scatter_add_(2, index, y)
    return (sum_p - sum_y).abs().sum(2) / n


@dataclass(frozen=True)
class ImageScores:
    """The bin-free scores of a batch of images, each ``(B, C)`` float64: what evaluation saves
    beside ECE/ACE/MCE (``per_image.csv``'s ``brier``, ``nll`` and ``equal_mass_ece``).

    Args:
        brier: :func:`brier_score`.
        nll: :func:`negative_log_likelihood`.
        equal_mass_ece: :func:`equal_mass_ece`.

    Example:
        >>> import torch
        >>> scores = image_scores(torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[1.0, 0.0]]]))
        >>> float(scores.brier), ImageScores.cat([scores, scores]).nll.shape
        (0.25, torch.Size([2, 1]))
    """

    brier: torch.Tensor
    nll: torch.Tensor
    equal_mass_ece: torch.Tensor

    @staticmethod
    def cat(parts: list[ImageScores], device: torch.device | str | None = None) -> ImageScores:
        """Several batches' scores along the image axis, detached (on ``device`` if given).

        Args:
            parts: the batches' scores, of the same classes.
            device: where to put the concatenated tensors (None: where each part is).

        Returns:
            :class:`ImageScores` of all their images, in order.

        Raises:
            ValueError: ``parts`` is empty.
        """
        if not parts:
            raise ValueError("ImageScores.cat needs at least one ImageScores.")
        return ImageScores(
            *(
                torch.cat([getattr(p, name).detach().to(device or p.brier.device) for p in parts])
                for name in ("brier", "nll", "equal_mass_ece")
            )
        )


def image_scores(probs: torch.Tensor, target: torch.Tensor, num_bins: int = 20) -> ImageScores:
    """Brier score, NLL and equal-mass ECE (``num_bins`` bins) per image and class.

    Args:
        probs: probabilities ``(B, C, *spatial)`` in [0, 1].
        target: one-hot (or 0/1 region) labels of the same shape.
        num_bins: the equal-mass bins of :func:`equal_mass_ece`.

    Returns:
        :class:`ImageScores`.

    Raises:
        TypeError, ValueError: as :func:`brier_score` and :func:`equal_mass_ece`.

    Example:
        >>> import torch
        >>> scores = image_scores(torch.tensor([[[0.8, 0.3]]]), torch.tensor([[[1.0, 0.0]]]))
        >>> round(float(scores.brier), 4), round(float(scores.equal_mass_ece), 4)
        (0.065, 0.25)
    """
    return ImageScores(
        brier_score(probs, target),
        negative_log_likelihood(probs, target),
        equal_mass_ece(probs, target, num_bins),
    )
