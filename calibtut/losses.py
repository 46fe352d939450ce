"""The marginal L1 Average Calibration Error (mL1-ACE) losses of Barfoot et al. (arXiv 2506.03942).

Per image and class, mL1-ACE is the mean over occupied bins of |mean prediction - mean
target|. With hard bins its gradient reaches each voxel through its bin's mean prediction;
with soft bins it also flows through the bin shares, which calibrates more at some Dice cost.
``ACEDiceCELoss`` adds it to MONAI's Dice+CE, the paper's compound loss; with one bin it is
MDCA (Hebbalaguppe et al., CVPR 2022): per image and class, |mean probability - class share|.

The other calibration losses the course compares replace the cross-entropy of that Dice+CE
(:class:`DiceCalibrationLoss`): MONAI's focal loss and NACL, the cross-entropy against smoothed
labels, and two written here, :class:`SVLSLoss` (spatially varying label smoothing) and
:class:`MbLSLoss` (margin-based label smoothing).

Example:
    Two bins split at 0.5. Bin 0 holds 0.1, 0.2, 0.3 (targets 0, 0, 1): mean 0.2 against 1/3,
    a gap of 2/15; bin 1 holds 0.8 (target 1), a gap of 0.2. mL1-ACE = (2/15 + 0.2) / 2 = 1/6.

    >>> import torch
    >>> from calibtut.losses import HardL1ACELoss
    >>> probs = torch.tensor([[[0.1, 0.2, 0.3, 0.8]]])
    >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    >>> round(HardL1ACELoss(num_bins=2)(probs, target).item(), 4)
    0.1667
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, NACLLoss
from monai.networks import one_hot
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from calibtut.binning import (
    BinStats,
    _check_not_empty,
    _check_num_bins,
    _check_weight,
    hard_binning,
    soft_binning,
)

__all__ = [
    "HardL1ACELoss",
    "SoftL1ACELoss",
    "ACEDiceCELoss",
    "SVLSLoss",
    "MbLSLoss",
    "DiceCalibrationLoss",
    "TERMS",
    "svls_kernel",
    "l1_ace",
    "l1_ace_gradient",
]


def l1_ace(bins: BinStats) -> torch.Tensor:
    """Differentiable mean over occupied bins of the calibration gap, ``(B, C)``; 0 with no occupied bin.

    The mL1-ACE of each image and class: what both losses average. It is 0 rather than NaN
    where no bin is occupied, so a loss never turns NaN on an empty class.

    Args:
        bins: per image and class bins (:func:`calibtut.binning.hard_binning` or
            :func:`calibtut.binning.soft_binning`).

    Returns:
        ``(B, C)`` tensor, differentiable through the bins' sums.

    Example:
        Class 0 occupies bins 0 and 2 with gaps |0.3 - 0.5| = 0.2 and |0.9 - 1| = 0.1: mean 0.15.
        Class 1 has no occupied bin: 0.

        >>> import torch
        >>> bins = BinStats(
        ...     pred_sum=torch.tensor([[[0.6, 0.0, 2.7], [0.0, 0.0, 0.0]]]),
        ...     target_sum=torch.tensor([[[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]]]),
        ...     count=torch.tensor([[[2.0, 0.0, 3.0], [0.0, 0.0, 0.0]]]),
        ... )
        >>> l1_ace(bins)
        tensor([[0.1500, 0.0000]])
    """
    occupied = bins.occupied
    safe = torch.where(occupied, bins.count, torch.ones_like(bins.count))
    gap = ((bins.pred_sum - bins.target_sum) / safe).abs()
    gap = torch.where(occupied, gap, torch.zeros_like(gap))
    return gap.sum(-1) / occupied.sum(-1).clamp(min=1)


class _L1ACELoss(_Loss, ABC):
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
        self.num_bins = _check_num_bins(num_bins)
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
        """The mL1-ACE of a batch.

        Args:
            input: ``(B, C, *spatial)`` logits (with an activation) or probabilities.
            target: one-hot ``(B, C, *spatial)``, or a label map ``(B, 1, *spatial)`` with
                ``to_onehot_y=True``.

        Returns:
            The loss: a scalar (``"mean"``, ``"sum"``) or ``(B, C, 1, ...)`` (``"none"``).

        Raises:
            TypeError: an input is not a tensor, or ``input`` is not floating point.
            ValueError: bad shapes, an empty input, bad label values or probabilities
                (``validate``), or class weights that do not fit the classes.
        """
        return self._loss(input, target, check_labels=self.validate)

    def _loss(self, input: torch.Tensor, target: torch.Tensor, check_labels: bool) -> torch.Tensor:
        """:meth:`forward`, with the label values checked only when ``check_labels``."""
        probs, target = self._prepare(input, target, check_labels)
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

    @abstractmethod
    def _bins(self, probs: torch.Tensor, target: torch.Tensor) -> BinStats:
        """Hard or soft bin sums of ``probs`` against ``target``: what the subclass decides."""

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
        self, input: torch.Tensor, target: torch.Tensor, check_labels: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input(input, target)
        n_pred_ch = input.shape[1]
        probs = input
        if self.sigmoid:
            probs = torch.sigmoid(probs)
        if self.softmax:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=4)
            else:
                probs = torch.softmax(probs.float() if probs.dtype == torch.float16 else probs, 1)
        if self.other_act is not None:
            probs = self.other_act(probs)
        if self.to_onehot_y:
            target = _label_map_to_onehot(target, input, check_labels)
        if not self.include_background:
            if n_pred_ch == 1:
                warnings.warn(
                    "single channel prediction, `include_background=False` ignored.", stacklevel=4
                )
            else:
                probs, target = probs[:, 1:], target[:, 1:]
        if target.shape != probs.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input shape {tuple(probs.shape)}; "
                "pass a one-hot target, or a label map (B, 1, *spatial) with to_onehot_y=True."
            )
        return probs, target


def _check_input(input: torch.Tensor, target: torch.Tensor) -> None:
    """The checks of a loss's input that need no look at its values (no GPU synchronisation)."""
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
    _check_not_empty("input", input)


