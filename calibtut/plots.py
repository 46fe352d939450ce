"""Figures: reliability diagrams, dataset reliability histograms, image overlays, training figures
(learning curves, the Dice-ACE trade-off, gradient maps) and paper figures.

Plots draw what :mod:`calibtut.metrics` and :mod:`calibtut.paper` compute (for saved runs: the
bins in a run's ``bins.npz``, its ``history.csv`` and per-image table); they compute no
calibration themselves. Every function returns a
:class:`matplotlib.figure.Figure` and never calls ``plt.show()``; Jupyter displays a returned
figure once, and :func:`save_figure` writes it as PNG and PDF. Empty (NaN) bins are left blank,
never drawn as zero. Class names are passed in (from the run's config or the dataset spec).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from calibtut.binning import BinStats, bin_edges
from calibtut.metrics import calibration_errors, dataset_reliability_histogram
from calibtut.paper import LOSSES, METRIC_LABELS, check_frame, runs_frame
from calibtut.runs import RunDir

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "hatch.linewidth": 0.6,
    "image.interpolation": "nearest",
    "axes.titley": 1.0,  # fixed title place: no per-panel search for room above the ticks
    "axes.titlepad": 4.0,
    "pdf.fonttype": 42,  # embed TrueType: text in the PDFs stays text
}
"""The house style of every figure (fonts sized for 2.2-inch panels, no top/right spines)."""

COLOURS: dict[str, str] = {
    "ground_truth": "#4c72b0",
    "gap": "#dd4949",
    "bin_mean": "#1a1a1a",
    "diagonal": "#555555",
    "heatmap_diagonal": "#e8743b",
    "counts": "#8c8c8c",
    "mce": "#1a1a1a",
    "false_positive": "#ff00e6",
    "false_negative": "#00e5ff",
    "wrong_class": "#ffe119",
}
"""Meaning-bound colours: ground truth blue, calibration gap red, error kinds (magenta, cyan,
yellow) apart from the first class colours."""

CLASS_COLOURS: tuple[str, ...] = tuple(
    mcolors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors
)
"""Colour of class (or region) ``c`` in overlays: ``CLASS_COLOURS[c % 10]``."""

HEATMAP_CMAP = "viridis"
HISTOGRAM_NORMS = ("log", "power", "linear")
OVERLAY_KEYS = ("image", "label", "prediction", "confidence")
# Panel grids are laid out in inches (not by constrained layout, which re-measures every tick of
# every panel and made an interactive redraw take seconds): panel, counts strip, gaps, margins.
_PANEL, _COUNTS, _PAIR_GAP, _COLUMN_GAP = 2.2, 0.65, 0.08, 0.18
_LEFT, _TITLE, _XLABELS, _SUPTITLE, _ROW_GAP = 0.8, 0.3, 0.5, 0.35, 0.12
_COLOUR_BAR = 1.0  # right margin that holds a colour bar and its labels

_Function = TypeVar("_Function", bound=Callable[..., Figure])


@contextmanager
def style() -> Iterator[None]:
    """Draw in the house style (:data:`STYLE`) inside the block."""
    with plt.rc_context(STYLE):
        yield


def styled(function: _Function) -> _Function:
    """Decorate a figure function so that its artists are created in the house style."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with style():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure (constrained layout by default) that Jupyter displays exactly once when returned.

    Creating it through pyplot loads the notebook's inline backend (which registers Jupyter's
    figure display); closing it at once keeps pyplot from showing it again at the end of the
    cell and from holding a reference to it.
    """
    fig = plt.figure(figsize=(width, height), layout=layout)
    plt.close(fig)
    return fig


def _paired_grid(
    n_rows: int, n_columns: int, right: float, bottom: float, title: bool
) -> tuple[Figure, list[list[tuple[Axes, Axes]]], tuple[float, float, float, float]]:
    """Rows of (panel, counts strip below it) pairs, placed in inches.

    Axes are not shared (sharing one axis among dozens of panels made drawing slow); callers set
    the limits, including one range for all counts strips (:func:`_same_count_range`).

    Returns the figure, the axes pairs per row and column, and the figure-fraction box
    ``(left, bottom, width, height)`` beside the main panels where a colour bar goes.
    """
    # only the last row carries x tick labels and the x label; the others are closer together
    row_height = _TITLE + _PANEL + _PAIR_GAP + _COUNTS + _ROW_GAP
    top = _SUPTITLE if title else 0.0
    width = _LEFT + n_columns * _PANEL + (n_columns - 1) * _COLUMN_GAP + right
    height = top + n_rows * row_height - _ROW_GAP + _XLABELS + bottom
    fig = new_figure(width, height, layout=None)
    grid: list[list[tuple[Axes, Axes]]] = []
    for row in range(n_rows):
        panel_top = height - top - row * row_height - _TITLE
        pairs = []
        for column in range(n_columns):
            x = _LEFT + column * (_PANEL + _COLUMN_GAP)
            ax = fig.add_axes(
                (x / width, (panel_top - _PANEL) / height, _PANEL / width, _PANEL / height)
            )
            strip_bottom = panel_top - _PANEL - _PAIR_GAP - _COUNTS
            count_ax = fig.add_axes(
                (x / width, strip_bottom / height, _PANEL / width, _COUNTS / height)
            )
            pairs.append((ax, count_ax))
        grid.append(pairs)
    panels_top = height - top - _TITLE
    panels_bottom = panels_top - (n_rows - 1) * row_height - _PANEL
    bar_x = width - right + 0.2
    bar = (
        bar_x / width,
        panels_bottom / height,
        0.14 / width,
        (panels_top - panels_bottom) / height,
    )
    return fig, grid, bar


def _arrangement(
    n_runs: int, per_run: int
) -> tuple[int, int, Callable[[int, int], tuple[int, int]]]:
    """Grid rows, columns and (run, panel) -> (row, column): a row per run, or with one panel
    per run, the runs side by side in one row."""
    if per_run == 1:
        return 1, n_runs, lambda run, _panel: (0, run)
    return n_runs, per_run, lambda run, panel: (run, panel)


def _same_count_range(grid: list[list[tuple[Axes, Axes]]]) -> None:
    """One log range for every counts strip of a grid, so strips compare at a glance."""
    counts = np.concatenate(
        [patch.get_data().values for row in grid for _, strip in row for patch in strip.patches]
    )
    counts = counts[np.isfinite(counts)]
    if counts.size:
        for row in grid:
            for _, strip in row:
                strip.set_ylim(counts.min() / 2, counts.max() * 2)


def _label_pair(
    ax: Axes, count_ax: Axes, first_column: bool, last_row: bool, ylabel: str, count_ylabel: str
) -> None:
    """Ticks of a (panel, counts strip) pair; labels on the outer panels of a grid only.

    The strip below a panel carries the x ticks of both, and ticks come every 0.25: each tick
    is several artists, and dozens of panels redraw noticeably faster with fewer of them.
    """
    ax.set_xticks([])
    for axis in (ax.yaxis, count_ax.xaxis):
        axis.set_major_locator(mticker.MultipleLocator(0.25))
        axis.set_major_formatter(mticker.FormatStrFormatter("%g"))  # 0, 0.25, 1: no clashes
    if last_row:
        count_ax.set_xlabel("predicted probability")
    else:
        count_ax.tick_params(labelbottom=False)
    if first_column:
        ax.set_ylabel(ylabel)
        count_ax.set_ylabel(count_ylabel)
    else:
        ax.tick_params(labelleft=False)
        count_ax.tick_params(labelleft=False)


def _compact_count(value: float, _position: object = None) -> str:
    """Counts as 1, 10, 100, 1k, 10k, 1M: short labels for the log counts axes."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


