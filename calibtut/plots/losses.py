"""Figures about the losses themselves: where a probability is binned and how the mL1-ACE
gradient reaches each voxel (notebook 02 and the binning playground)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from calibtut.plots.style import (
    COLOURS,
    Canvas,
    canvas,
    display_edges,
    figure_of,
    numpy,
    styled,
)

__all__ = ["binning_figure", "plot_gradient_maps"]


@styled
def binning_figure(
    value: float,
    weights: Sequence[float] | torch.Tensor,
    probs: Sequence[float] | torch.Tensor,
    targets: Sequence[float] | torch.Tensor,
    gradient: Sequence[float] | torch.Tensor,
    loss: float,
    binning: str,
    highlight: int | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Where one probability is binned, and how an mL1-ACE loss's gradient reaches an example.

    Args:
        value: the probability shown binned.
        weights: its share of each bin (``BinStats.count`` of binning it alone).
        probs: a small example's probabilities.
        targets: their targets.
        gradient: d loss / d prob for each example value.
        loss: the example's loss.
        binning: ``"hard"`` or ``"soft"`` (the title and the boxes' shading).
        highlight: marks one example value (e.g. ``value`` itself).
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Example:
        >>> fig = calibtut.views.binning_example(0.37).figure   # doctest: +SKIP

    Taught in notebooks/02_hard_and_soft_binning.
    """
    weights, probs, targets, gradient = (
        numpy(v).ravel() for v in (weights, probs, targets, gradient)
    )
    if not probs.shape == targets.shape == gradient.shape:
        raise ValueError(
            f"probs, targets and gradient need one length, got {probs.size}, {targets.size}, "
            f"{gradient.size}."
        )
    if weights.size < 1:
        raise ValueError("weights needs one value per bin, got none.")
    edges = display_edges(weights.size)
    fig = canvas(fig, 7.6, 4.2, layout="constrained")
    bins_ax, gradient_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2.2])
    _draw_shares(bins_ax, value, weights, edges, binning)
    _draw_gradient(gradient_ax, probs, targets, gradient, highlight, edges)
    gradient_ax.set_title(f"mL1-ACE ({binning} bins) = {loss:.4f} on the example", gid="loss")
    return figure_of(fig)


def _draw_shares(ax, value: float, weights: np.ndarray, edges: np.ndarray, binning: str) -> None:
    """The bins as boxes shaded by ``value``'s share of each, the shares printed."""
    centres = (edges[:-1] + edges[1:]) / 2
    fill = [
        mcolors.to_rgba(COLOURS["ground_truth"], 0.15 + 0.75 * w) if w > 0 else "white"
        for w in weights
    ]
    ax.bar(
        edges[:-1], np.ones(weights.size), np.diff(edges), align="edge", color=fill,
        edgecolor="0.45", linewidth=0.6, gid="bins",
    )  # fmt: skip
    ax.plot(centres, np.full(weights.size, 0.08), "|", color="0.35", ms=6)
    for centre, weight in zip(centres, weights, strict=True):
        if weight > 0:
            ax.text(
                centre, 0.5, f"{weight:.2f}", ha="center", va="center", fontsize=7.5, gid="weight"
            )
    ax.axvline(value, color=COLOURS["gap"], lw=1.6)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_title(
        f"{binning} binning of p = {value:.3f} into {weights.size} "
        f"bin{'s' * (weights.size != 1)} (shares shown)"
    )


def _draw_gradient(ax, probs, targets, gradient, highlight: int | None, edges) -> None:
    """d loss / d p of each example value as a stem (filled: target 1), ``highlight`` ringed."""
    for edge in edges:
        ax.axvline(edge, color="0.9", lw=0.6, zorder=0)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.vlines(probs, 0, gradient, color="0.5", lw=1)
    for target, face, name in ((1, COLOURS["ground_truth"], "target 1"), (0, "white", "target 0")):
        chosen = targets == target
        ax.scatter(
            probs[chosen], gradient[chosen], s=28, facecolor=face, edgecolor=COLOURS["ground_truth"],
            zorder=3, label=name,
        )  # fmt: skip
    if highlight is not None:
        ax.scatter(
            probs[highlight], gradient[highlight], s=110, facecolor="none", edgecolor=COLOURS["gap"],
            linewidth=1.5, zorder=4, label="p (slider)",
        )  # fmt: skip
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("∂ loss / ∂ p")
    # beside the panel, where no marker or the zero line can lie under it
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


@styled
def plot_gradient_maps(
    image: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor,
    gradients: Mapping[str, np.ndarray | torch.Tensor],
    *,
    fig: Canvas | None = None,
) -> Figure:
    """The image with a class's annotated outline, then one signed gradient map per loss.

    Each map has its own colour scale, symmetric and logarithmic over three decades below its
    largest value (red: the loss falls if the value falls; blue: if it rises), since gradients
    differ in size by orders of magnitude between losses and between voxels.

    Args:
        image: the 2D image.
        boundary: the class's annotated outline, the image's shape (drawn over it).
        gradients: ``{loss name: 2D gradient map}``, each the image's shape.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Raises:
        ValueError: ``image`` and ``boundary`` are not one 2D shape.

    Example:
        >>> fig = plot_gradient_maps(image, outline, {"hard": g_hard, "soft": g_soft})  # doctest: +SKIP

    Taught in notebooks/02_hard_and_soft_binning.
    """
    image, boundary = (np.asarray(torch.as_tensor(a).detach().cpu()) for a in (image, boundary))
    if image.ndim != 2 or boundary.shape != image.shape:
        raise ValueError(
            f"image and boundary must be one 2D shape, got {image.shape}, {boundary.shape}"
        )
    fig = canvas(fig, 2.6 * (1 + len(gradients)), 2.9, layout="constrained")
    axes = fig.subplots(1, 1 + len(gradients), squeeze=False)[0]
    axes[0].imshow(image, cmap="gray")
    axes[0].contour(boundary, levels=[0.5], colors=COLOURS["ground_truth"], linewidths=1)
    axes[0].set_title("image and annotation")
    for ax, (name, gradient) in zip(axes[1:], gradients.items(), strict=True):
        values = np.asarray(torch.as_tensor(gradient).detach().cpu(), dtype=np.float64)
        if values.shape != image.shape:
            raise ValueError(f"gradient {name!r} has shape {values.shape}, expected {image.shape}")
        limit = float(np.abs(values).max()) or 1.0
        norm = mcolors.SymLogNorm(limit * 1e-3, vmin=-limit, vmax=limit)
        shown = ax.imshow(values, cmap="RdBu_r", norm=norm)
        ax.contour(boundary, levels=[0.5], colors="black", linewidths=0.5, alpha=0.5)
        ax.set_title(name)
        ticks = [-limit, -limit / 100, 0, limit / 100, limit]
        fig.colorbar(shown, ax=ax, shrink=0.8, ticks=ticks, format="%.0e")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure_of(fig)
