"""Per-image reliability diagrams and dataset reliability histograms.

They draw what :func:`calibtut.metrics.reliability` and :func:`calibtut.metrics.dataset_reliability`
prepare (bin means, gaps, counts, the errors and the MCE's bin): no calibration is computed here.
Empty (NaN) bins are left blank, never drawn as zero. Bars are drawn as one step artist per
series (``stairs``, which leaves a gap at NaN), not one rectangle per bin: a dozen panels then
draw in a fraction of the time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from calibtut.metrics import DatasetReliability, Reliability
from calibtut.plots.style import (
    COLOUR_BAR,
    COLOURS,
    HEATMAP_CMAP,
    Canvas,
    arrangement,
    check_class_names,
    check_classes,
    check_mapping,
    colour_norm,
    display_edges,
    draw_counts,
    figure_of,
    finish,
    format_value,
    label_pair,
    numpy,
    paired_grid,
    panel,
    panel_title,
    same_count_range,
    styled,
)

__all__ = [
    "reliability_diagram",
    "compare_reliability_diagrams",
    "draw_reliability",
    "dataset_reliability_histograms",
    "compare_dataset_reliability_histograms",
    "draw_dataset_histogram",
]


# --- per-image reliability diagrams ---


@styled
def reliability_diagram(
    reliability: Reliability,
    class_names: Sequence[str],
    image: int = 0,
    classes: Sequence[int] | None = None,
    title: str | None = None,
    *,
    floor: torch.Tensor | None = None,
    fig: Canvas | None = None,
) -> Figure:
    """The reliability diagram of one image: one panel per class, bin counts (log scale) below.

    Each occupied bin shows its mean ground truth as a bar and its (mean prediction, mean ground
    truth) as a point, the gap to the diagonal shaded; the bin of the largest gap (MCE) is framed
    and annotated, and the image's ECE and ACE are printed.

    Args:
        reliability: per-image reliability (:func:`calibtut.metrics.reliability` of some bins).
        class_names: the names of its classes.
        image: which image of ``reliability`` to draw.
        classes: the classes (indices) to draw; None: all.
        title: a title above the panels.
        floor: optional ``(images, classes)`` ACE noise floors, printed beside each ACE.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Example:
        >>> from calibtut.metrics import reliability
        >>> fig = reliability_diagram(reliability(bins), ["organ", "lesion"])  # doctest: +SKIP

    Taught in notebooks/01_what_is_calibration.
    """
    floors = None if floor is None else {"": floor}
    return _reliability_grid({"": reliability}, class_names, image, classes, title, floors, fig)


@styled
def compare_reliability_diagrams(
    runs: Mapping[str, Reliability],
    class_names: Sequence[str],
    image: int = 0,
    classes: Sequence[int] | None = None,
    title: str | None = None,
    *,
    floors: Mapping[str, torch.Tensor] | None = None,
    fig: Canvas | None = None,
) -> Figure:
    """Reliability diagrams of one image under several runs: one row per run, shared axes.

    Arguments as :func:`reliability_diagram`, with ``runs`` mapping a label to each run's
    reliability (the same image at the same position in each) and ``floors`` to its noise floors.

    Args:
        runs: ``{label: Reliability}``; a loss name as label picks its colour and legend.
        class_names: the names of the classes (the same in every run).
        image: which image of each reliability to draw.
        classes: the classes (indices) to draw; None: all.
        title: a title above the panels.
        floors: optional ``{label: (images, classes)}`` ACE noise floors, printed beside each ACE.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Raises:
        ValueError: ``runs`` is empty or holds something else, or the runs' shapes differ.

    Example:
        >>> fig = compare_reliability_diagrams(   # doctest: +SKIP
        ...     {"baseline": reliability(baseline_bins), "soft": reliability(soft_bins)},
        ...     ["organ", "ring", "lesion"],
        ... )

    Taught in notebooks/03_training_with_calibration_losses (through calibtut.views).
    """
    return _reliability_grid(runs, class_names, image, classes, title, floors, fig)


def _reliability_grid(
    runs: Mapping[str, Reliability],
    class_names: Sequence[str],
    image: int,
    classes: Sequence[int] | None,
    title: str | None,
    floors: Mapping[str, torch.Tensor] | None,
    fig: Canvas | None,
) -> Figure:
    runs = check_mapping(runs, Reliability, "Reliability")
    shapes = {label: (r.num_classes, r.num_bins) for label, r in runs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"runs to compare need the same classes and number of bins, got (C, num_bins) {shapes}."
        )
    first = next(iter(runs.values()))
    names = check_class_names(class_names, first.num_classes)
    columns = check_classes(classes, len(names))
    for label, r in runs.items():
        if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image < r.num_images:
            where = f" of run {label!r}" if label else ""
            raise ValueError(
                f"image must be an index in [0, {r.num_images - 1}]{where}, got {image!r}."
            )
    n_rows, n_columns, place = arrangement(len(runs), len(columns))
    legend_columns = {1: 1, 2: 2, 3: 3}.get(n_columns, 5)  # five entries fit four panels' width
    legend_height = 0.1 + 0.2 * -(-5 // legend_columns)
    fig, grid, _ = paired_grid(n_rows, n_columns, 0.2, legend_height, bool(title), fig)
    for run_index, (label, r) in enumerate(runs.items()):
        floor = None if floors is None or label not in floors else numpy(floors[label][image])
        for panel_index, c in enumerate(columns):
            row, column = place(run_index, panel_index)
            ax, count_ax = grid[row][column]
            draw_reliability(
                r, image, c, ax=ax, counts_ax=count_ax, floor=None if floor is None else floor[c]
            )
            ax.set_title(panel_title(label, names[c]))
            label_pair(ax, count_ax, column == 0, row == n_rows - 1, "mean ground truth", "voxels")
    same_count_range(grid)
    handles, labels = grid[0][0][0].get_legend_handles_labels()
    handles += [
        Patch(color=COLOURS["gap_overlap"], alpha=0.8),
        Patch(fill=False, edgecolor=COLOURS["mce"], linewidth=1.4),
    ]
    labels += ["gap inside the bar", "bin of the MCE"]
    fig.legend(handles, labels, loc="lower center", ncols=legend_columns)
    finish(fig, title)
    return figure_of(fig)


def draw_reliability(
    reliability: Reliability,
    image: int,
    cls: int,
    *,
    ax: Axes | None = None,
    counts_ax: Axes | None = None,
    floor: float | None = None,
) -> Axes:
    """One class's reliability diagram of one image, on ``ax`` (its counts on ``counts_ax``).

    Args:
        reliability, image, cls: :func:`calibtut.metrics.reliability`, the image and class drawn.
        ax, counts_ax, floor: Axes of the diagram and of its counts (None: new), the ACE floor.
    Returns:
        The axes drawn on (bars are ``stairs``: see the module docstring)."""
    ax = panel(ax, 3.0, 3.0)
    occupied = reliability.occupied[image, cls].cpu().numpy()
    mean_pred = numpy(reliability.mean_pred[image, cls])
    mean_target = numpy(reliability.mean_target[image, cls])
    errors = reliability.errors
    edges = display_edges(reliability.num_bins)
    truth = np.where(occupied, mean_target, np.nan)
    pred = np.where(occupied, mean_pred, np.nan)
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color=COLOURS["diagonal"], zorder=3)
    ax.stairs(
        truth, edges, baseline=0, fill=True, color=COLOURS["ground_truth"],
        label="mean ground truth", gid="ground_truth", zorder=1,
    )  # fmt: skip
    inner = occupied[1:] & occupied[:-1]  # white separators between neighbouring bars
    ax.vlines(
        edges[1:-1][inner], 0, np.fmin(truth[1:], truth[:-1])[inner], colors="white",
        linewidth=0.5, zorder=1,
    )  # fmt: skip
    ax.stairs(
        np.fmax(pred, truth), edges, baseline=np.fmin(pred, truth), fill=True,
        color=COLOURS["gap"], alpha=0.45, hatch="///", hatchcolor=COLOURS["gap"],
        label="gap to the diagonal", gid="gap", zorder=2,
    )  # fmt: skip
    ax.plot(
        pred[occupied], truth[occupied], "o", ms=3.5, color=COLOURS["bin_mean"],
        label="bin mean (prediction, truth)", gid="bin_means", zorder=4,
    )  # fmt: skip
    ece, ace, mce = (float(getattr(errors, n)[image, cls]) for n in ("ece", "ace", "mce"))
    text = f"ECE = {format_value(ece)}\nACE = {format_value(ace)}"
    if floor is not None:
        text += f"\n(floor {format_value(float(floor))})"
    ax.text(
        0.04, 0.96, text, transform=ax.transAxes, ha="left", va="top", gid="errors", zorder=6,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8", "alpha": 0.9},
    )  # fmt: skip
    k = int(errors.mce_bin[image, cls])
    if k >= 0:
        _frame_mce_bin(ax, edges, k, float(mean_pred[k]), float(mean_target[k]), mce)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if counts_ax is not None:
        draw_counts(counts_ax, numpy(reliability.count[image, cls]), occupied, edges)
    return ax


def _frame_mce_bin(
    ax: Axes, edges: np.ndarray, k: int, mean_pred: float, mean_target: float, mce: float
) -> None:
    """Frame bin ``k`` (the MCE's, as metrics chose it) and label it with the MCE."""
    low, high = sorted((mean_pred, mean_target))
    ax.add_patch(
        Rectangle(
            (edges[k], low), edges[k + 1] - edges[k], high - low, fill=False,
            edgecolor=COLOURS["mce"], linewidth=1.4, zorder=5, gid="mce_bin",
        )
    )  # fmt: skip
    centre, middle = (edges[k] + edges[k + 1]) / 2, (low + high) / 2
    left_half = centre < 0.5
    ax.annotate(
        f"MCE = {format_value(mce)}", xy=(centre, middle),
        xytext=(centre + (0.08 if left_half else -0.08), float(np.clip(middle, 0.1, 0.7))),
        ha="left" if left_half else "right", va="center", gid="mce", zorder=6,
        arrowprops={"arrowstyle": "-", "lw": 0.8, "color": COLOURS["mce"]},
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
    )  # fmt: skip


# --- dataset reliability histograms ---


@styled
def dataset_reliability_histograms(
    histograms: DatasetReliability,
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    norm: str = "log",
    gamma: float = 0.5,
    include_average: bool = True,
    title: str | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Dataset reliability histograms: one heat map per class, plus their average.

    Each heat map counts, over the test images, the occupied bins of each predicted probability
    (x) by the bin of their mean ground truth (y): a calibrated model keeps its mass on the
    diagonal. Below each, the voxels per confidence bin pooled over the images.

    Args:
        histograms: :func:`calibtut.metrics.dataset_reliability` of a test set's bins.
        class_names: the names of its classes.
        classes: the classes (indices) to draw; None: all. The average is over all classes.
        norm: the colour scale shared by all panels: "log", "power" (with ``gamma``) or
            "linear"; empty cells stay blank.
        include_average: add the panel averaged over the classes.
        title: a title above the panels.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Taught in notebooks/03_training_with_calibration_losses and 08_exploring_reliability.
    """
    return _dataset_grid(
        {"": histograms}, class_names, classes, norm, gamma, include_average, title, fig
    )


@styled
def compare_dataset_reliability_histograms(
    runs: Mapping[str, DatasetReliability],
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    norm: str = "log",
    gamma: float = 0.5,
    include_average: bool = True,
    title: str | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Dataset reliability histograms of several runs, one row per run, sharing one colour scale.

    Arguments as :func:`dataset_reliability_histograms`, with ``runs`` mapping a label to each.

    Args:
        runs: ``{label: DatasetReliability}`` (:func:`calibtut.metrics.dataset_reliability`).
        class_names: the names of the classes (the same in every run).
        classes: the classes (indices) to draw; None: all.
        norm: the colour scale shared by all panels: "log", "power" or "linear".
        gamma: the exponent of the "power" scale.
        include_average: add the panel averaged over the classes.
        title: a title above the panels.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Raises:
        ValueError: ``runs`` is empty, or the runs differ in classes or number of bins.

    Example:
        >>> fig = compare_dataset_reliability_histograms(   # doctest: +SKIP
        ...     {"baseline": dataset_reliability(baseline_bins), "soft": dataset_reliability(soft_bins)},
        ...     ["organ", "ring", "lesion"],
        ... )

    Taught in notebooks/03_training_with_calibration_losses (through calibtut.views).
    """
    return _dataset_grid(runs, class_names, classes, norm, gamma, include_average, title, fig)


def _dataset_grid(
    runs: Mapping[str, DatasetReliability],
    class_names: Sequence[str],
    classes: Sequence[int] | None,
    norm: str,
    gamma: float,
    include_average: bool,
    title: str | None,
    fig: Canvas | None,
) -> Figure:
    runs = check_mapping(runs, DatasetReliability, "DatasetReliability")
    shapes = {label: (h.num_classes, h.num_bins) for label, h in runs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"runs to compare need the same classes and number of bins, got (C, num_bins) {shapes}."
        )
    first = next(iter(runs.values()))
    names = check_class_names(class_names, first.num_classes)
    columns = check_classes(classes, len(names))
    rows: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]] = []
    for label, h in runs.items():
        histogram, pooled = numpy(h.histogram), numpy(h.pooled_count)
        panels = [(names[c], histogram[c], pooled[c]) for c in columns]
        if include_average:
            panels.append(("average", numpy(h.average), numpy(h.average_pooled_count)))
        rows.append((label, panels))
    scale = colour_norm(norm, gamma, [m for _, panels in rows for _, m, _ in panels])
    n_rows, n_columns, place = arrangement(len(rows), len(rows[0][1]))
    fig, grid, bar = paired_grid(n_rows, n_columns, COLOUR_BAR, 0.1, bool(title), fig)
    mesh = None
    for run_index, (label, panels) in enumerate(rows):
        for panel_index, (name, matrix, pooled) in enumerate(panels):
            row, column = place(run_index, panel_index)
            ax, count_ax = grid[row][column]
            mesh = draw_dataset_histogram(matrix, scale, ax=ax, counts_ax=count_ax, pooled=pooled)
            ax.set_title(panel_title(label, name))
            label_pair(ax, count_ax, column == 0, row == n_rows - 1, "mean ground truth", "voxels")
    same_count_range(grid)
    label = "images\n(average: mean over the classes)" if include_average else "images"
    colour_bar = fig.colorbar(mesh, cax=fig.add_axes(bar), label=label)
    if norm == "log":  # plain numbers (0.5, 1, 2, 5, ...) rather than powers of ten
        colour_bar.ax.yaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        colour_bar.ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        colour_bar.ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    finish(fig, title)
    return figure_of(fig)