def _finish(fig: Figure, title: str | None) -> None:
    if title:
        fig.suptitle(title, y=1 - 0.06 / fig.get_figheight(), va="top")


def save_figure(fig: Figure, path: str | Path, dpi: int = 200) -> tuple[Path, Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf``; a ``.png``/``.pdf`` suffix is dropped."""
    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}.")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ValueError(f"dpi must be a positive integer, got {dpi!r}.")
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    if not path.name or path.is_dir():
        raise ValueError(f"save_figure needs a file name (without suffix), got directory {path}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = path.with_name(path.name + ".png"), path.with_name(path.name + ".pdf")
    with style():
        for target in (png, pdf):
            fig.savefig(target, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return png, pdf


# --- shared checks and helpers ---


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _format(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4f}"


def _display_edges(num_bins: int) -> np.ndarray:
    """MONAI's bin edges (binning.bin_edges), the last one (1 + float32 eps) drawn at 1."""
    return np.clip(_numpy(bin_edges(num_bins)), 0.0, 1.0)


def _check_runs(runs: Mapping[str, BinStats]) -> dict[str, BinStats]:
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {label: BinStats}.")
    for label, bins in runs.items():
        if not isinstance(bins, BinStats):
            raise TypeError(f"runs[{label!r}] must be a BinStats, got {type(bins).__name__}.")
    shapes = {label: tuple(bins.count.shape[1:]) for label, bins in runs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"runs to compare need the same classes and number of bins, got (C, num_bins) {shapes}."
        )
    return dict(runs)


def _check_class_names(class_names: Sequence[str], num_classes: int) -> list[str]:
    if isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(
            f"class_names must name the {num_classes} classes (channels) of the data, "
            f"got {class_names!r}."
        )
    return [str(name) for name in class_names]


def _check_classes(classes: Sequence[int] | None, num_classes: int) -> list[int]:
    if classes is None:
        return list(range(num_classes))
    chosen = [int(c) for c in classes]
    if not chosen or any(not 0 <= c < num_classes for c in chosen):
        raise ValueError(f"classes must be indices in [0, {num_classes - 1}], got {classes!r}.")
    return chosen


def _check_image(image: int, bins: BinStats, label: str) -> None:
    count = bins.count.shape[0]
    if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image < count:
        where = f" of run {label!r}" if label else ""
        raise ValueError(f"image must be an index in [0, {count - 1}]{where}, got {image!r}.")


def _panel_title(row_label: str, name: str) -> str:
    return f"{row_label} · {name}" if row_label else name


# --- per-image reliability diagrams ---


@styled
def reliability_diagram(
    bins: BinStats,
    class_names: Sequence[str],
    image: int = 0,
    classes: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """The reliability diagram of one image: one panel per class, bin counts (log scale) below.

    Each occupied bin shows its mean ground truth as a bar and its (mean prediction, mean ground
    truth) as a point, the gap to the diagonal shaded; the bin of the largest gap (MCE) is framed
    and annotated, and the image's ECE and ACE (``metrics.calibration_errors``) are printed.
    ``bins`` are per-image bins (e.g. a run's ``bins.npz``); ``image`` picks one of them.
    """
    return _reliability_grid({"": bins}, class_names, image, classes, title)


@styled
def compare_reliability_diagrams(
    runs: Mapping[str, BinStats],
    class_names: Sequence[str],
    image: int = 0,
    classes: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagrams of one image under several runs: one row per run, shared axes."""
    return _reliability_grid(runs, class_names, image, classes, title)


def _reliability_grid(
    runs: Mapping[str, BinStats],
    class_names: Sequence[str],
    image: int,
    classes: Sequence[int] | None,
    title: str | None,
) -> Figure:
    runs = _check_runs(runs)
    first = next(iter(runs.values()))
    names = _check_class_names(class_names, first.count.shape[1])
    columns = _check_classes(classes, len(names))
    for label, bins in runs.items():
        _check_image(image, bins, label)
    edges = _display_edges(first.num_bins)

    n_rows, n_columns, place = _arrangement(len(runs), len(columns))
    legend_columns = {1: 1, 2: 2}.get(n_columns, 4)  # the legend's 4 entries fit the width
    legend_height = 0.1 + 0.2 * (4 // legend_columns)
    fig, grid, _ = _paired_grid(n_rows, n_columns, 0.2, legend_height, bool(title))
    for run_index, (label, bins) in enumerate(runs.items()):
        one = bins.select(image)
        errors = calibration_errors(one)
        mean_pred, mean_target = (_numpy(m[0]) for m in one.means())
        occupied = one.occupied[0].cpu().numpy()
        count = _numpy(one.count[0])
        for panel, c in enumerate(columns):
            row, column = place(run_index, panel)
            ax, count_ax = grid[row][column]
            _draw_reliability(
                ax,
                mean_pred[c],
                mean_target[c],
                occupied[c],
                edges,
                (float(errors.ece[0, c]), float(errors.ace[0, c]), float(errors.mce[0, c])),
            )
            _draw_counts(count_ax, count[c], occupied[c], edges)
            ax.set_title(_panel_title(label, names[c]))
            _label_pair(ax, count_ax, column == 0, row == n_rows - 1, "mean ground truth", "voxels")
    _same_count_range(grid)
    handles, labels = grid[0][0][0].get_legend_handles_labels()
    handles.append(Patch(fill=False, edgecolor=COLOURS["mce"], linewidth=1.4))
    labels.append("bin of the MCE")
    fig.legend(handles, labels, loc="lower center", ncols=legend_columns)
    _finish(fig, title)
    return fig


def _draw_reliability(
    ax: Axes,
    mean_pred: np.ndarray,
    mean_target: np.ndarray,
    occupied: np.ndarray,
    edges: np.ndarray,
    errors: tuple[float, float, float],
) -> None:
    """One class's diagram; empty bins are NaN in the step artists, so they stay blank.

    Bars are drawn as one step artist per series (``stairs``, which leaves a gap at NaN), not
    one rectangle per bin: a dozen panels then draw in a fraction of the time.
    """
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
        label="gap to the diagonal", gid="gap",
        zorder=2,
    )  # fmt: skip
    ax.plot(
        pred[occupied], truth[occupied], "o", ms=3.5, color=COLOURS["bin_mean"],
        label="bin mean (prediction, truth)", gid="bin_means", zorder=4,
    )  # fmt: skip
    ece, ace, mce = errors
    ax.text(
        0.04, 0.96, f"ECE = {_format(ece)}\nACE = {_format(ace)}", transform=ax.transAxes,
        ha="left", va="top", gid="errors", zorder=6,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8", "alpha": 0.9},
    )  # fmt: skip
    if occupied.any():
        k = int(np.nanargmax(np.where(occupied, np.abs(mean_pred - mean_target), np.nan)))
        low, high = sorted((float(mean_pred[k]), float(mean_target[k])))
        ax.add_patch(
            Rectangle(
                (edges[k], low), edges[k + 1] - edges[k], high - low, fill=False,
                edgecolor=COLOURS["mce"], linewidth=1.4, zorder=5, gid="mce_bin",
            )
        )  # fmt: skip
        centre, middle = (edges[k] + edges[k + 1]) / 2, (low + high) / 2
        left_half = centre < 0.5
        ax.annotate(
            f"MCE = {_format(mce)}", xy=(centre, middle),
            xytext=(centre + (0.08 if left_half else -0.08), float(np.clip(middle, 0.1, 0.7))),
            ha="left" if left_half else "right", va="center", gid="mce", zorder=6,
            arrowprops={"arrowstyle": "-", "lw": 0.8, "color": COLOURS["mce"]},
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)


def _draw_counts(ax: Axes, count: np.ndarray, occupied: np.ndarray, edges: np.ndarray) -> None:
    """Counts of the occupied bins on a log axis (an empty bin is NaN: no bar, not a zero one)."""
    shown = np.where(occupied & (count > 0), count, np.nan)
    floor = np.nanmin(shown) / 10 if np.isfinite(shown).any() else 1.0  # below the axis: log > 0
    ax.stairs(shown, edges, baseline=floor, fill=True, color=COLOURS["counts"], gid="counts")
    inner = np.isfinite(shown[1:]) & np.isfinite(shown[:-1])
    ax.vlines(
        edges[1:-1][inner], floor, np.fmin(shown[1:], shown[:-1])[inner], colors="white",
        linewidth=0.5,
    )  # fmt: skip
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mticker.LogLocator(numticks=4))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(_compact_count))
    ax.set_xlim(0, 1)


# --- dataset reliability histograms ---


@styled
def dataset_reliability_histograms(
    bins: BinStats,
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    norm: str = "log",
    gamma: float = 0.5,
    include_average: bool = True,
    title: str | None = None,
) -> Figure:
    """Dataset reliability histograms: one heat map per class, plus their average.

    Each heat map is ``metrics.dataset_reliability_histogram(bins)`` for a class: how many images
    have a bin of that predicted probability (x) whose mean ground truth lies at y; a calibrated
    model keeps its mass on the diagonal. One colour scale (``norm`` "log", "power" with
    ``gamma``, or "linear") serves all panels; empty cells stay blank. Below each, the pooled
    voxel count per confidence bin. The average panel averages all classes of ``bins``.
    """
    return _dataset_grid({"": bins}, class_names, classes, norm, gamma, include_average, title)


@styled
def compare_dataset_reliability_histograms(
    runs: Mapping[str, BinStats],
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    norm: str = "log",
    gamma: float = 0.5,
    include_average: bool = True,
    title: str | None = None,
) -> Figure:
    """Dataset reliability histograms of several runs, one row per run, sharing one colour scale."""
    return _dataset_grid(runs, class_names, classes, norm, gamma, include_average, title)


@styled
def compare_run_reliability_histograms(
    runs: Mapping[str, RunDir],
    classes: Sequence[str] | None = None,
    norm: str = "log",
    gamma: float = 0.5,
    include_average: bool = True,
    title: str | None = None,
) -> Figure:
    """:func:`compare_dataset_reliability_histograms` of saved runs, from their ``bins.npz``.

    ``classes`` picks panels by class name (all scored classes when None), so that a notebook
    names the organs it shows rather than counting channels. The runs must score the same classes.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {label: RunDir}.")
    saved = {label: run.bins() for label, run in runs.items()}
    names = {label: class_names for label, (_, _, class_names) in saved.items()}
    shared = next(iter(names.values()))
    if any(other != shared for other in names.values()):
        raise ValueError(f"runs to compare must score the same classes, got {names}.")
    stats = {label: bins for label, (bins, _, _) in saved.items()}
    chosen = None if classes is None else [_class_index(c, shared, "classes") for c in classes]
    return _dataset_grid(stats, shared, chosen, norm, gamma, include_average, title)


def _class_index(name: str, class_names: Sequence[str], what: str) -> int:
    if name not in class_names:
        raise ValueError(f"{what}: {name!r} is not one of the classes {list(class_names)}.")
    return list(class_names).index(name)


def _colour_norm(norm: str, gamma: float, matrices: list[np.ndarray]) -> mcolors.Normalize:
    if norm not in HISTOGRAM_NORMS:
        raise ValueError(f"norm must be one of {HISTOGRAM_NORMS}, got {norm!r}.")
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma!r}.")
    positive = np.concatenate([m[m > 0] for m in matrices])
    vmax = float(positive.max()) if positive.size else 1.0
    if norm == "log":
        vmin = float(positive.min()) if positive.size else 1.0
        return mcolors.LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10))
    if norm == "power":
        return mcolors.PowerNorm(gamma, vmin=0.0, vmax=vmax)
    return mcolors.Normalize(vmin=0.0, vmax=vmax)


