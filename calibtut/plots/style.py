"""The house style of every figure, its colours, and the panel layouts the figures share.

Panel grids are laid out in inches rather than by constrained layout, which re-measures every
tick of every panel and made an interactive redraw take seconds. Every figure function takes
``fig=`` (a Figure or SubFigure to draw into, so figures compose) or ``ax=`` (for one panel) and
returns the figure it drew on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colors as mcolors
from matplotlib import ticker as mticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from calibtut.binning import bin_edges
from calibtut.methods import METHODS

__all__ = [
    "STYLE",
    "COLOURS",
    "CLASS_COLOURS",
    "LOSS_COLOURS",
    "LOSS_TITLES",
    "style",
    "styled",
    "new_figure",
    "save_figure",
]

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
    "gap_overlap": "#9c2f3f",
    "gap_lower": "#3a9a5b",
    "bin_mean": "#1a1a1a",
    "diagonal": "#555555",
    "heatmap_diagonal": "#e8743b",
    "counts": "#8c8c8c",
    "mce": "#1a1a1a",
    "floor": "#2a9d8f",
    "false_positive": "#ff00e6",
    "false_negative": "#00e5ff",
    "wrong_class": "#ffe119",
}
"""Meaning-bound colours: ground truth blue, calibration gap red (darker where it overlaps a
bar; green where a loss lowered it), the noise floor teal, error kinds (magenta, cyan, yellow) apart from every class colour."""

CLASS_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#875692", "#a1caf1", "#be0032", "#c2b280", "#008856", "#f99379", "#604e97", "#b3446c",
    "#882d17", "#8db600", "#654522", "#2b3d26",
)  # fmt: skip
"""Colour of class (or region) ``c`` in overlays, ``CLASS_COLOURS[c % 20]``: 20 distinct colours
(tab10 without its cyan and olive, then Kelly's colours of maximum contrast without the
yellows), none close to the error colours, so AMOS's 15 organs never share one."""

LOSS_COLOURS: dict[str, str] = {name: m.colour for name, m in METHODS.items()}
"""One colour per method in every figure that compares them (the baseline grey)."""

LOSS_TITLES: dict[str, str] = {name: m.title for name, m in METHODS.items()}
"""How legends name each method: what it adds to the baseline's Dice+CE."""

HEATMAP_CMAP = "viridis"
HISTOGRAM_NORMS = ("log", "power", "linear")
# Panel grid geometry in inches: panel, counts strip, gaps, margins.
PANEL, COUNTS, PAIR_GAP, COLUMN_GAP = 2.2, 0.65, 0.08, 0.18
LEFT, TITLE, XLABELS, SUPTITLE, ROW_GAP = 0.8, 0.3, 0.5, 0.35, 0.12
COLOUR_BAR = 1.0  # right margin that holds a colour bar and its labels

_Function = TypeVar("_Function", bound=Callable[..., Figure])
Canvas = Figure | SubFigure


@contextmanager
def style() -> Iterator[None]:
    """Draw in the house style (:data:`STYLE`) inside the block.

    Yields:
        Nothing; matplotlib's settings are restored on leaving the block.
    """
    with plt.rc_context(STYLE):
        yield


def styled(function: _Function) -> _Function:
    """Decorate a figure function so that its artists are created in the house style.

    Args:
        function: a function that returns a Figure.

    Returns:
        The function, drawing inside :func:`style` (name and docstring kept).
    """

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

    Args:
        width: the width in inches.
        height: the height in inches.
        layout: a matplotlib layout engine ("constrained"; None: none).

    Returns:
        The figure.
    """
    fig = plt.figure(figsize=(width, height), layout=layout)
    plt.close(fig)
    return fig


def canvas(fig: Canvas | None, width: float, height: float, layout: str | None = None) -> Canvas:
    """``fig`` if given (a Figure or SubFigure to draw into), else a new figure of that size."""
    if fig is None:
        return new_figure(width, height, layout=layout)
    if not isinstance(fig, Figure | SubFigure):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure, got {type(fig).__name__}.")
    return fig


def panel(ax: Axes | None, width: float, height: float) -> Axes:
    """``ax`` if given, else the one axes of a new figure of that size."""
    if ax is None:
        return new_figure(width, height).subplots()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}.")
    return ax


def save_figure(fig: Figure, path: str | Path, dpi: int = 200) -> tuple[Path, Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf``; a ``.png``/``.pdf`` suffix is dropped.

    Args:
        fig: the figure.
        path: the file name without suffix (folders are created).
        dpi: the resolution of the PNG.

    Returns:
        The paths of the PNG and the PDF.

    Raises:
        TypeError: ``fig`` is not a Figure.
        ValueError: a bad ``dpi``, or ``path`` names a folder.
    """
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


# --- values ---


def numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """float64 numpy of a tensor or array."""
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def format_value(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4f}"


def display_edges(num_bins: int) -> np.ndarray:
    """MONAI's bin edges (binning.bin_edges), the last one (1 + float32 eps) drawn at 1."""
    return np.clip(numpy(bin_edges(num_bins)), 0.0, 1.0)


