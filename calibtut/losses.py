"""The marginal L1 Average Calibration Error (mL1-ACE) losses of Barfoot et al. (arXiv 2506.03942).

Per image and class, mL1-ACE is the mean over occupied bins of |mean prediction - mean
target|. With hard bins its gradient reaches each voxel through its bin's mean prediction;
with soft bins it also flows through the bin shares, which calibrates more at some Dice cost.
``ACEDiceCELoss`` adds it to MONAI's Dice+CE, the paper's compound loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from monai.losses import DiceCELoss
from monai.networks import one_hot
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from calibtut.binning import BinStats, hard_binning, soft_binning

__all__ = ["HardL1ACELoss", "SoftL1ACELoss", "ACEDiceCELoss", "l1_ace", "l1_ace_gradient"]


def l1_ace(bins: BinStats) -> torch.Tensor:
    """Differentiable mean over occupied bins of the calibration gap, ``(B, C)``; 0 with no occupied bin."""
    occupied = bins.occupied
    safe = torch.where(occupied, bins.count, torch.ones_like(bins.count))
    gap = ((bins.pred_sum - bins.target_sum) / safe).abs()
    gap = torch.where(occupied, gap, torch.zeros_like(gap))
    return gap.sum(-1) / occupied.sum(-1).clamp(min=1)


class _L1ACELoss(_Loss):
    """Shared input handling (activation, one-hot, background, class weights) of both mL1-ACE losses."""

    def __init__(
        self,
        num_bins: int = 20,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        weight: Sequence[float] | float | torch.Tensor | None = None,
        ignore_empty_classes: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable, got {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError(
                "Incompatible activations: set at most one of sigmoid=True, softmax=True, other_act."
            )
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
        self.num_bins = num_bins
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.ignore_empty_classes = ignore_empty_classes
        self.validate = validate
        class_weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        if class_weight is not None and (
            class_weight.ndim > 1
            or not bool(torch.isfinite(class_weight).all() and (class_weight >= 0).all())
        ):
            raise ValueError(
                f"weight must be a non-negative scalar or 1-D sequence, got {weight!r}."
            )
        self.register_buffer("class_weight", class_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input`` (B, C, *spatial) logits or probabilities; ``target`` one-hot or a label map."""
        probs, target = self._prepare(input, target)
        bins = self._bins(probs, target)
        loss = l1_ace(bins)
        if self.ignore_empty_classes:
            present = bins.target_sum.sum(-1) > 0  # the bins already hold each class's volume
            loss = torch.where(present, loss, torch.zeros_like(loss))
        if self.class_weight is not None:
            loss = loss * self._weights(loss.shape[1]).to(loss)
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss.view(*loss.shape, *([1] * (input.ndim - 2)))

    def _weights(self, num_classes: int) -> torch.Tensor:
        w = self.class_weight
        if w.ndim == 0:
            return w.expand(num_classes)
        if w.numel() != num_classes:
            raise ValueError(
                f"weight has {w.numel()} values but the loss sees {num_classes} classes "
                "(without the background when include_background=False)."
            )
        return w

    def _prepare(
        self, input: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("input and target must be torch.Tensors.")
        if input.ndim < 3:
            raise ValueError(
                f"input must have shape (B, C, *spatial) with at least 3 dims, got {tuple(input.shape)}."
            )
        if not input.is_floating_point():
            raise TypeError(
                f"input must be floating point (logits or probabilities), got {input.dtype}."
            )
        n_pred_ch = input.shape[1]
        probs = input
        if self.sigmoid:
            probs = torch.sigmoid(probs)
        if self.softmax:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
            else:
                probs = torch.softmax(probs.float() if probs.dtype == torch.float16 else probs, 1)
        if self.other_act is not None:
            probs = self.other_act(probs)
        if self.to_onehot_y:
            target = _label_map_to_onehot(target, input, self.validate)
        if not self.include_background:
            if n_pred_ch == 1:
                warnings.warn(
                    "single channel prediction, `include_background=False` ignored.", stacklevel=3
                )
            else:
                probs, target = probs[:, 1:], target[:, 1:]
        if target.shape != probs.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input shape {tuple(probs.shape)}; "
                "pass a one-hot target, or a label map (B, 1, *spatial) with to_onehot_y=True."
            )
        return probs, target