def _dataset_grid(
    runs: Mapping[str, BinStats],
    class_names: Sequence[str],
    classes: Sequence[int] | None,
    norm: str,
    gamma: float,
    include_average: bool,
    title: str | None,
) -> Figure:
    runs = _check_runs(runs)
    first = next(iter(runs.values()))
    names = _check_class_names(class_names, first.count.shape[1])
    columns = _check_classes(classes, len(names))
    rows: list[tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]] = []
    for label, bins in runs.items():
        histogram = _numpy(dataset_reliability_histogram(bins))
        pooled = _numpy(bins.pooled().count[0])
        panels = [(names[c], histogram[c], pooled[c]) for c in columns]
        if include_average:
            panels.append(("average", histogram.mean(0), pooled.mean(0)))
        rows.append((label, panels))
    colour_norm = _colour_norm(norm, gamma, [m for _, panels in rows for _, m, _ in panels])
    edges = _display_edges(first.num_bins)

    n_rows, n_columns, place = _arrangement(len(rows), len(rows[0][1]))
    fig, grid, bar = _paired_grid(n_rows, n_columns, _COLOUR_BAR, 0.1, bool(title))
    mesh = None
    for run_index, (label, panels) in enumerate(rows):
        for panel, (name, matrix, pooled) in enumerate(panels):
            row, column = place(run_index, panel)
            ax, count_ax = grid[row][column]
            mesh = ax.pcolormesh(
                edges, edges, np.ma.masked_equal(matrix, 0), norm=colour_norm, cmap=HEATMAP_CMAP,
                gid="histogram",
            )  # fmt: skip
            ax.plot([0, 1], [0, 1], ls="--", lw=1, color=COLOURS["heatmap_diagonal"])
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(_panel_title(label, name))
            _draw_counts(count_ax, pooled, pooled > 0, edges)
            _label_pair(
                ax, count_ax, column == 0, row == n_rows - 1,
                "foreground frequency", "voxels",
            )  # fmt: skip
    _same_count_range(grid)
    colour_bar = fig.colorbar(mesh, cax=fig.add_axes(bar), label="images")
    if norm == "log":  # plain numbers (0.5, 1, 2, 5, ...) rather than powers of ten
        colour_bar.ax.yaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        colour_bar.ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        colour_bar.ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    _finish(fig, title)
    return fig


