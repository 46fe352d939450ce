"""Figures about training and its results: learning curves, the Dice-ACE trade-off, per-image
distributions and the paired per-image changes of a loss against its baseline.

They draw data frames (a run's ``history.csv``, per-image values) that :mod:`calibtut.views`,
:mod:`calibtut.runs` and :mod:`calibtut.paper` prepare; they read no run directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibtut.methods import ordered
from calibtut.metrics import METRIC_TITLES
from calibtut.plots.style import (
    LOSS_COLOURS,
    LOSS_TITLES,
    Canvas,
    canvas,
    figure_of,
    panel,
    styled,
)

__all__ = [
    "plot_learning_curves",
    "plot_dice_vs_ace",
    "plot_per_image_distributions",
    "plot_paired_changes",
]


@styled
def plot_learning_curves(
    histories: Mapping[str, pd.DataFrame],
    metrics: Sequence[str] = ("train_loss", "val_dice", "val_ace"),
    *,
    fig: Canvas | None = None,
) -> Figure:
    """One panel per ``history.csv`` column, one line per run (validation epochs only).

    Args:
        histories: a label per run (a loss picks colour and legend from
            :data:`~calibtut.plots.LOSS_COLOURS` and :data:`~calibtut.plots.LOSS_TITLES`; other
            labels are shown as they are) and its ``history.csv``.
        metrics: the columns to draw.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure. A run of a single epoch (a smoke run or a phantom) is drawn as points, and
        its panel says that it is a pipeline check rather than a curve.

    Raises:
        ValueError: no metric, or a column a history lacks.
    """
    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            f"metrics must be a non-empty sequence of history.csv columns, got {metrics!r}."
        )
    fig = canvas(fig, 2.8 * len(metrics), 2.6, layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    single = all(len(h) <= 1 for h in histories.values())
    for ax, metric in zip(axes, metrics, strict=True):
        for label, history in histories.items():
            if metric not in history:
                raise ValueError(f"the history of {label!r} has no column {metric!r}.")
            points = history[["epoch", metric]].dropna()
            ax.plot(
                points["epoch"], points[metric], "o-", ms=3 if not single else 6,
                color=LOSS_COLOURS.get(label), label=LOSS_TITLES.get(label, label),
                gid=f"curve:{label}",
            )  # fmt: skip
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%.3g"))
        if single:
            last = max((float(h["epoch"].max()) for h in histories.values() if len(h)), default=1.0)
            ax.set_xlim(last - 0.5, last + 0.5)
            shown = [v for h in histories.values() for v in h[metric].dropna()]
            if shown:  # a few points: a y range of a quarter of their size, not of their spread
                low, high = min(shown), max(shown)
                pad = max(0.25 * max(abs(low), abs(high)), high - low, 1e-3)
                ax.set_ylim(low - pad, high + pad)
            ax.text(
                0.5, 0.04, "one epoch: a pipeline check", transform=ax.transAxes, ha="center",
                fontsize=8, color="0.4", gid="single_epoch",
            )  # fmt: skip
    axes[0].legend()
    return figure_of(fig)


@styled
def plot_dice_vs_ace(per_image: Mapping[str, pd.DataFrame], *, ax: Axes | None = None) -> Figure:
    """Per test image, Dice against ACE (each averaged over classes), one colour per run.

    Args:
        per_image: a label per run and its per-image values with columns ``ace`` and ``dice``
            (the paper's class means, :meth:`calibtut.runs.RunResults.image_means`).
        ax: the axes to draw on (None: a new figure).

    Returns:
        The figure. The large markers are the means over images: the trade-off the calibration
        losses make.
    """
    ax = panel(ax, 4.2, 3.4)
    for label, values in per_image.items():
        colour = LOSS_COLOURS.get(label)
        ax.scatter(
            values["ace"], values["dice"], s=10, alpha=0.45, color=colour, gid=f"images:{label}"
        )
        ax.scatter(
            values["ace"].mean(), values["dice"].mean(), s=120, color=colour,
            edgecolor="black", label=f"{LOSS_TITLES.get(label, label)} (mean)", zorder=3,
            gid=f"mean:{label}",
        )  # fmt: skip
    ax.set_xlabel("ACE per image (lower is better calibrated)")
    ax.set_ylabel("Dice per image")
    ax.legend()
    return figure_of(ax.figure)


@styled
def plot_per_image_distributions(
    frame: pd.DataFrame,
    metrics: Sequence[str] = ("ace", "dice"),
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Box plots of per-image values, one row of panels per metric, one column per dataset.

    Args:
        frame: per-image values with columns ``source``, ``dataset``, ``loss``, ``metric`` and
            ``value`` (a :mod:`calibtut.paper` frame: the paper's, a user's runs, or both).
        metrics: the metrics to draw (rows share their y axis).
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure: one box per source and loss, so the spread over images that the paper's
        mean ± std summarises, and a user's runs beside the paper's, are seen at once. NaN values
        (e.g. a Dice with every class empty) are left out of the boxes.
    """
    missing = [c for c in ("source", "dataset", "loss", "metric", "value") if c not in frame]
    if missing:
        raise ValueError(f"frame lacks columns {missing}.")
    absent = [metric for metric in metrics if metric not in set(frame["metric"])]
    if not metrics or absent:
        raise ValueError(
            f"metrics {list(metrics)} must be a non-empty selection of the frame's metrics "
            f"{sorted(set(frame['metric']))}"
        )
    datasets = list(dict.fromkeys(frame["dataset"]))
    sources = list(dict.fromkeys(frame["source"]))
    fig = canvas(fig, 3.2 * len(datasets), 3.0 * len(metrics), layout="constrained")
    axes = fig.subplots(len(metrics), len(datasets), sharey="row", squeeze=False)
    for row, metric in enumerate(metrics):
        for column, dataset in enumerate(datasets):
            ax = axes[row, column]
            here = frame[(frame["metric"] == metric) & (frame["dataset"] == dataset)]
            values, labels, colours = [], [], []
            for source in sources:
                for loss in ordered(here["loss"]):
                    chosen = (here["source"] == source) & (here["loss"] == loss)
                    group = here.loc[chosen, "value"].to_numpy(dtype=np.float64)
                    group = group[np.isfinite(group)]
                    if group.size:
                        values.append(group)
                        labels.append(loss if len(sources) == 1 else f"{source}\n{loss}")
                        colours.append(LOSS_COLOURS.get(loss, "0.3"))
            title = METRIC_TITLES.get(metric, metric)
            ax.set_title(f"{dataset}: {title}")
            if column == 0:
                ax.set_ylabel(f"per-image {title}")
            if not values:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            boxes = ax.boxplot(values, tick_labels=labels, patch_artist=True, widths=0.6)
            for box, colour in zip(boxes["boxes"], colours, strict=True):
                box.set_facecolor(colour)
            for median in boxes["medians"]:
                median.set_color("black")
    return figure_of(fig)


@styled
def plot_paired_changes(
    pairs: pd.DataFrame,
    metrics: Sequence[str] = ("ace", "mce", "dice"),
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Each test image's baseline value against its value under each loss, one panel per metric.

    A point below the diagonal is an image the loss lowered. Where the paper's Δ% is the mean of
    per-image ratios, this shows the images it averages: how many moved which way, and by how
    much.

    Args:
        pairs: one row per image, loss and metric with columns ``loss``, ``metric``,
            ``baseline`` and ``value`` (:func:`calibtut.paper.percentage_changes`).
        metrics: the metrics to draw.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure; each panel's legend counts the images each loss lowered.
    """
    missing = [c for c in ("loss", "metric", "baseline", "value") if c not in pairs]
    if missing:
        raise ValueError(f"pairs lack columns {missing}.")
    metrics = [m for m in metrics if m in set(pairs["metric"])]
    if not metrics:
        raise ValueError(f"none of the metrics is in the pairs ({sorted(set(pairs['metric']))}).")
    fig = canvas(fig, 3.0 * len(metrics), 3.1, layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        here = pairs[pairs["metric"] == metric]
        values = here[["baseline", "value"]].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values).all(1)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], ls="--", lw=1, color="0.5")
        for loss in dict.fromkeys(here["loss"]):
            group = here[here["loss"] == loss]
            lowered = int((group["value"] < group["baseline"]).sum())
            ax.scatter(
                group["baseline"], group["value"], s=9, alpha=0.55, color=LOSS_COLOURS.get(loss),
                label=f"{LOSS_TITLES.get(loss, loss)}: {lowered}/{len(group)} lower",
                gid=f"pairs:{loss}",
            )  # fmt: skip
        title = METRIC_TITLES.get(metric, metric)
        ax.set_title(f"per-image {title}")
        ax.set_xlabel(f"baseline {title}")
        ax.set_ylabel(f"{title} with the loss")
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.legend(loc="upper left", fontsize=7.5)
    return figure_of(fig)