def _check_label_map(target: torch.Tensor, input: torch.Tensor, values: bool = True) -> None:
    """calibtut's label check: the shape of a label map always, its values when ``values``."""
    n = input.shape[1]
    expected = (input.shape[0], 1, *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"with to_onehot_y=True the target must be a label map of shape {expected}, "
            f"got {tuple(target.shape)}."
        )
    if not values:
        return
    labels = target.detach()
    _check_not_empty("target", labels)
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("label map must hold integer class indices, found non-integer values.")
    lo, hi = (float(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= n:
        raise ValueError(
            f"label values must lie in [0, {n - 1}] for {n} classes, got [{lo:g}, {hi:g}]."
        )


def _label_map_to_onehot(target: torch.Tensor, input: torch.Tensor, validate: bool) -> torch.Tensor:
    """The one-hot ``(B, C, *spatial)`` of a label map, after :func:`_check_label_map`."""
    _check_label_map(target, input, validate)
    return one_hot(target.detach().long(), num_classes=input.shape[1], dtype=torch.float32)


class HardL1ACELoss(_L1ACELoss):
    """mL1-ACE with hard (MONAI-convention) bins: calibrates while keeping Dice.

    Each voxel's gradient is that of its bin's mean prediction: the loss pulls a whole bin's
    probabilities towards the bin's accuracy, and a voxel never changes bin through it. The
    arguments follow MONAI's losses (``DiceLoss``).

    Args:
        num_bins: the number of equal-width bins over [0, 1] (the paper's 20).
        include_background: score channel 0 too (False drops it after the activation).
        to_onehot_y: the target is a label map ``(B, 1, *spatial)``, one-hot encoded here.
        sigmoid: apply a sigmoid to ``input`` (multi-label regions).
        softmax: apply a softmax over the channels of ``input``.
        other_act: any other activation (a callable); at most one of the three.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over images and classes.
        weight: one weight per scored class, or one for all (finite, >= 0).
        ignore_empty_classes: a class absent from an image's target adds 0 (the paper's choice).
        validate: check the input values (label range, NaN, probabilities in [0, 1]); they
            synchronise a GPU with the host.

    Raises:
        TypeError: ``other_act`` is not callable.
        ValueError: several activations, a bad ``num_bins``, ``weight`` or ``reduction``.

    Example:
        The module docstring's hand-worked case: 1/6 with two bins; with 20 bins every value is
        alone in its bin, gaps 0.1, 0.2, 0.7 and 0.2, mean 0.3.

        >>> import torch
        >>> probs = torch.tensor([[[0.1, 0.2, 0.3, 0.8]]])
        >>> target = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
        >>> round(HardL1ACELoss(num_bins=2)(probs, target).item(), 4)
        0.1667
        >>> round(HardL1ACELoss()(probs, target).item(), 4)
        0.3

    Taught in notebooks/02_hard_and_soft_binning.
    """

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
        super().__init__(
            num_bins=num_bins,
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            weight=weight,
            ignore_empty_classes=ignore_empty_classes,
            validate=validate,
        )

    def _bins(self, probs: torch.Tensor, target: torch.Tensor) -> BinStats:
        return hard_binning(probs, target, self.num_bins, validate=self.validate)


class SoftL1ACELoss(_L1ACELoss):
    """mL1-ACE with soft bins (linear shares between bin centres): calibrates most.

    The gradient also flows through each voxel's shares of its two nearest bins, so the loss
    can move a probability towards a better-calibrated bin; it calibrates more than the hard
    loss, at some Dice cost. A bin whose total weight is under ``empty_weight`` is empty.

    Args:
        num_bins: the number of bins (the paper's 20).
        include_background: score channel 0 too (False drops it after the activation).
        to_onehot_y: the target is a label map ``(B, 1, *spatial)``, one-hot encoded here.
        sigmoid: apply a sigmoid to ``input`` (multi-label regions).
        softmax: apply a softmax over the channels of ``input``.
        other_act: any other activation (a callable); at most one of the three.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over images and classes.
        weight: one weight per scored class, or one for all (finite, >= 0).
        ignore_empty_classes: a class absent from an image's target adds 0 (the paper's choice).
        validate: check the input values (label range, NaN, probabilities in [0, 1]); they
            synchronise a GPU with the host.
        empty_weight: the occupancy threshold of a soft bin (keyword only; a finite number >= 0).

    Raises:
        TypeError: ``other_act`` is not callable.
        ValueError: several activations, a bad ``num_bins``, ``weight``, ``reduction`` or
            ``empty_weight``.

    Example:
        Two bins, centres 0.25 and 0.75: 0.1 goes wholly to bin 0, 0.9 to bin 1, 0.5 half to
        each. With targets 0, 1, 1 the gaps are 0.15 / 1.5 = 0.1 and 0.35 / 1.5 = 7/30, mean 1/6.

        >>> import torch
        >>> probs = torch.tensor([[[0.1, 0.5, 0.9]]], dtype=torch.float64)
        >>> target = torch.tensor([[[0.0, 1.0, 1.0]]], dtype=torch.float64)
        >>> round(SoftL1ACELoss(num_bins=2)(probs, target).item(), 4)
        0.1667

    Taught in notebooks/02_hard_and_soft_binning.
    """

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
        *,
        empty_weight: float = 0.01,
    ) -> None:
        super().__init__(
            num_bins=num_bins,
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            weight=weight,
            ignore_empty_classes=ignore_empty_classes,
            validate=validate,
        )
        _check_weight("empty_weight", empty_weight)
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
    loops that check the loss for NaN where they log can turn them off. With ``validate=True``
    a label map is checked by calibtut before MONAI's Dice+CE sees it.

    Args:
        binning: ``"hard"``, ``"soft"`` or None (no mL1-ACE term).
        ace_weight: the weight of mL1-ACE (a finite number >= 0).
        dice_weight: the weight of Dice (a finite number >= 0).
        ce_weight: the weight of cross-entropy (a finite number >= 0).
        num_bins: the mL1-ACE's number of bins (a positive integer).
        include_background: score channel 0 too, in all three terms.
        to_onehot_y: the target is a label map ``(B, 1, *spatial)``.
        sigmoid: sigmoid activation and BCE (multi-label regions).
        softmax: softmax activation and CE (None: ``not sigmoid``).
        empty_weight: the soft bins' occupancy threshold (a finite number >= 0).
        squared_pred: MONAI Dice's squared denominator (the paper's setting).
        smooth_nr: MONAI Dice's numerator smoothing.
        smooth_dr: MONAI Dice's denominator smoothing.
        ignore_empty_classes: mL1-ACE adds 0 for a class absent from an image.
        validate: check input values (labels, probabilities) before computing anything.

    Raises:
        ValueError: an unknown ``binning``, both activations, a weight that is NaN, infinite,
            negative or a bool, or a bad ``num_bins``.

    Example:
        The compound loss is MONAI's Dice+CE plus ``ace_weight`` times the mL1-ACE:

        >>> import torch
        >>> logits = torch.tensor([[[[2.0, -1.0, 0.5]], [[-2.0, 1.0, 0.0]]]])  # (1, 2, 1, 3)
        >>> labels = torch.tensor([[[[0, 1, 1]]]])                               # (1, 1, 1, 3)
        >>> loss = ACEDiceCELoss(binning="soft", to_onehot_y=True)
        >>> dice_ce = ACEDiceCELoss(binning=None, to_onehot_y=True)(logits, labels)
        >>> ace = SoftL1ACELoss(softmax=True, to_onehot_y=True)(logits, labels)
        >>> bool(torch.isclose(loss(logits, labels), dice_ce + 0.33 * ace))
        True
        >>> loss(logits, torch.tensor([[[[0, 1, 5]]]]))
        Traceback (most recent call last):
        ...
        ValueError: label values must lie in [0, 1] for 2 classes, got [0, 5].

    Taught in notebooks/02_hard_and_soft_binning and 03_training_with_calibration_losses.
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
        softmax = _compound_activation(binning, sigmoid, softmax)
        for name, value in (
            ("ace_weight", ace_weight),
            ("dice_weight", dice_weight),
            ("ce_weight", ce_weight),
            ("empty_weight", empty_weight),
        ):
            _check_weight(name, value)
        self.binning = binning
        self.ace_weight = ace_weight
        self.to_onehot_y = to_onehot_y
        self.validate = validate
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
        self.ace: _L1ACELoss | None = None
        if binning == "hard":
            self.ace = HardL1ACELoss(**ace_args)
        elif binning == "soft":
            self.ace = SoftL1ACELoss(**ace_args, empty_weight=empty_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The compound loss of a batch (a scalar).

        Args:
            input: logits ``(B, C, *spatial)``.
            target: one-hot ``(B, C, *spatial)``, or a label map ``(B, 1, *spatial)`` with
                ``to_onehot_y=True`` (checked here, before MONAI's Dice+CE sees it).

        Returns:
            ``dice_weight * Dice + ce_weight * CE (+ ace_weight * mL1-ACE)``.

        Raises:
            TypeError: an input is not a tensor, or ``input`` is not floating point.
            ValueError: bad shapes, an empty input, or (``validate``) bad label values.
        """
        _check_input(input, target)
        if self.to_onehot_y:
            _check_label_map(target, input, self.validate)
        loss = self.dice_ce(input, target)
        if self.ace is not None and self.ace_weight > 0:
            loss = loss + self.ace_weight * self.ace._loss(input, target, check_labels=False)
        return loss


def _compound_activation(binning: str | None, sigmoid: bool, softmax: bool | None) -> bool:
    """Check ``binning`` and the activations of :class:`ACEDiceCELoss`; the softmax flag to use."""
    if binning not in ("hard", "soft", None):
        raise ValueError(f"binning must be 'hard', 'soft' or None (baseline), got {binning!r}.")
    if softmax is None:
        softmax = not sigmoid
    if sigmoid and softmax:
        raise ValueError("Incompatible activations: set only one of sigmoid=True, softmax=True.")
    return softmax


# --- the other calibration losses the course compares ------------------------------------------

TERMS: dict[str, dict[str, float]] = {
    "focal": {"gamma": 3.0},
    "label_smoothing": {"smoothing": 0.1},
    "nacl": {"kernel_size": 3, "alpha": 0.1},
    "svls": {"kernel_size": 3, "sigma": 1.0},
    "mbls": {"margin": 10.0, "alpha": 0.1},
}
"""The terms :class:`DiceCalibrationLoss` puts in place of the cross-entropy, with the options
each takes and their defaults, the segmentation literature's settings: focal gamma 3; label
smoothing 0.1; NACL's 3x3(x3) mean kernel and weight 0.1; SVLS's 3x3(x3) kernel of sigma 1;
MbLS's margin 10 and weight 0.1."""


def _softmax_target(
    input: torch.Tensor, target: torch.Tensor, label_map: bool, validate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class indices ``(B, *spatial)`` and the one-hot ``(B, C, *spatial)`` of a target that
    is a label map (``label_map``) or one-hot, after calibtut's input checks."""
    _check_input(input, target)
    if input.shape[1] < 2:
        raise ValueError(
            f"a softmax loss needs at least 2 channels, got input shape {tuple(input.shape)}."
        )
    if label_map:
        _check_label_map(target, input, validate)
        indices = target.detach()[:, 0].long()
        return indices, one_hot(indices[:, None], input.shape[1], dtype=torch.float32)
    if target.shape != input.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match input shape "
            f"{tuple(input.shape)}; pass a one-hot target, or a label map (B, 1, *spatial) "
            "with to_onehot_y=True."
        )
    onehot = target.detach().float()
    return onehot.argmax(1), onehot


def _check_spatial(input: torch.Tensor, what: str) -> int:
    dims = input.ndim - 2
    if dims not in (2, 3):
        raise ValueError(f"{what} needs 2D or 3D images (B, C, H, W[, D]), got {input.ndim} dims.")
    return dims


def _check_kernel_size(kernel_size: int) -> int:
    try:
        value = None if isinstance(kernel_size, bool) else operator.index(kernel_size)
    except TypeError:
        value = None
    if value is None or value < 1 or value % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
    return value


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return float(value)


def svls_kernel(spatial_dims: int, kernel_size: int = 3, sigma: float = 1.0) -> torch.Tensor:
    """The SVLS kernel of Islam & Glocker: the voxel keeps half of its label, its neighbours share
    the other half in proportion to a Gaussian of their distance.

    Their construction: a Gaussian normalised to 1, its centre replaced by the sum of the other
    weights, then everything divided by the total (so the kernel sums to 1).

    Args:
        spatial_dims: 2 or 3.
        kernel_size: the kernel's edge (a positive odd integer; 3 in the paper).
        sigma: the Gaussian's standard deviation in voxels (> 0; 1 in the paper).

    Returns:
        ``(kernel_size,) * spatial_dims`` float32 weights summing to 1, the centre 0.5.

    Raises:
        ValueError: bad ``spatial_dims``, ``kernel_size`` or ``sigma``.

    Example:
        In 2D the four edge neighbours weigh more than the four corners:

        >>> k = svls_kernel(2)
        >>> round(k[1, 1].item(), 3), round(k[0, 1].item(), 3), round(k[0, 0].item(), 3)
        (0.5, 0.078, 0.047)
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    size = _check_kernel_size(kernel_size)
    sigma = _check_positive("sigma", sigma)
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    grids = torch.meshgrid(*([offsets] * spatial_dims), indexing="ij")
    gauss = torch.exp(-sum(g**2 for g in grids) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    centre = (size // 2,) * spatial_dims
    gauss[centre] = 1 - gauss[centre]  # the centre weighs as much as all its neighbours
    return (gauss / gauss.sum()).float()


class SVLSLoss(_Loss):
    """Cross-entropy against spatially varying smoothed labels (SVLS; Islam & Glocker, IPMI 2021).

    Each voxel's one-hot label is replaced by the :func:`svls_kernel`-weighted mean of the labels
    around it (borders replicated): inside a structure the label stays one-hot, at a boundary it
    becomes the local mixture of classes, which is what a calibrated model should predict there.

    Args:
        sigma: the Gaussian's standard deviation in voxels (> 0).
        kernel_size: the kernel's edge (a positive odd integer).
        validate: check label values (they synchronise a GPU with the host).

    Raises:
        ValueError: bad ``sigma`` or ``kernel_size``.

    Example:
        Away from a boundary the smoothed label is the one-hot label, so SVLS is the CE:

        >>> import torch
        >>> logits = torch.randn(1, 2, 5, 5)
        >>> labels = torch.zeros(1, 1, 5, 5, dtype=torch.long)     # one class everywhere
        >>> ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
        >>> bool(torch.isclose(SVLSLoss()(logits, labels), ce))
        True
    """

    def __init__(self, sigma: float = 1.0, kernel_size: int = 3, validate: bool = True) -> None:
        super().__init__()
        self.sigma = _check_positive("sigma", sigma)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.validate = validate

    def smoothed_labels(self, onehot: torch.Tensor) -> torch.Tensor:
        """The SVLS labels of a one-hot target.

        Args:
            onehot: ``(B, C, H, W[, D])`` one-hot labels.

        Returns:
            Soft labels of the same shape (each voxel's sum to 1).

        Raises:
            ValueError: the labels are neither 2D nor 3D.
        """
        dims = _check_spatial(onehot, "SVLS")
        kernel = svls_kernel(dims, self.kernel_size, self.sigma).to(onehot)
        channels = onehot.shape[1]
        pad = (self.kernel_size // 2,) * (2 * dims)
        padded = F.pad(onehot.float(), pad, mode="replicate")
        weight = kernel.expand(channels, 1, *kernel.shape)
        conv = F.conv2d if dims == 2 else F.conv3d
        return conv(padded, weight, groups=channels)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The SVLS cross-entropy, the mean over voxels (a scalar).

        Args:
            input: logits ``(B, C, H, W[, D])``.
            target: a label map ``(B, 1, ...)`` or one-hot ``(B, C, ...)`` labels.

        Returns:
            ``mean over voxels of -sum_c q_c log softmax(input)_c``, ``q`` the smoothed labels.

        Raises:
            TypeError, ValueError: bad input (shapes, label values, dimensions).
        """
        label_map = target.ndim == input.ndim and target.shape[1] == 1
        _, onehot = _softmax_target(input, target, label_map, self.validate)
        soft = self.smoothed_labels(onehot)
        return -(soft * F.log_softmax(input.float(), 1)).sum(1).mean()


class MbLSLoss(_Loss):
    """Margin-based label smoothing (MbLS; Liu et al., CVPR 2022; Murugesan et al., MedIA 2023).

    ``CE + alpha * mean over voxels and classes of ReLU(max_j z_j - z_k - margin)``: logit
    distances up to ``margin`` are free, larger ones (the overconfidence of CE, which pushes
    them ever apart) are penalised linearly. Label smoothing is the special case of a margin 0
    on a different penalty; the margin lets a confident prediction stay confident.

    Args:
        margin: the free logit distance (a finite number >= 0).
        alpha: the penalty's weight (a finite number >= 0).
        validate: check label values (they synchronise a GPU with the host).

    Raises:
        ValueError: a bad ``margin`` or ``alpha``.

    Example:
        Logits 12 apart exceed the margin of 10 by 2 in one of the two classes: CE + 0.1 * 2 / 2.

        >>> import torch
        >>> logits = torch.tensor([[[[12.0]], [[0.0]]]])            # (1, 2, 1, 1)
        >>> labels = torch.zeros(1, 1, 1, 1, dtype=torch.long)
        >>> ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
        >>> bool(torch.isclose(MbLSLoss()(logits, labels), ce + 0.1))
        True
    """

    def __init__(self, margin: float = 10.0, alpha: float = 0.1, validate: bool = True) -> None:
        super().__init__()
        self.margin = _check_weight("margin", margin)
        self.alpha = _check_weight("alpha", alpha)
        self.validate = validate

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The MbLS loss of a batch (a scalar).

        Args:
            input: logits ``(B, C, *spatial)``.
            target: a label map ``(B, 1, ...)`` or one-hot ``(B, C, ...)`` labels.

        Returns:
            ``CE + alpha * mean ReLU(max_j z_j - z_k - margin)``.

        Raises:
            TypeError, ValueError: bad input (shapes, label values).
        """
        label_map = target.ndim == input.ndim and target.shape[1] == 1
        indices, _ = _softmax_target(input, target, label_map, self.validate)
        logits = input.float()
        distance = logits.amax(1, keepdim=True) - logits
        return F.cross_entropy(logits, indices) + self.alpha * F.relu(distance - self.margin).mean()


class DiceCalibrationLoss(_Loss):
    """``dice_weight * Dice + term_weight * term``: the baseline's Dice+CE with its cross-entropy
    replaced by a calibration loss of the segmentation literature.

    ``term`` is one of :data:`TERMS`, each on the cross-entropy's scale (each equals the CE
    when its option is 0, and it keeps the baseline's weight of 0.33):

    * ``"focal"``: MONAI's ``FocalLoss`` (softmax), summed over classes as the CE is:
      ``-(1 - p_y)^gamma log p_y``; it down-weights the voxels the network already gets right;
    * ``"label_smoothing"``: the CE against labels ``(1 - s) * one-hot + s / C`` (PyTorch's, as
      MONAI's ``DiceCELoss(label_smoothing=s)`` computes it);
    * ``"nacl"``: MONAI's ``NACLLoss``: CE + ``alpha`` * mean |logits - mean of the one-hot
      labels in a ``kernel_size`` neighbourhood|;
    * ``"svls"``: :class:`SVLSLoss`; ``"mbls"``: :class:`MbLSLoss`.

    Dice is MONAI's ``DiceLoss`` with the baseline's settings (softmax, squared denominator),
    over every channel. These losses are defined for a softmax over exclusive labels.

    Args:
        term: a key of :data:`TERMS`.
        dice_weight: the weight of Dice (a finite number >= 0).
        term_weight: the weight of the term (a finite number >= 0).
        to_onehot_y: the target is a label map ``(B, 1, *spatial)`` (else one-hot).
        squared_pred: MONAI Dice's squared denominator (the paper's setting).
        smooth_nr: MONAI Dice's numerator smoothing.
        smooth_dr: MONAI Dice's denominator smoothing.
        validate: check label values before computing anything.
        options: the term's options (:data:`TERMS`), e.g. ``gamma=2.0`` for the focal loss.

    Raises:
        ValueError: an unknown term, a bad weight or option value.
        TypeError: an option the term does not take.

    Example:
        At gamma 0 the focal loss is the cross-entropy, so the compound is the baseline:

        >>> import torch
        >>> logits, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))
        >>> focal = DiceCalibrationLoss("focal", to_onehot_y=True, gamma=0.0)
        >>> baseline = ACEDiceCELoss(binning=None, to_onehot_y=True)
        >>> bool(torch.isclose(focal(logits, labels), baseline(logits, labels)))
        True
        >>> DiceCalibrationLoss("focal", margin=3.0)
        Traceback (most recent call last):
        ...
        TypeError: the focal term takes gamma, not margin.
    """

    def __init__(
        self,
        term: str,
        dice_weight: float = 0.33,
        term_weight: float = 0.33,
        to_onehot_y: bool = False,
        squared_pred: bool = True,
        smooth_nr: float = 0.0,
        smooth_dr: float = 1e-5,
        validate: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        if term not in TERMS:
            raise ValueError(f"term must be one of {', '.join(TERMS)}, got {term!r}.")
        unknown = sorted(set(options) - set(TERMS[term]))
        if unknown:
            raise TypeError(
                f"the {term} term takes {', '.join(TERMS[term])}, not {', '.join(unknown)}."
            )
        self.term = term
        self.options = {**TERMS[term], **options}
        self.dice_weight = _check_weight("dice_weight", dice_weight)
        self.term_weight = _check_weight("term_weight", term_weight)
        self.to_onehot_y = to_onehot_y
        self.validate = validate
        self.dice = DiceLoss(
            include_background=True,
            softmax=True,
            squared_pred=squared_pred,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )
        self._term = self._make_term()

    def _make_term(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The term as a function of (logits, class indices, one-hot), its options checked."""
        o = self.options
        if self.term == "focal":
            focal = FocalLoss(use_softmax=True, gamma=_check_weight("gamma", o["gamma"]),
                              reduction="none")  # fmt: skip
            return lambda z, _, onehot: focal(z, onehot).sum(1).mean()
        if self.term == "label_smoothing":
            s = _check_weight("smoothing", o["smoothing"])
            if s > 1:
                raise ValueError(f"smoothing must lie in [0, 1], got {s!r}.")
            return lambda z, indices, _: F.cross_entropy(z, indices, label_smoothing=s)
        if self.term == "nacl":
            size = _check_kernel_size(o["kernel_size"])
            alpha = _check_weight("alpha", o["alpha"])
            built: dict[tuple[int, int], NACLLoss] = {}

            def nacl(z: torch.Tensor, indices: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
                key = (z.shape[1], _check_spatial(z, "NACL"))
                if key not in built:  # MONAI's NACLLoss is made for one number of classes
                    built[key] = NACLLoss(*key, kernel_size=size, alpha=alpha)
                return built[key](z, indices)

            return nacl
        if self.term == "svls":
            svls = SVLSLoss(o["sigma"], o["kernel_size"], validate=False)
            return lambda z, _, onehot: (
                -(svls.smoothed_labels(onehot) * F.log_softmax(z, 1)).sum(1).mean()
            )
        mbls = MbLSLoss(o["margin"], o["alpha"], validate=False)
        return lambda z, indices, _: mbls(z, indices[:, None])

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The compound loss of a batch (a scalar).

        Args:
            input: logits ``(B, C, *spatial)``, ``C >= 2``.
            target: a label map ``(B, 1, *spatial)`` with ``to_onehot_y=True``, else one-hot.

        Returns:
            ``dice_weight * Dice + term_weight * term``.

        Raises:
            TypeError: an input is not a tensor, or ``input`` is not floating point.
            ValueError: bad shapes, an empty input, fewer than 2 channels, or (``validate``)
                bad label values.
        """
        indices, onehot = _softmax_target(input, target, self.to_onehot_y, self.validate)
        onehot = onehot.to(input.device)
        logits = input.float()
        loss = self.dice_weight * self.dice(logits, onehot)
        return loss + self.term_weight * self._term(logits, indices, onehot)


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

    Raises:
        ValueError: an unknown ``binning``, or input the losses refuse.

    Example:
        0.3 (target 0) and 0.8 (target 1) are each alone in a bin, gaps 0.3 and 0.2: mL1-ACE
        0.25, and each gradient is the sign of its gap over the two occupied bins.

        >>> import torch
        >>> loss, grad = l1_ace_gradient(torch.tensor([[[0.3, 0.8]]]), torch.tensor([[[0., 1.]]]))
        >>> round(loss, 2), grad.tolist()
        (0.25, [[[0.5, -0.5]]])

    Taught in notebooks/02_hard_and_soft_binning (the binning playground).
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