# --- image overlays ---


def overlay_layout(arrays: Mapping[str, np.ndarray]) -> str:
    """``"softmax"`` (class-index maps) or ``"sigmoid"`` (one region per channel) saved arrays.

    ``arrays`` is what ``RunDir.prediction`` returns (see ``RunDir.write_prediction``).
    """
    missing = [k for k in OVERLAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"overlay arrays lack {missing}; expected keys {OVERLAY_KEYS}.")
    image, label = np.asarray(arrays["image"]), np.asarray(arrays["label"])
    shapes = {k: np.shape(arrays[k]) for k in OVERLAY_KEYS[1:]}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"label, prediction and confidence must share one shape, got {shapes}.")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be 2D or 3D, got shape {image.shape}.")
    if label.shape == image.shape:
        return "softmax"
    if label.shape[1:] == image.shape:
        return "sigmoid"
    raise ValueError(
        f"label shape {label.shape} must equal the image shape {image.shape} (class-index map) "
        f"or be (C, *{image.shape}) (one region per channel)."
    )


def slice_count(arrays: Mapping[str, np.ndarray], axis: int = -1) -> int:
    """Number of slices along ``axis`` of a 3D image; 0 for a 2D image (nothing to slice)."""
    overlay_layout(arrays)
    image = np.asarray(arrays["image"])
    return 0 if image.ndim == 2 else image.shape[_spatial_axis(axis)]


