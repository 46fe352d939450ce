"""Figures of a loss against its baseline: per-bin gap changes and per-image distributions.

They draw the tables :func:`calibtut.views.bin_gap_changes` and
:func:`calibtut.views.image_distribution` prepare (changes, quartiles, whiskers, outlier flags):
nothing is computed here but where things go. Bars are one step artist per sign (``stairs``,
which leaves a gap at NaN), as in the reliability figures, so a grid of panels draws fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from calibtut.plots.style import (
    COLOURS,
    LOSS_COLOURS,
    Canvas,
    canvas,
    figure_of,
    finish,
    panel,
    styled,
)

__all__ = ["plot_gap_changes", "draw_gap_changes", "plot_image_distribution"]

GAP_COLUMNS = ("run", "baseline", "class", "low", "high", "change", "images", "count",
               "baseline_count")  # fmt: skip
DISTRIBUTION_COLUMNS = ("run", "image_id", "value", "outlier")
SUMMARY_COLUMNS = ("q1", "median", "q3", "whislo", "whishi")
# panel grid in inches: panel, gaps, margins (a legend column on the right)
WIDTH, HEIGHT, GAP_X, GAP_Y = 2.4, 1.5, 0.2, 0.45
LEFT, BOTTOM, TOP, RIGHT = 0.75, 0.5, 0.62, 1.5


def _check(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}.")
    if frame.empty:
        raise ValueError(f"{what} is empty.")


@styled
def plot_gap_changes(
    changes: pd.DataFrame,
    title: str | None = None,
    dataset: bool = False,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Per bin, a loss's calibration gap minus its baseline's: a row per loss, a panel per class.

    Below zero (green) the loss lowered the bin's gap, above (red) it raised it; a bin that only
    one of the two runs occupies has no change and is marked on the zero line. All panels share
    one symmetric y range, so rows compare at a glance.

    Args:
        changes: :func:`calibtut.views.bin_gap_changes` (columns ``run``, ``baseline``,
            ``class``, ``low``, ``high``, ``change``, ``images``, ``count``, ``baseline_count``).
        title: a title.
        dataset: the changes are means over images (the y label says so).
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure; each panel's bars are the artists with gids ``gap_lower`` and
        ``gap_higher``, the unpaired bins ``unpaired``.

    Raises:
        ValueError: a missing column, or no rows.
    """
    _check(changes, GAP_COLUMNS, "changes")
    runs = list(dict.fromkeys(changes["run"]))
    classes = list(dict.fromkeys(changes["class"]))
    width = LEFT + len(classes) * WIDTH + (len(classes) - 1) * GAP_X + RIGHT
    height = TOP + len(runs) * HEIGHT + (len(runs) - 1) * GAP_Y + BOTTOM
    fig = canvas(fig, width, height)
    finite = np.abs(changes["change"].to_numpy(dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    limit = 1.1 * (finite.max() if finite.size and finite.max() > 0 else 0.1)
    for row, run in enumerate(runs):
        for column, name in enumerate(classes):
            x = LEFT + column * (WIDTH + GAP_X)
            y = height - TOP - row * (HEIGHT + GAP_Y) - HEIGHT
            ax = fig.add_axes((x / width, y / height, WIDTH / width, HEIGHT / height))
            rows = changes[(changes["run"] == run) & (changes["class"] == name)]
            draw_gap_changes(ax, rows, limit)
            baseline = rows["baseline"].iloc[0] if len(rows) else "baseline"
            ax.set_title(f"{run} − {baseline} · {name}")
            if column == 0:
                ax.set_ylabel("mean gap change" if dataset else "gap change")
            else:
                ax.tick_params(labelleft=False)
            if row == len(runs) - 1:
                ax.set_xlabel("predicted probability")
            else:
                ax.tick_params(labelbottom=False)
    handles = [
        Patch(color=COLOURS["gap_lower"], label="gap lower\nwith the loss"),
        Patch(color=COLOURS["gap"], label="gap higher"),
        Line2D([], [], ls="none", marker="x", color=COLOURS["counts"],
               label="bin of one run only"),
    ]  # fmt: skip
    fig.legend(
        handles=handles, loc="upper left", bbox_to_anchor=((width - RIGHT + 0.15) / width,
        1 - TOP / height), fontsize=7.5,
    )  # fmt: skip
    finish(fig, title)
    return figure_of(fig)


def draw_gap_changes(ax: Axes, rows: pd.DataFrame, limit: float | None = None) -> Axes:
    """One panel of :func:`plot_gap_changes` on ``ax``: the rows of one run and class.

    Args:
        ax: the Axes.
        rows: the class's rows of :func:`calibtut.views.bin_gap_changes`, in bin order.
        limit: the y range ``[-limit, limit]`` (None: from these rows).

    Returns:
        ``ax``.
    """
    edges = np.append(rows["low"].to_numpy(dtype=np.float64), rows["high"].iloc[-1])
    change = rows["change"].to_numpy(dtype=np.float64)
    lower = np.where(change < 0, change, np.nan)
    higher = np.where(change >= 0, change, np.nan)
    ax.stairs(lower, edges, baseline=0, fill=True, color=COLOURS["gap_lower"], gid="gap_lower")
    ax.stairs(higher, edges, baseline=0, fill=True, color=COLOURS["gap"], gid="gap_higher")
    ax.axhline(0, color=COLOURS["diagonal"], lw=0.8)
    held = (rows["count"].to_numpy() > 0) | (rows["baseline_count"].to_numpy() > 0)
    unpaired = held & (rows["images"].to_numpy() == 0)
    centres = (edges[:-1] + edges[1:]) / 2
    ax.plot(centres[unpaired], np.zeros(unpaired.sum()), ls="none", marker="x", ms=4,
            color=COLOURS["counts"], gid="unpaired")  # fmt: skip
    if limit is None:
        finite = np.abs(change[np.isfinite(change)])
        limit = 1.1 * (finite.max() if finite.size and finite.max() > 0 else 0.1)
    ax.set_xlim(0, 1)
    ax.set_ylim(-limit, limit)
    ax.xaxis.set_major_locator(mticker.MultipleLocator(0.25))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.yaxis.set_major_locator(mticker.MaxNLocator(5, symmetric=True))
    return ax


@styled
def plot_image_distribution(
    values: pd.DataFrame,
    summary: pd.DataFrame,
    ylabel: str = "value",
    title: str | None = None,
    reference: float | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """A box per run from its given quartiles and whiskers, every image a dot, the outliers
    ringed in red and named, so the images that move a mean can be found and opened.

    Args:
        values: :attr:`calibtut.views.ImageDistribution.values` (``run``, ``image_id``,
            ``value``, ``outlier``).
        summary: :attr:`calibtut.views.ImageDistribution.summary`, indexed by run (``q1``,
            ``median``, ``q3``, ``whislo``, ``whishi``).
        ylabel: the y axis label.
        title: a title.
        reference: draw a dashed line at this value (e.g. 0 for a change).
        ax: an Axes to draw into (None: a new figure).

    Returns:
        The figure; each run's dots have gid ``images:<run>``, its outliers ``outliers:<run>``,
        their names ``outlier_label`` and its median line ``median:<run>``.

    Raises:
        ValueError: a missing column, or no rows.
    """
    _check(values, DISTRIBUTION_COLUMNS, "values")
    _check(summary, SUMMARY_COLUMNS, "summary")
    runs = list(summary.index)
    ax = panel(ax, 1.6 + 1.4 * len(runs), 3.4)
    stats = [
        {"med": row["median"], "q1": row["q1"], "q3": row["q3"], "whislo": row["whislo"],
         "whishi": row["whishi"], "fliers": [], "label": str(run)}
        for run, row in summary.iterrows()
    ]  # fmt: skip
    boxes = ax.bxp(stats, positions=range(len(runs)), widths=0.5, showfliers=False,
                   patch_artist=True)  # fmt: skip
    for box, run in zip(boxes["boxes"], runs, strict=True):
        box.set_facecolor(LOSS_COLOURS.get(str(run), "0.7"))
        box.set_alpha(0.35)
    for median, run in zip(boxes["medians"], runs, strict=True):
        median.set_color("black")
        median.set_gid(f"median:{run}")
    if reference is not None:
        ax.axhline(reference, ls="--", lw=0.8, color=COLOURS["diagonal"])
    for position, run in enumerate(runs):
        rows = values[values["run"] == run]
        spread = np.linspace(-0.16, 0.16, len(rows)) if len(rows) > 1 else np.zeros(len(rows))
        x = position + spread
        outlier = rows["outlier"].to_numpy(dtype=bool)
        y = rows["value"].to_numpy(dtype=np.float64)
        colour = LOSS_COLOURS.get(str(run), "0.3")
        ax.scatter(x[~outlier], y[~outlier], s=10, color=colour, alpha=0.8, zorder=3,
                   gid=f"images:{run}")  # fmt: skip
        ax.scatter(x[outlier], y[outlier], s=34, facecolor="none", edgecolor=COLOURS["gap"],
                   linewidth=1.2, zorder=4, gid=f"outliers:{run}")  # fmt: skip
        for xi, yi, name in zip(x[outlier], y[outlier], rows["image_id"][outlier], strict=True):
            ax.annotate(str(name), (xi, yi), xytext=(5, 0), textcoords="offset points",
                        fontsize=7.5, va="center", gid="outlier_label")  # fmt: skip
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return figure_of(ax.figure)