def _label_map_to_onehot(target: torch.Tensor, input: torch.Tensor, validate: bool) -> torch.Tensor:
    n = input.shape[1]
    expected = (input.shape[0], 1, *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"with to_onehot_y=True the target must be a label map of shape {expected}, "
            f"got {tuple(target.shape)}."
        )
    labels = target.detach()
    if not validate:
        return one_hot(labels.long(), num_classes=n, dtype=torch.float32)
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("label map must hold integer class indices, found non-integer values.")
    lo, hi = (float(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= n:
        raise ValueError(
            f"label values must lie in [0, {n - 1}] for {n} classes, got [{lo:g}, {hi:g}]."
        )
    return one_hot(labels.long(), num_classes=n, dtype=torch.float32)


class HardL1ACELoss(_L1ACELoss):
    """mL1-ACE with hard (MONAI-convention) bins: calibrates while keeping Dice."""

    def _bins(self, probs: torch.Tensor, target: torch.Tensor) -> BinStats:
        return hard_binning(probs, target, self.num_bins, validate=self.validate)


class SoftL1ACELoss(_L1ACELoss):
    """mL1-ACE with soft bins (linear shares between bin centres): calibrates most."""

    def __init__(self, *args, empty_weight: float = 0.01, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not empty_weight >= 0:
            raise ValueError(f"empty_weight must be >= 0, got {empty_weight!r}.")
        self.empty_weight = empty_weight

    def _bins(self, probs: torch.Tensor, target: torch.Tensor) -> BinStats:
        return soft_binning(probs, target, self.num_bins, self.empty_weight, validate=self.validate)


class ACEDiceCELoss(_Loss):
    """The paper's compound loss: ``dice_weight * Dice + ce_weight * CE + ace_weight * mL1-ACE``.

    ``binning`` is ``"hard"``, ``"soft"`` or ``None`` (the Dice+CE baseline). Dice and CE are
    MONAI's ``DiceCELoss`` (CE for softmax, BCE for sigmoid/multi-label targets such as the
    overlapping BraTS and KiTS regions). Defaults are the paper's configuration; ``softmax``
    defaults to ``not sigmoid``, so ``sigmoid=True`` alone selects the multi-label losses.
    ``validate=False`` skips the input checks, which synchronise a GPU with the host; training
    loops that check the loss for NaN where they log can turn them off.
    """

    def __init__(
        self,
        binning: str | None = "hard",
        ace_weight: float = 0.33,
        dice_weight: float = 0.33,
        ce_weight: float = 0.33,
        num_bins: int = 20,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool | None = None,
        empty_weight: float = 0.01,
        squared_pred: bool = True,
        smooth_nr: float = 0.0,
        smooth_dr: float = 1e-5,
        ignore_empty_classes: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if binning not in ("hard", "soft", None):
            raise ValueError(f"binning must be 'hard', 'soft' or None (baseline), got {binning!r}.")
        if softmax is None:
            softmax = not sigmoid
        if sigmoid and softmax:
            raise ValueError(
                "Incompatible activations: set only one of sigmoid=True, softmax=True."
            )
        for name, value in (
            ("ace_weight", ace_weight),
            ("dice_weight", dice_weight),
            ("ce_weight", ce_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.binning = binning
        self.ace_weight = ace_weight
        self.dice_ce = DiceCELoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            squared_pred=squared_pred,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            lambda_dice=dice_weight,
            lambda_ce=ce_weight,
        )
        ace_args = dict(
            num_bins=num_bins,
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            ignore_empty_classes=ignore_empty_classes,
            validate=validate,
        )
        if binning == "hard":
            self.ace: _L1ACELoss | None = HardL1ACELoss(**ace_args)
        elif binning == "soft":
            self.ace = SoftL1ACELoss(**ace_args, empty_weight=empty_weight)
        else:
            self.ace = None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input`` logits (B, C, *spatial); ``target`` one-hot or label map (with to_onehot_y)."""
        loss = self.dice_ce(input, target)
        if self.ace is not None and self.ace_weight > 0:
            loss = loss + self.ace_weight * self.ace(input, target)
        return loss


def l1_ace_gradient(
    probs: torch.Tensor,
    target: torch.Tensor,
    binning: str = "hard",
    num_bins: int = 20,
    empty_weight: float = 0.01,
) -> tuple[float, torch.Tensor]:
    """The mL1-ACE of probabilities and its gradient with respect to each of them, in float64.

    What the binning playground and notebook 02 show: which way, and how hard, the loss pushes
    every probability (autograd through :class:`HardL1ACELoss` or :class:`SoftL1ACELoss`).

    Args:
        probs: probabilities ``(B, C, *spatial)``.
        target: the one-hot target of the same shape.
        binning: ``"hard"`` or ``"soft"``.
        num_bins: the number of bins.
        empty_weight: the soft bins' occupancy threshold.

    Returns:
        The loss and ``d loss / d probs`` (the shape of ``probs``).

    Example:
        >>> import torch
        >>> loss, grad = l1_ace_gradient(torch.tensor([[[0.3, 0.8]]]), torch.tensor([[[0., 1.]]]))
        >>> round(loss, 2), grad.tolist()
        (0.25, [[[0.5, -0.5]]])
    """
    if binning not in ("hard", "soft"):
        raise ValueError(f"binning must be 'hard' or 'soft', got {binning!r}.")
    probs = probs.detach().double().requires_grad_(True)
    target = target.detach().double()
    if binning == "soft":
        loss_fn: _L1ACELoss = SoftL1ACELoss(num_bins=num_bins, empty_weight=empty_weight)
    else:
        loss_fn = HardL1ACELoss(num_bins=num_bins)
    loss = loss_fn(probs, target)
    (gradient,) = torch.autograd.grad(loss, probs)
    return float(loss.detach()), gradient