def busiest_slice(arrays: Mapping[str, np.ndarray], axis: int = -1) -> int:
    """The slice along ``axis`` with the most ground-truth foreground (middle one if none)."""
    layout = overlay_layout(arrays)
    label = np.asarray(arrays["label"])
    if label.ndim - (layout == "sigmoid") != 3:
        raise ValueError(f"busiest_slice needs a 3D image, got label shape {label.shape}.")
    foreground = label.any(0) if layout == "sigmoid" else label > 0
    spatial = _spatial_axis(axis)
    area = foreground.sum(axis=tuple(a for a in range(3) if a != spatial))
    return int(area.argmax()) if area.any() else foreground.shape[spatial] // 2


def _spatial_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -3 <= axis < 3:
        raise ValueError(f"axis must be a spatial axis of a 3D image in [-3, 2], got {axis!r}.")
    return axis % 3


@styled
def image_overlay(
    arrays: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    slice_index: int | None = None,
    axis: int = -1,
    channel: int = 0,
    title: str | None = None,
) -> Figure:
    """Image, ground truth, prediction, confidence and errors of one case (one slice if 3D).

    ``arrays`` as ``RunDir.prediction`` returns them. Class-index maps (softmax; label 0 is the
    background) show each class in :data:`CLASS_COLOURS`, the confidence is the max probability
    and errors are false positives, false negatives and wrong classes. Per-channel regions
    (sigmoid, e.g. overlapping tumour regions) are filled largest first; confidence and errors are
    those of region ``channel``. A 3D image shows ``slice_index`` along ``axis`` (default: the
    slice with the most ground truth).
    """
    return _overlay_grid({"": arrays}, class_names, slice_index, axis, channel, title)


@styled
def compare_image_overlays(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    slice_index: int | None = None,
    axis: int = -1,
    channel: int = 0,
    title: str | None = None,
) -> Figure:
    """Overlays of one case under several runs, one row per run (see :func:`image_overlay`)."""
    return _overlay_grid(runs, class_names, slice_index, axis, channel, title)


