"""Teaching views: the binning playground's example and the noise-floor table of notebook 01."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.binning import hard_binning, soft_binning
from calibtut.losses import l1_ace_gradient
from calibtut.metrics import (
    calibration_errors,
    draw_floor_labels,
    noise_floor,
)

EXAMPLE_PROBS = (0.05, 0.15, 0.3, 0.45, 0.55, 0.7, 0.85, 0.95)


EXAMPLE_TARGETS = (0, 0, 1, 0, 1, 0, 1, 1)
"""The binning playground's small example (one image, one class); the chosen value joins it."""


@dataclass(frozen=True)
class BinningExample:
    """Where one probability is binned, and the mL1-ACE and its gradient on a small example.

    Args:
        weights: the value's share of each bin ``(num_bins,)`` (one 1 for hard bins).
        probs: the example's probabilities, the value last.
        targets: their targets.
        loss: the example's mL1-ACE.
        gradient: ``d loss / d probs``.
        figure: :func:`calibtut.plots.binning_figure` of all of it.
    """

    weights: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor
    loss: float
    gradient: torch.Tensor
    figure: Figure


def floor_table(
    probs: torch.Tensor,
    target: torch.Tensor,
    class_names: Sequence[str],
    num_bins: int = 20,
    draws: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """How much of one image's ACE a perfectly calibrated model would show too: per class the
    ACE, its noise floor (:func:`calibtut.metrics.noise_floor`), their ratio and the voxels of a
    typical middle bin (the fewer, the higher the floor).

    Args:
        probs: one image's probabilities ``(1, C, *spatial)``.
        target: its one-hot labels, the same shape.
        class_names: the ``C`` classes.
        num_bins: equal-width bins.
        draws: label draws behind the floor (its standard error is printed in the table).
        seed: seeds the draws.

    Returns:
        One row per class: ``ACE``, ``floor``, ``floor se``, ``ACE / floor`` and ``voxels per
        middle bin`` (the median count of the occupied bins between the first and the last).

    Example:
        >>> from calibtut.data import toy_segmentation
        >>> toy = toy_segmentation()
        >>> table = floor_table(toy.probs, toy.target, toy.class_names)
        >>> bool((table["ACE"] > table["floor"]).all())
        True

    Taught in notebooks/01_what_is_calibration.
    """
    bins = hard_binning(probs, target, num_bins)
    generator = torch.Generator().manual_seed(seed)
    floor = noise_floor(bins, draw_floor_labels(probs, num_bins, draws, generator=generator))
    ace = calibration_errors(bins).ace[0].double()
    middle = bins.count[0, :, 1:-1].double()
    counts = [row[row > 0].median().item() if (row > 0).any() else 0.0 for row in middle]
    return pd.DataFrame(
        {
            "ACE": ace.numpy(),
            "floor": floor.ace[0].double().numpy(),
            "floor se": floor.ace_se[0].double().numpy(),
            "ACE / floor": (ace / floor.ace[0].double()).numpy(),
            "voxels per middle bin": counts,
        },
        index=pd.Index(list(class_names), name="class"),
    )


def binning_example(
    value: float, num_bins: int = 5, binning: str = "soft", target: int = 1
) -> BinningExample:
    """Bin ``value`` (with its ``target``) alone, and evaluate the loss on the example with it.

    What the binning playground shows: the example is :data:`EXAMPLE_PROBS` /
    :data:`EXAMPLE_TARGETS` plus the value; the figure is :func:`calibtut.plots.binning_figure`.

    Args:
        value: the probability to bin, in [0, 1].
        num_bins: the number of bins.
        binning: ``"soft"`` or ``"hard"``.
        target: the value's target (0 or 1).

    Returns:
        :class:`BinningExample`.

    Example:
        >>> example = binning_example(0.5, num_bins=2, binning="soft")   # doctest: +SKIP
        >>> example.weights                                              # doctest: +SKIP
        tensor([0.5000, 0.5000], dtype=torch.float64)

    Taught in notebooks/02_hard_and_soft_binning.
    """
    probs = torch.tensor([*EXAMPLE_PROBS, value], dtype=torch.float64).view(1, 1, -1)
    targets = torch.tensor([*EXAMPLE_TARGETS, target], dtype=torch.float64).view(1, 1, -1)
    bin_values = soft_binning if binning == "soft" else hard_binning
    weights = bin_values(probs[..., -1:], targets[..., -1:], num_bins).count[0, 0]
    loss, gradient = l1_ace_gradient(probs, targets, binning, num_bins)
    figure = plots.binning_figure(
        value, weights, probs[0, 0], targets[0, 0], gradient[0, 0], loss, binning,
        highlight=len(EXAMPLE_PROBS),
    )  # fmt: skip
    return BinningExample(weights, probs[0, 0], targets[0, 0], loss, gradient[0, 0], figure)
