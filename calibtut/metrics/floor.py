"""The ACE noise floor: the calibration error a perfectly calibrated model would still show.

A bin of a few voxels shows a gap even when the model is calibrated: its labels are a handful of
coin flips. Drawing every label from the model's own probabilities and measuring again gives the
part of an image's ACE (and MCE) that no loss can lower; per-image ACE means something only well
above it.

Example:
    A certain model (probabilities 0 and 1) has no sampling noise: its floor is 0.

    >>> import torch
    >>> from calibtut.binning import hard_binning
    >>> from calibtut.metrics.floor import draw_floor_labels, noise_floor
    >>> p = torch.tensor([[[0.0, 1.0]]])
    >>> noise_floor(hard_binning(p, p, 2), draw_floor_labels(p, 2, draws=4)).ace
    tensor([[0.]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from calibtut.binning import BinStats, _check_num_bins, hard_bin_index
from calibtut.metrics.errors import calibration_errors

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

    Args:
        target_sums: ``(B, C, K, num_bins)`` per-bin sums of the drawn labels of ``K`` draws.

    Example:
        A voxel at p = 0 always draws label 0, one at p = 1 always label 1:

        >>> import torch
        >>> draws = draw_floor_labels(torch.tensor([[[0.0, 1.0]]]), num_bins=2, draws=2)
        >>> draws.num_draws, draws.target_sums
        (2, tensor([[[[0., 1.],
                  [0., 1.]]]]))
        >>> draws.rebinned(1).target_sums
        tensor([[[[1.],
                  [1.]]]])
    """

    target_sums: torch.Tensor

    @property
    def num_draws(self) -> int:
        """How many label maps were drawn per image (``K``)."""
        return self.target_sums.shape[2]

    def rebinned(self, num_bins: int) -> FloorDraws:
        """Merge groups of adjacent bins to ``num_bins`` (a divisor of the current number).

        Args:
            num_bins: the coarser number of bins.

        Returns:
            :class:`FloorDraws` ``(B, C, K, num_bins)``.

        Raises:
            ValueError: ``num_bins`` is not a positive integer or does not divide the stored bins.
        """
        n = self.target_sums.shape[-1]
        num_bins = _check_num_bins(num_bins)
        if n % num_bins:
            raise ValueError(f"num_bins={num_bins} must divide the stored {n} bins.")
        t = self.target_sums
        return FloorDraws(t.reshape(*t.shape[:-1], num_bins, n // num_bins).sum(-1))

    def pooled(self) -> FloorDraws:
        """Summed over the image axis (kept, size 1): the draws of the pooled ("micro") bins.

        Returns:
            :class:`FloorDraws` ``(1, C, K, num_bins)``.
        """
        return FloorDraws(self.target_sums.sum(0, keepdim=True))

    def select(self, index: slice | int) -> FloorDraws:
        """The draws of some images (batch axis kept).

        Args:
            index: an image position or a slice along the batch axis.

        Returns:
            :class:`FloorDraws` of the chosen images.
        """
        if isinstance(index, int):
            index = slice(index, index + 1)
        return FloorDraws(self.target_sums[index])

    @staticmethod
    def cat(parts: list[FloorDraws]) -> FloorDraws:
        """Concatenate the draws of several batches along the image axis.

        Args:
            parts: draws of the same classes, number of draws and bins.

        Returns:
            :class:`FloorDraws` of all their images, in order.
        """
        return FloorDraws(torch.cat([p.target_sums for p in parts]))


@dataclass(frozen=True)
class NoiseFloor:
    """The ACE and MCE that a perfectly calibrated model with the same probabilities would show,
    per image and class ``(B, C)``, with the Monte Carlo standard errors of both.

    Args:
        ace: the ACE floor, the mean over the draws.
        mce: the MCE floor.
        ace_se: the Monte Carlo standard error of ``ace`` (NaN with a single draw).
        mce_se: the Monte Carlo standard error of ``mce``.

    Example:
        >>> import torch
        >>> from calibtut.binning import hard_binning
        >>> p = torch.tensor([[[0.0, 1.0]]])
        >>> floor = noise_floor(hard_binning(p, p, 2), draw_floor_labels(p, 2, draws=4))
        >>> floor.ace, floor.mce, floor.ace_se
        (tensor([[0.]]), tensor([[0.]]), tensor([[0.]]))

    Taught in notebooks/02_hard_and_soft_binning and 03_training_with_calibration_losses.
    """

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

    Raises:
        ValueError: ``draws`` or ``num_bins`` is not a positive integer.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> draws = draw_floor_labels(torch.rand(2, 3, 8, 8, generator=g), 20, draws=5, generator=g)
        >>> draws.target_sums.shape
        torch.Size([2, 3, 5, 20])
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}.")
    num_bins = _check_num_bins(num_bins)
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

    Raises:
        ValueError: the draws do not fit the bins (other images, classes or number of bins).

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

    Taught in notebooks/02_hard_and_soft_binning and 03_training_with_calibration_losses.
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