@styled
def compare_run_overlays(
    runs: Mapping[str, RunDir],
    image_id: str | None = None,
    channel: str | None = None,
    slice_index: int | None = None,
    axis: int = -1,
) -> Figure:
    """:func:`compare_image_overlays` of one test image saved by every run, titled by its id.

    ``image_id`` None takes the first (sorted) image that every run saved. ``channel`` names
    the region shown for multi-label (sigmoid) datasets, e.g. KiTS's "tumor"; None is the first
    channel. Class names come from the runs' ``config.json``, which must agree.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {label: RunDir}.")
    names = {label: run.config.get("class_names") for label, run in runs.items()}
    class_names = next(iter(names.values()))
    if class_names is None or any(other != class_names for other in names.values()):
        raise ValueError(f"runs to compare must name the same classes in config.json, got {names}.")
    if image_id is None:
        shared = set.intersection(*(set(run.prediction_ids()) for run in runs.values()))
        if not shared:
            raise ValueError(
                f"no test image has a saved prediction in every run of {list(runs)} "
                "(predictions/ under each run directory)."
            )
        image_id = min(shared)
    index = 0 if channel is None else _class_index(channel, class_names, "channel")
    arrays = {label: run.prediction(image_id) for label, run in runs.items()}
    return _overlay_grid(arrays, class_names, slice_index, axis, index, image_id)


def _overlay_grid(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    slice_index: int | None,
    axis: int,
    channel: int,
    title: str | None,
) -> Figure:
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {label: overlay arrays}.")
    layouts = {label: overlay_layout(arrays) for label, arrays in runs.items()}
    shapes = {label: np.shape(arrays["label"]) for label, arrays in runs.items()}
    if len(set(layouts.values())) != 1 or len(set(shapes.values())) != 1:
        raise ValueError(f"runs to compare need one layout and shape, got {layouts} / {shapes}.")
    layout = next(iter(layouts.values()))
    first = next(iter(runs.values()))
    sigmoid = layout == "sigmoid"
    num_classes = np.shape(first["label"])[0] if sigmoid else len(class_names)
    names = _check_class_names(class_names, num_classes)
    if not sigmoid:
        for label, arrays in runs.items():
            top = max(int(np.max(arrays["label"])), int(np.max(arrays["prediction"])))
            if top >= len(names):
                raise ValueError(
                    f"run {label!r}: label value {top} has no class name (class_names {names})."
                )
    if sigmoid and not (isinstance(channel, int) and 0 <= channel < num_classes):
        raise ValueError(
            f"channel must be a region index in [0, {num_classes - 1}], got {channel!r}."
        )
    slice_index = _check_slice(first, slice_index, axis)

    fig, axes, bar = _image_grid(len(runs), 5, bool(title))
    confidence_image = None
    for row, (label, arrays) in enumerate(runs.items()):
        image, truth, predicted, confidence = _slice(arrays, sigmoid, slice_index, axis)
        lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
        shown = {"cmap": "gray", "vmin": lo, "vmax": hi if hi > lo else lo + 1}
        image_ax, truth_ax, prediction_ax, confidence_ax, error_ax = axes[row]
        for ax in (image_ax, truth_ax, prediction_ax, error_ax):
            ax.imshow(image, **shown)
        truth_ax.imshow(_label_rgba(truth, sigmoid), gid="ground_truth")
        prediction_ax.imshow(_label_rgba(predicted, sigmoid), gid="prediction")
        if sigmoid:
            confidence = confidence[channel]
            errors = _error_kinds(truth[channel], predicted[channel])
        else:
            errors = _error_kinds(truth, predicted)
        confidence_image = confidence_ax.imshow(
            confidence, cmap="magma", vmin=0, vmax=1, gid="confidence"
        )
        error_ax.imshow(_error_rgba(errors), gid="errors")
        error_ax.text(
            0.03, 0.03, f"{int((errors > 0).sum())} wrong px", transform=error_ax.transAxes,
            fontsize=7.5, ha="left", va="bottom", gid="error_count",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )  # fmt: skip
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        if label:
            image_ax.set_ylabel(label)
    where = "" if slice_index is None else f" (slice {slice_index})"
    region = f" of {names[channel]}" if sigmoid else ""
    confidence_title = f"P({names[channel]})" if sigmoid else "confidence (max probability)"
    for ax, text in zip(
        axes[0],
        ["image" + where, "ground truth", "prediction", confidence_title, "errors" + region],
        strict=True,
    ):
        ax.set_title(text)
    fig.colorbar(confidence_image, cax=fig.add_axes(bar), label="probability")
    shown_classes = range(num_classes) if sigmoid else range(1, num_classes)
    handles = [Patch(color=CLASS_COLOURS[c % 10], alpha=0.6, label=names[c]) for c in shown_classes]
    kinds = ("false positive", "false negative") + (() if sigmoid else ("wrong class",))
    handles += [Patch(color=COLOURS[k.replace(" ", "_")], label=k) for k in kinds]
    fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 7))
    _finish(fig, title)
    return fig


def _image_grid(
    n_rows: int, n_columns: int, title: bool
) -> tuple[Figure, np.ndarray, tuple[float, float, float, float]]:
    """Square image panels in inches, a colour bar box at the right and legend room below."""
    size, gap, left, bottom = 2.1, 0.08, 0.3, 0.45
    top = _TITLE + (_SUPTITLE if title else 0.0)
    width = left + n_columns * size + (n_columns - 1) * gap + _COLOUR_BAR
    height = top + n_rows * size + (n_rows - 1) * gap + bottom
    fig = new_figure(width, height, layout=None)
    axes = np.empty((n_rows, n_columns), dtype=object)
    for row in range(n_rows):
        y = height - top - (row + 1) * size - row * gap
        for column in range(n_columns):
            x = left + column * (size + gap)
            axes[row, column] = fig.add_axes((x / width, y / height, size / width, size / height))
    panels_height = n_rows * size + (n_rows - 1) * gap
    bar_x = width - _COLOUR_BAR + 0.2
    bar = (bar_x / width, bottom / height, 0.14 / width, panels_height / height)
    return fig, axes, bar


def _check_slice(
    arrays: Mapping[str, np.ndarray], slice_index: int | None, axis: int
) -> int | None:
    count = slice_count(arrays, axis)
    if count == 0:
        if slice_index is not None:
            raise ValueError(f"a 2D image has no slices, got slice_index={slice_index!r}.")
        return None
    if slice_index is None:
        return busiest_slice(arrays, axis)
    if isinstance(slice_index, bool) or not isinstance(slice_index, int | np.integer):
        raise ValueError(f"slice_index must be an integer, got {slice_index!r}.")
    if not 0 <= slice_index < count:
        raise ValueError(
            f"slice_index must lie in [0, {count - 1}] along axis {axis}, got {slice_index}."
        )
    return int(slice_index)


def _slice(
    arrays: Mapping[str, np.ndarray], sigmoid: bool, index: int | None, axis: int
) -> list[np.ndarray]:
    """The 2D image, label, prediction and confidence to show (per channel first if sigmoid)."""
    out = []
    for key in OVERLAY_KEYS:
        values = np.asarray(arrays[key])
        values = values.astype(np.float32) if values.dtype == np.float16 else values
        if index is not None:
            channel_axes = 1 if sigmoid and key != "image" else 0
            values = np.take(values, index, axis=_spatial_axis(axis) + channel_axes)
        out.append(values)
    return out


def _label_rgba(labels: np.ndarray, sigmoid: bool, alpha: float = 0.6) -> np.ndarray:
    """Colour each class (softmax map, background transparent) or each region (largest first)."""
    colours = np.array([mcolors.to_rgba(CLASS_COLOURS[c % 10], alpha) for c in range(10)])
    if not sigmoid:
        rgba = colours[labels.astype(np.int64) % 10]
        rgba[labels == 0] = 0.0
        return rgba
    rgba = np.zeros((*labels.shape[1:], 4))
    for c in np.argsort([-(region > 0).sum() for region in labels], kind="stable"):
        rgba[labels[c] > 0] = colours[c % 10]
    return rgba


def _error_kinds(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """0 right, 1 false positive, 2 false negative, 3 wrong foreground class (label 0 = background)."""
    kinds = np.zeros(truth.shape, dtype=np.uint8)
    kinds[(predicted > 0) & (truth == 0)] = 1
    kinds[(truth > 0) & (predicted == 0)] = 2
    kinds[(truth > 0) & (predicted > 0) & (truth != predicted)] = 3
    return kinds


def _error_rgba(kinds: np.ndarray) -> np.ndarray:
    table = np.array(
        [
            (0.0, 0.0, 0.0, 0.0),
            mcolors.to_rgba(COLOURS["false_positive"], 0.9),
            mcolors.to_rgba(COLOURS["false_negative"], 0.9),
            mcolors.to_rgba(COLOURS["wrong_class"], 0.9),
        ]
    )
    return table[kinds]


# --- binning ---


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
) -> Figure:
    """Where one probability is binned, and how an mL1-ACE loss's gradient reaches an example.

    ``weights`` (one per bin) are the shares of ``value`` (``BinStats.count`` of binning it
    alone); ``probs``/``targets`` a small example, ``gradient`` d loss / d prob for each of its
    values and ``loss`` that loss; ``highlight`` marks one example value (e.g. ``value`` itself).
    """
    weights, probs, targets, gradient = (
        _numpy(v).ravel() for v in (weights, probs, targets, gradient)
    )
    if not probs.shape == targets.shape == gradient.shape:
        raise ValueError(
            f"probs, targets and gradient need one length, got {probs.size}, {targets.size}, "
            f"{gradient.size}."
        )
    if weights.size < 1:
        raise ValueError("weights needs one value per bin, got none.")
    edges = _display_edges(weights.size)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = new_figure(6.4, 4.2)
    bins_ax, gradient_ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2.2])
    fill = [
        mcolors.to_rgba(COLOURS["ground_truth"], 0.15 + 0.75 * w) if w > 0 else "white"
        for w in weights
    ]
    bins_ax.bar(
        edges[:-1], np.ones(weights.size), np.diff(edges), align="edge", color=fill,
        edgecolor="0.45", linewidth=0.6, gid="bins",
    )  # fmt: skip
    bins_ax.plot(centres, np.full(weights.size, 0.08), "|", color="0.35", ms=6)
    for centre, weight in zip(centres, weights, strict=True):
        if weight > 0:
            bins_ax.text(
                centre, 0.5, f"{weight:.2f}", ha="center", va="center", fontsize=7.5, gid="weight"
            )
    bins_ax.axvline(value, color=COLOURS["gap"], lw=1.6)
    bins_ax.set_ylim(0, 1)
    bins_ax.set_yticks([])
    bins_ax.spines["left"].set_visible(False)
    bins_ax.set_title(
        f"{binning} binning of p = {value:.3f} into {weights.size} bins (shares shown)"
    )

    for edge in edges:
        gradient_ax.axvline(edge, color="0.9", lw=0.6, zorder=0)
    gradient_ax.axhline(0, color="0.5", lw=0.8)
    gradient_ax.vlines(probs, 0, gradient, color="0.5", lw=1)
    for target, face, name in ((1, COLOURS["ground_truth"], "target 1"), (0, "white", "target 0")):
        chosen = targets == target
        gradient_ax.scatter(
            probs[chosen], gradient[chosen], s=28, facecolor=face, edgecolor=COLOURS["ground_truth"],
            zorder=3, label=name,
        )  # fmt: skip
    if highlight is not None:
        gradient_ax.scatter(
            probs[highlight], gradient[highlight], s=110, facecolor="none", edgecolor=COLOURS["gap"],
            linewidth=1.5, zorder=4, label="p (slider)",
        )  # fmt: skip
    gradient_ax.set_xlim(-0.02, 1.02)
    gradient_ax.set_xlabel("predicted probability")
    gradient_ax.set_ylabel("∂ loss / ∂ p")
    gradient_ax.set_title(f"mL1-ACE ({binning} bins) = {loss:.4f} on the example", gid="loss")
    gradient_ax.legend(loc="best", ncols=3)
    return fig


# --- figures about training ---

LOSS_COLOURS: dict[str, str] = {"baseline": "0.55", "hard": "tab:blue", "soft": "tab:orange"}
"""One colour per loss in every figure that compares losses (the baseline grey)."""

LOSS_TITLES: dict[str, str] = {
    "baseline": "Dice+CE",
    "hard": "+ hard mL1-ACE",
    "soft": "+ soft mL1-ACE",
}
"""How legends name each loss: what the calibration runs add to the baseline's Dice+CE."""