def draw_dataset_histogram(
    matrix: np.ndarray | torch.Tensor,
    scale,
    *,
    ax: Axes | None = None,
    counts_ax: Axes | None = None,
    pooled: np.ndarray | torch.Tensor | None = None,
):
    """One class's ``(num_bins, num_bins)`` histogram on ``ax`` with the colour ``scale``
    (a matplotlib Normalize); its pooled voxel counts on ``counts_ax``.

    Args:
        matrix: the ``(num_bins, num_bins)`` counts, ``[ground-truth bin, confidence bin]``.
        scale: a matplotlib ``Normalize`` shared by the panels that are compared.
        ax: the Axes of the heat map (None: a new figure's).
        counts_ax: an Axes for the pooled voxel counts below it (None: none drawn).
        pooled: the voxels per confidence bin, drawn on ``counts_ax``.

    Returns:
        The ``QuadMesh`` (what a colour bar needs).
    """
    ax = panel(ax, 3.0, 3.0)
    matrix = numpy(matrix)
    edges = display_edges(matrix.shape[-1])
    mesh = ax.pcolormesh(
        edges, edges, np.ma.masked_equal(matrix, 0), norm=scale, cmap=HEATMAP_CMAP, gid="histogram"
    )
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color=COLOURS["heatmap_diagonal"])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if counts_ax is not None and pooled is not None:
        pooled = numpy(pooled)
        draw_counts(counts_ax, pooled, pooled > 0, edges)
    return mesh