def compact_count(value: float, _position: object = None) -> str:
    """Counts as 1, 10, 100, 1k, 10k, 1M: short labels for the log counts axes."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


def check_mapping(runs: Any, kind: type, what: str) -> dict[str, Any]:
    """A non-empty ``{label: kind}`` mapping, or a clear error naming ``what`` it should hold."""
    if not hasattr(runs, "items") or not runs:
        raise ValueError(f"runs must be a non-empty mapping {{label: {what}}}.")
    for label, value in runs.items():
        if not isinstance(value, kind):
            raise TypeError(f"runs[{label!r}] must be a {what}, got {type(value).__name__}.")
    return dict(runs)


def check_class_names(class_names: Sequence[str], num_classes: int) -> list[str]:
    if isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(
            f"class_names must name the {num_classes} classes (channels) of the data, "
            f"got {class_names!r}."
        )
    return [str(name) for name in class_names]


def check_classes(classes: Sequence[int] | None, num_classes: int) -> list[int]:
    if classes is None:
        return list(range(num_classes))
    chosen = [int(c) for c in classes]
    if not chosen or any(not 0 <= c < num_classes for c in chosen):
        raise ValueError(f"classes must be indices in [0, {num_classes - 1}], got {classes!r}.")
    return chosen


def panel_title(row_label: str, name: str) -> str:
    return f"{row_label} · {name}" if row_label else name


# --- the (panel, counts strip) grid of reliability figures ---


def paired_grid(
    n_rows: int, n_columns: int, right: float, bottom: float, title: bool, fig: Canvas | None
) -> tuple[Canvas, list[list[tuple[Axes, Axes]]], tuple[float, float, float, float]]:
    """Rows of (panel, counts strip below it) pairs, placed in inches (scaled to ``fig`` if given).

    Axes are not shared (sharing one axis among dozens of panels made drawing slow); callers set
    the limits, including one range for all counts strips (:func:`same_count_range`).

    Returns:
        The figure, the axes pairs per row and column, and the figure-fraction box
        ``(left, bottom, width, height)`` beside the main panels where a colour bar goes.
    """
    # only the last row carries x tick labels and the x label; the others are closer together
    row_height = TITLE + PANEL + PAIR_GAP + COUNTS + ROW_GAP
    top = SUPTITLE if title else 0.0
    width = LEFT + n_columns * PANEL + (n_columns - 1) * COLUMN_GAP + right
    height = top + n_rows * row_height - ROW_GAP + XLABELS + bottom
    fig = canvas(fig, width, height)
    grid: list[list[tuple[Axes, Axes]]] = []
    for row in range(n_rows):
        panel_top = height - top - row * row_height - TITLE
        pairs = []
        for column in range(n_columns):
            x = LEFT + column * (PANEL + COLUMN_GAP)
            ax = fig.add_axes(
                (x / width, (panel_top - PANEL) / height, PANEL / width, PANEL / height)
            )
            strip_bottom = panel_top - PANEL - PAIR_GAP - COUNTS
            count_ax = fig.add_axes(
                (x / width, strip_bottom / height, PANEL / width, COUNTS / height)
            )
            pairs.append((ax, count_ax))
        grid.append(pairs)
    panels_top = height - top - TITLE
    panels_bottom = panels_top - (n_rows - 1) * row_height - PANEL
    bar_x = width - right + 0.2
    bar = (
        bar_x / width,
        panels_bottom / height,
        0.14 / width,
        (panels_top - panels_bottom) / height,
    )
    return fig, grid, bar


def arrangement(
    n_runs: int, per_run: int
) -> tuple[int, int, Callable[[int, int], tuple[int, int]]]:
    """Grid rows, columns and (run, panel) -> (row, column): a row per run, or with one panel
    per run, the runs side by side in one row."""
    if per_run == 1:
        return 1, n_runs, lambda run, _panel: (0, run)
    return n_runs, per_run, lambda run, panel: (run, panel)


def same_count_range(grid: list[list[tuple[Axes, Axes]]]) -> None:
    """One log range for every counts strip of a grid, so strips compare at a glance."""
    counts = np.concatenate(
        [patch.get_data().values for row in grid for _, strip in row for patch in strip.patches]
    )
    counts = counts[np.isfinite(counts)]
    if counts.size:
        for row in grid:
            for _, strip in row:
                strip.set_ylim(counts.min() / 2, counts.max() * 2)


def label_pair(
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


def draw_counts(ax: Axes, count: np.ndarray, occupied: np.ndarray, edges: np.ndarray) -> None:
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
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(compact_count))
    ax.set_xlim(0, 1)


def colour_norm(norm: str, gamma: float, matrices: list[np.ndarray]) -> mcolors.Normalize:
    """One colour scale ("log", "power" with ``gamma``, or "linear") for all ``matrices``."""
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


def finish(fig: Canvas, title: str | None) -> None:
    if title:
        height = fig.get_figheight() if isinstance(fig, Figure) else fig.bbox.height / fig.dpi
        fig.suptitle(title, y=1 - 0.06 / height, va="top")


def figure_of(fig: Canvas) -> Figure:
    """The top-level figure of a Figure or SubFigure (what a caller displays or saves)."""
    return fig if isinstance(fig, Figure) else fig.get_figure(root=True)