@styled
def plot_learning_curves(
    runs: Mapping[str, RunDir], metrics: Sequence[str] = ("train_loss", "val_dice", "val_ace")
) -> Figure:
    """One panel per ``history.csv`` column, one line per run (validation epochs only).

    ``runs`` maps a loss (which picks colour and legend from :data:`LOSS_COLOURS` and
    :data:`LOSS_TITLES`; other labels are shown as they are) to its run.
    """
    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            f"metrics must be a non-empty sequence of history.csv columns, got {metrics!r}."
        )
    fig = new_figure(2.8 * len(metrics), 2.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    histories = {label: run.history() for label, run in runs.items()}
    for ax, metric in zip(axes, metrics, strict=True):
        for label, history in histories.items():
            if metric not in history:
                raise ValueError(f"{runs[label].history_path} has no column {metric!r}.")
            points = history[["epoch", metric]].dropna()
            ax.plot(
                points["epoch"], points[metric], "o-", ms=3, color=LOSS_COLOURS.get(label),
                label=LOSS_TITLES.get(label, label), gid=f"curve:{label}",
            )  # fmt: skip
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    axes[0].legend()
    return fig


@styled
def plot_dice_vs_ace(runs: Mapping[str, RunDir]) -> Figure:
    """Per test image, Dice against ACE (each averaged over classes), one colour per run.

    Per-image values are :func:`calibtut.paper.runs_frame`'s (the paper's convention: ACE over
    every class, Dice over the classes present). The large markers are the means over images:
    the trade-off the calibration losses make. ``runs`` maps a loss (or any label) to its run.
    """
    fig = new_figure(4.2, 3.4)
    ax = fig.subplots()
    for label, run in runs.items():
        values = runs_frame(run.path).pivot(index="image_id", columns="metric", values="value")
        colour = LOSS_COLOURS.get(label)
        ax.scatter(
            values["macro_ace"], values["dice"], s=10, alpha=0.45, color=colour,
            gid=f"images:{label}",
        )  # fmt: skip
        ax.scatter(
            values["macro_ace"].mean(), values["dice"].mean(), s=120, color=colour,
            edgecolor="black", label=f"{LOSS_TITLES.get(label, label)} (mean)", zorder=3,
            gid=f"mean:{label}",
        )  # fmt: skip
    ax.set_xlabel("ACE per image (lower is better calibrated)")
    ax.set_ylabel("Dice per image")
    ax.legend()
    return fig


@styled
def plot_gradient_maps(
    image: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor,
    gradients: Mapping[str, np.ndarray | torch.Tensor],
) -> Figure:
    """The image with a class's annotated outline, then one signed gradient map per loss.

    Each map has its own colour scale, symmetric and logarithmic over three decades below its
    largest value (red: the loss falls if the value falls; blue: if it rises), since gradients
    differ in size by orders of magnitude between losses and between voxels.
    """
    image, boundary = (np.asarray(torch.as_tensor(a).detach().cpu()) for a in (image, boundary))
    if image.ndim != 2 or boundary.shape != image.shape:
        raise ValueError(
            f"image and boundary must be one 2D shape, got {image.shape}, {boundary.shape}"
        )
    fig = new_figure(2.6 * (1 + len(gradients)), 2.9)
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
    return fig


# --- paper figures ---


@styled
def plot_per_image_distributions(
    frame: pd.DataFrame, metrics: Sequence[str] = ("macro_ace", "dice")
) -> Figure:
    """Box plots of per-image values of a :mod:`calibtut.paper` frame.

    One row of panels per metric, one column per dataset (in the frame's order), one box per
    source and loss, so the spread over images that the paper's mean ± std summarises, and a
    user's runs beside the paper's, are seen at once. Rows share their y axis; NaN values (e.g. a
    Dice with every class empty) are left out of the boxes.
    """
    frame = check_frame(frame)
    absent = [metric for metric in metrics if metric not in set(frame["metric"])]
    if not metrics or absent:
        raise ValueError(
            f"metrics {list(metrics)} must be a non-empty selection of the frame's metrics "
            f"{sorted(set(frame['metric']))}"
        )
    datasets = list(dict.fromkeys(frame["dataset"]))
    sources = list(dict.fromkeys(frame["source"]))
    fig = new_figure(3.2 * len(datasets), 3.0 * len(metrics))
    axes = fig.subplots(len(metrics), len(datasets), sharey="row", squeeze=False)
    for row, metric in enumerate(metrics):
        for column, dataset in enumerate(datasets):
            ax = axes[row, column]
            panel = frame[(frame["metric"] == metric) & (frame["dataset"] == dataset)]
            values, labels, colours = [], [], []
            for source in sources:
                for loss in LOSSES:
                    group = panel.loc[
                        (panel["source"] == source) & (panel["loss"] == loss), "value"
                    ]
                    group = group.to_numpy(dtype=np.float64)
                    group = group[np.isfinite(group)]
                    if group.size:
                        values.append(group)
                        labels.append(loss if len(sources) == 1 else f"{source}\n{loss}")
                        colours.append(LOSS_COLOURS[loss])
            ax.set_title(f"{dataset}: {METRIC_LABELS[metric]}")
            if column == 0:
                ax.set_ylabel(f"per-image {METRIC_LABELS[metric]}")
            if not values:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            boxes = ax.boxplot(values, tick_labels=labels, patch_artist=True, widths=0.6)
            for box, colour in zip(boxes["boxes"], colours, strict=True):
                box.set_facecolor(colour)
            for median in boxes["medians"]:
                median.set_color("black")
    return fig
