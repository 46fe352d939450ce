"""The marginal L1 Average Calibration Error (mL1-ACE) losses of Barfoot et al. (arXiv 2506.03942).

Per image and class, mL1-ACE is the mean over occupied bins of |mean prediction - mean
target|. With hard bins its gradient reaches each voxel through its bin's mean prediction;
with soft bins it also flows through the bin shares, which calibrates more at some Dice cost.
``ACEDiceCELoss`` adds it to MONAI's Dice+CE, the paper's compound loss.

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

import warnings
from collections.abc import Callable, Sequence

import torch
from monai.losses import DiceCELoss
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

__all__ = ["HardL1ACELoss", "SoftL1ACELoss", "ACEDiceCELoss", "l1_ace", "l1_ace_gradient"]


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

    def _bins(self, probs: torch.Tensor, target: torch.Tensor) -> BinStats:
        raise NotImplementedError

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
