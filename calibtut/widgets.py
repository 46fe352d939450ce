"""Interactive explorers (ipywidgets 8) over run directories, and a binning playground.

Widgets hold no calibration maths and no training: they read run directories (DESIGN.md) through
:class:`calibtut.runs.RunDir`, ask :mod:`calibtut.metrics` (and, in the playground, the binning
functions and losses) for numbers, and draw with :mod:`calibtut.plots`. Figures are rendered to
PNG into :class:`ipywidgets.Output` areas, so they need no front-end extension beyond ipywidgets'
own and work in JupyterLab, Notebook, Binder and (after :func:`enable_colab_widgets`) Colab.

Each explorer is a small class whose controls are attributes and whose ``update()`` redraws, so
code (and tests) can drive it; its ``widget`` is the box to display (or display the explorer
itself). Loaded bins, per-image tables, re-binned summaries and saved predictions are cached per
run, so a control change only re-draws.
"""

from __future__ import annotations

import base64
import io
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.binning import BinStats, hard_binning, soft_binning
from calibtut.losses import HardL1ACELoss, SoftL1ACELoss
from calibtut.metrics import REDUCTIONS, calibration_errors, macro_average, micro_errors
from calibtut.runs import RunDir, find_runs

__all__ = [
    "enable_colab_widgets",
    "BinningPlayground",
    "ImageExplorer",
    "DatasetExplorer",
    "binning_playground",
    "image_explorer",
    "dataset_explorer",
    "EXAMPLE_PROBS",
    "EXAMPLE_TARGETS",
]

RunsArgument = RunDir | str | Path | Iterable[RunDir | str | Path]
ALL_CLASSES = -1
DISPLAY_DPI = 100
_PREDICTIONS_PER_RUN = 8

EXAMPLE_PROBS = (0.05, 0.15, 0.3, 0.45, 0.55, 0.7, 0.85, 0.95)
EXAMPLE_TARGETS = (0, 0, 1, 0, 1, 0, 1, 1)
"""The playground's small example (one image, one class); the slider's value joins it."""


def enable_colab_widgets() -> bool:
    """In Google Colab, enable its custom widget manager (ipywidgets 8 needs it); else do nothing.

    Returns whether it was enabled. The explorers call it, so notebooks need not.
    """
    if "google.colab" not in sys.modules:
        return False
    from google.colab import output

    output.enable_custom_widget_manager()
    return True


# --- display ---


def _figure_output(fig: Figure) -> dict[str, Any]:
    """A figure as a display_data output (PNG), the form ``Output.outputs`` holds."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DISPLAY_DPI)
    width, height = (fig.get_size_inches() * DISPLAY_DPI).round().astype(int)
    return {
        "output_type": "display_data",
        "data": {
            "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": f"<Figure size {width}x{height}>",
        },
        "metadata": {"image/png": {"width": int(width), "height": int(height)}},
    }


def _html_output(html: str, text: str) -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {"text/html": html, "text/plain": text},
        "metadata": {},
    }


def _table_output(table: pd.DataFrame) -> dict[str, Any]:
    return _html_output(table.to_html(float_format=lambda v: f"{v:.4f}"), table.to_string())


def _show(output: widgets.Output, *items: dict[str, Any]) -> None:
    """Replace an Output's content in one step (no flicker, and no kernel needed to do it)."""
    output.outputs = tuple(items)


class _FigureCache:
    """The last few figures (and their PNG outputs) by the control state that drew them.

    Moving a slider back, or changing a control that does not affect a figure, then costs
    nothing. Kept small: a rendered figure holds its pixel buffer.
    """

    def __init__(self, size: int = 6) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, tuple[Figure, dict[str, Any]]] = OrderedDict()

    def get(self, key: Hashable, draw: Callable[[], Figure]) -> tuple[Figure, dict[str, Any]]:
        if key in self._items:
            self._items.move_to_end(key)
        else:
            figure = draw()
            self._items[key] = (figure, _figure_output(figure))
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return self._items[key]


# --- runs and their cached results ---


class _RunData:
    """One evaluated run's saved results, read once; re-binned summaries and predictions cached.

    ``class_names`` are the scored classes (the bins' class axis), ``class_indices`` their output
    channels (per_image.csv's ``class_index``) and ``channel_names`` every output channel (what
    overlay label values and regions count): a softmax run leaves the background unscored, so
    they differ (see :mod:`calibtut.runs`).
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.config = run.config
        self.bins, self.image_ids, self.class_names = run.bins()
        self.class_indices = run.class_indices()
        if "class_names" not in self.config:
            raise ValueError(
                f"{run.config_path} lacks class_names (the names of the output channels)."
            )
        self.channel_names = [str(name) for name in self.config["class_names"]]
        self.per_image = run.per_image()
        self.image_index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._rebinned: dict[int, BinStats] = {self.bins.num_bins: self.bins}
        self._summaries: dict[int, pd.DataFrame] = {}
        self._predictions: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def rebinned(self, num_bins: int) -> BinStats:
        if num_bins not in self._rebinned:
            self._rebinned[num_bins] = self.bins.rebinned(num_bins)
        return self._rebinned[num_bins]

    def summary(self, num_bins: int) -> pd.DataFrame:
        """Per class: macro (per image, then averaged) and micro (pooled) ECE/ACE/MCE, mean Dice."""
        if num_bins not in self._summaries:
            bins = self.rebinned(num_bins)
            per_image, micro = calibration_errors(bins), micro_errors(bins)
            columns: dict[str, Any] = {}
            for name in REDUCTIONS.values():
                columns[f"macro_{name}"] = macro_average(getattr(per_image, name)).double().numpy()
            for name in REDUCTIONS.values():
                columns[f"micro_{name}"] = getattr(micro, name)[0].double().numpy()
            dice = self.per_image.groupby("class_index")["dice"].mean()
            columns["dice"] = dice.reindex(self.class_indices).to_numpy()
            self._summaries[num_bins] = pd.DataFrame(
                columns, index=pd.Index(self.class_names, name="class")
            )
        return self._summaries[num_bins]

    def has_prediction(self, image_id: str) -> bool:
        """Asked of the disk each time: predictions may be saved after the results."""
        return image_id in self._predictions or image_id in self.run.prediction_ids()

    def prediction(self, image_id: str) -> dict[str, np.ndarray]:
        if image_id in self._predictions:
            self._predictions.move_to_end(image_id)
        else:
            self._predictions[image_id] = self.run.prediction(image_id)
            if len(self._predictions) > _PREDICTIONS_PER_RUN:
                self._predictions.popitem(last=False)
        return self._predictions[image_id]


@lru_cache(maxsize=32)
def _cached_run(path: str, bins_mtime: int, table_mtime: int) -> _RunData:
    """Runs are cached by path and result-file times, so re-evaluating a run reloads it."""
    return _RunData(RunDir(path))


def _load(run: RunDir) -> _RunData:
    stamps = [p.stat().st_mtime_ns for p in (run.bins_path, run.per_image_path)]
    return _cached_run(str(run.path.resolve()), *stamps)


def _resolve_runs(runs: RunsArgument) -> list[RunDir]:
    """Run directories from runs, paths of runs, or roots to search (``runs.find_runs``)."""
    items = [runs] if isinstance(runs, RunDir | str | Path) else list(runs)
    resolved: list[RunDir] = []
    for item in items:
        if not isinstance(item, RunDir | str | Path):
            raise TypeError(f"runs must be RunDirs or paths, got {type(item).__name__}.")
        run = item if isinstance(item, RunDir) else RunDir(item)
        if run.config_path.is_file():
            resolved.append(run)
        elif run.path.is_dir():
            found = find_runs(run.path)
            if not found:
                raise FileNotFoundError(f"No evaluated run directory below {run.path}.")
            resolved.extend(found)
        else:
            raise FileNotFoundError(f"{run.path} is neither a run directory nor a folder of runs.")
    if not resolved:
        raise ValueError("No runs given: pass run directories or a folder that holds runs.")
    for run in resolved:
        if not run.is_evaluated:
            raise FileNotFoundError(
                f"{run.path} is not evaluated: it needs bins.npz and per_image.csv."
            )
    return resolved


def _labels(runs: Sequence[_RunData]) -> list[str]:
    """Short unique labels: the dataset/loss/seed parts that differ between the runs."""
    parts = [
        (
            str(d.config.get("dataset", "?")),
            str(d.config.get("loss", "?")),
            f"seed_{d.config.get('seed', '?')}",
        )
        for d in runs
    ]
    varying = [i for i in range(3) if len({p[i] for p in parts}) > 1] or [1]
    labels = ["/".join(p[i] for i in varying) for p in parts]
    if len(set(labels)) < len(labels):
        labels = [str(d.run.path) for d in runs]
    return labels


def _check_shared_classes(runs: Sequence[_RunData], labels: Sequence[str]) -> None:
    """Runs explored together score the same classes on the same output channels."""
    classes = {
        label: (tuple(d.channel_names), tuple(zip(d.class_indices, d.class_names, strict=True)))
        for label, d in zip(labels, runs, strict=True)
    }
    if len(set(classes.values())) != 1:
        described = {
            label: {"output channels": list(channels), "scored (channel, class)": list(scored)}
            for label, (channels, scored) in classes.items()
        }
        raise ValueError(f"Runs to explore together need the same classes, got {described}.")


def _default_selection(runs: Sequence[_RunData], most: int = 3) -> tuple[int, ...]:
    """The runs an explorer opens on: the first run of each loss (e.g. baseline, hard, soft)."""
    chosen: dict[tuple[str, str], int] = {}
    for i, d in enumerate(runs):
        chosen.setdefault((str(d.config.get("dataset")), str(d.config.get("loss"))), i)
    return tuple(list(chosen.values())[:most])


def _first_foreground(class_names: Sequence[str]) -> int:
    """The class an explorer opens on: the first one that is not the background.

    One class at a time keeps figures small and redraws fast; "all classes" is one click away.
    """
    return 1 if len(class_names) > 1 and class_names[0].lower() == "background" else 0


def _class_options(class_names: Sequence[str]) -> list[tuple[str, int]]:
    return [("all classes", ALL_CLASSES)] + [(name, c) for c, name in enumerate(class_names)]


class _Explorer:
    """Shared run loading and run/class controls of the two explorers."""

    def __init__(self, runs: RunsArgument) -> None:
        enable_colab_widgets()
        self.data = [_load(run) for run in _resolve_runs(runs)]
        self.labels = _labels(self.data)
        _check_shared_classes(self.data, self.labels)
        first = self.data[0]
        self.class_names = first.class_names  # scored classes: the bins' class axis
        self.class_indices = first.class_indices  # their output channels
        self.channel_names = first.channel_names  # every output channel: overlays
        self.runs = widgets.SelectMultiple(
            options=[(label, i) for i, label in enumerate(self.labels)],
            value=_default_selection(self.data),
            rows=min(len(self.data), 6),
            description="runs",
        )
        self.class_index = widgets.Dropdown(
            options=_class_options(self.class_names),
            value=_first_foreground(self.class_names),
            description="class",
        )
        self.widget: widgets.Box

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def selected(self) -> list[tuple[str, _RunData]]:
        return [(self.labels[i], self.data[i]) for i in self.runs.value]

    @property
    def classes(self) -> list[int] | None:
        """The shown classes as positions on the bins' class axis (None: all of them)."""
        return None if self.class_index.value == ALL_CLASSES else [self.class_index.value]

    @property
    def channels(self) -> list[int]:
        """The shown classes' output channels (per_image.csv's ``class_index``)."""
        shown = range(len(self.class_names)) if self.classes is None else self.classes
        return [self.class_indices[c] for c in shown]


# --- per-image explorer ---


class ImageExplorer(_Explorer):
    """One test image under one or several runs: its metrics, reliability diagrams and overlay.

    Controls: ``runs`` (several side by side), ``image``, ``class_index`` and ``slice`` (3D);
    ``metrics`` shows the image's ECE/ACE/MCE/Dice (``per_image.csv``). The figures drawn last are
    kept as ``diagram_figure`` and ``overlay_figure``, the numbers as ``metrics_table``.
    """

    def __init__(self, runs: RunsArgument, axis: int = -1) -> None:
        super().__init__(runs)
        self.axis = axis
        image_ids = [
            i for i in self.data[0].image_ids if all(i in d.image_index for d in self.data)
        ]
        if not image_ids:
            raise ValueError(f"The runs {self.labels} have no test image in common.")
        self.image = widgets.Dropdown(options=image_ids, value=image_ids[0], description="image")
        self.slice = widgets.IntSlider(
            value=0, min=0, max=0, description="slice", continuous_update=False
        )
        self.metrics = widgets.HTML()
        self.diagram_output = widgets.Output()
        self.overlay_output = widgets.Output()
        self.diagram_figure: Figure | None = None
        self.overlay_figure: Figure | None = None
        self.metrics_table = pd.DataFrame()
        self._slice_source: tuple[str, int] | None = None
        self._drawing = False
        self._diagrams = _FigureCache()
        self._overlays = _FigureCache()
        controls = widgets.VBox([self.image, self.class_index, self.slice])
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.runs, controls]),
                self.metrics,
                self.diagram_output,
                self.overlay_output,
            ]
        )
        for control in (self.runs, self.image, self.class_index):
            control.observe(lambda _: self.update(), names="value")
        self.slice.observe(lambda _: self._slice_moved(), names="value")
        self.update()

    def update(self) -> None:
        """Redraw the metrics table, the reliability diagrams and the overlay."""
        selected = self.selected
        if not selected:
            message = _html_output("<i>Select at least one run.</i>", "Select at least one run.")
            _show(self.diagram_output, message)
            _show(self.overlay_output)
            self.metrics.value = ""
            return
        image_id = self.image.value
        rows = self.per_image_rows(image_id)
        self.metrics_table = rows
        self.metrics.value = f"<b>{image_id}</b>" + rows.to_html(float_format=lambda v: f"{v:.4f}")
        bins = {label: d.bins.select(d.image_index[image_id]) for label, d in selected}
        self.diagram_figure, shown = self._diagrams.get(
            (self.runs.value, image_id, self.class_index.value),
            lambda: plots.compare_reliability_diagrams(
                bins, self.class_names, image=0, classes=self.classes, title=f"image {image_id}"
            ),
        )
        _show(self.diagram_output, shown)
        self.update_overlay()

    def per_image_rows(self, image_id: str) -> pd.DataFrame:
        """ECE/ACE/MCE/Dice of one image, per selected run and shown class, from per_image.csv."""
        frames = []
        for label, d in self.selected:
            table = d.per_image[d.per_image["image_id"] == image_id]
            table = table[table["class_index"].isin(self.channels)]
            frames.append(table.assign(run=label))
        table = pd.concat(frames).set_index(["run", "class_name"])
        return table[["ece", "ace", "mce", "dice"]]

    def update_overlay(self) -> None:
        """Redraw the overlay (image, truth, prediction, confidence, errors) at the current slice."""
        image_id = self.image.value
        arrays = {
            label: d.prediction(image_id)
            for label, d in self.selected
            if d.has_prediction(image_id)
        }
        if not arrays:
            self.overlay_figure = None
            text = f"No saved prediction for image {image_id} in the selected runs."
            _show(self.overlay_output, _html_output(f"<i>{text}</i>", text))
            self._sync_slice(image_id, None)
            return
        first = next(iter(arrays.values()))
        self._sync_slice(image_id, first)
        sigmoid = plots.overlay_layout(first) == "sigmoid"
        channel = self.channels[0] if sigmoid else 0  # a region's output channel
        slice_index = self.slice.value if plots.slice_count(first, self.axis) else None
        self.overlay_figure, shown = self._overlays.get(
            (tuple(arrays), image_id, slice_index, channel),
            lambda: plots.compare_image_overlays(
                arrays,
                self.channel_names,
                slice_index=slice_index,
                axis=self.axis,
                channel=channel,
            ),
        )
        _show(self.overlay_output, shown)

    def _sync_slice(self, image_id: str, arrays: dict[str, np.ndarray] | None) -> None:
        """Fit the slice slider to the image (hidden for 2D); start on the busiest slice."""
        count = 0 if arrays is None else plots.slice_count(arrays, self.axis)
        self.slice.layout.display = None if count else "none"
        if count == 0 or self._slice_source == (image_id, count):
            return
        self._slice_source = (image_id, count)
        self._drawing = True
        try:
            self.slice.max = count - 1
            self.slice.value = plots.busiest_slice(arrays, self.axis)
        finally:
            self._drawing = False

    def _slice_moved(self) -> None:
        if not self._drawing:
            self.update_overlay()


def image_explorer(runs: RunsArgument, axis: int = -1) -> widgets.Box:
    """The displayable per-image explorer over ``runs`` (run directories or folders of runs)."""
    return ImageExplorer(runs, axis).widget


# --- dataset explorer ---


class DatasetExplorer(_Explorer):
    """Dataset reliability histograms of one or several runs, with macro/micro metrics per class.

    Controls: ``runs``, ``class_index``, ``num_bins`` (divisors of the saved number, via
    ``BinStats.rebinned``) and ``norm`` (colour scaling). The figure drawn last is kept as
    ``figure`` and the table as ``table``.
    """

    def __init__(self, runs: RunsArgument) -> None:
        super().__init__(runs)
        saved = {label: d.bins.num_bins for label, d in zip(self.labels, self.data, strict=True)}
        if len(set(saved.values())) != 1:
            raise ValueError(
                f"Runs to explore together need one saved number of bins, got {saved}."
            )
        stored = self.data[0].bins.num_bins
        self.num_bins = widgets.Dropdown(
            options=[n for n in range(stored, 0, -1) if stored % n == 0 and n > 1] or [stored],
            value=stored,
            description="bins",
        )
        self.norm = widgets.ToggleButtons(
            options=list(plots.HISTOGRAM_NORMS), value="log", description="colours"
        )
        self.figure_output = widgets.Output()
        self.table_output = widgets.Output()
        self.figure: Figure | None = None
        self.table = pd.DataFrame()
        self._figures = _FigureCache()
        controls = widgets.VBox([self.class_index, self.num_bins, self.norm])
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.runs, controls]),
                widgets.HBox(
                    [self.figure_output, self.table_output],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
            ]
        )
        for control in (self.runs, self.class_index, self.num_bins, self.norm):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def update(self) -> None:
        """Redraw the histograms and the metrics table for the current controls."""
        selected = self.selected
        if not selected:
            message = _html_output("<i>Select at least one run.</i>", "Select at least one run.")
            _show(self.figure_output, message)
            _show(self.table_output)
            return
        num_bins = self.num_bins.value
        self.table = self.summary_table()
        self.figure, shown = self._figures.get(
            (self.runs.value, self.class_index.value, num_bins, self.norm.value),
            lambda: plots.compare_dataset_reliability_histograms(
                {label: d.rebinned(num_bins) for label, d in selected},
                self.class_names,
                classes=self.classes,
                norm=self.norm.value,
            ),
        )
        _show(self.figure_output, shown)
        _show(self.table_output, _table_output(self.table))

    def summary_table(self) -> pd.DataFrame:
        """Macro and micro ECE/ACE/MCE and mean Dice per selected run and shown class."""
        frames = {label: d.summary(self.num_bins.value) for label, d in self.selected}
        table = pd.concat(frames, names=["run"])
        if self.classes is not None:
            table = table[
                table.index.get_level_values("class") == self.class_names[self.classes[0]]
            ]
        return table


def dataset_explorer(runs: RunsArgument) -> widgets.Box:
    """The displayable dataset explorer over ``runs`` (run directories or folders of runs)."""
    return DatasetExplorer(runs).widget


# --- binning playground ---


class BinningPlayground:
    """Which bins receive a probability, with what weight, and the mL1-ACE it feeds.

    Controls: ``value`` (the probability), ``num_bins``, ``binning`` ("hard"/"soft") and
    ``target`` (that voxel's ground truth). The value joins a small example
    (:data:`EXAMPLE_PROBS`, :data:`EXAMPLE_TARGETS`); ``update()`` bins it with
    ``calibtut.binning`` and evaluates the package's loss and its autograd gradient, kept as
    ``weights``, ``loss`` and ``gradient``.
    """

    def __init__(
        self, value: float = 0.37, num_bins: int = 5, binning: str = "soft", target: int = 1
    ) -> None:
        enable_colab_widgets()
        self.value = widgets.FloatSlider(
            value=value, min=0.0, max=1.0, step=0.005, readout_format=".3f", description="p"
        )
        self.num_bins = widgets.IntSlider(value=num_bins, min=1, max=20, description="bins")
        self.binning = widgets.ToggleButtons(
            options=["hard", "soft"], value=binning, description="binning"
        )
        self.target = widgets.ToggleButtons(
            options=[("0", 0), ("1", 1)], value=target, description="target"
        )
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.weights = torch.empty(0)
        self.gradient = torch.empty(0)
        self.loss = float("nan")
        self.widget = widgets.VBox(
            [widgets.HBox([self.value, self.num_bins]), widgets.HBox([self.binning, self.target]),
             self.summary, self.output]
        )  # fmt: skip
        for control in (self.value, self.num_bins, self.binning, self.target):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def update(self) -> None:
        """Re-bin the value, re-evaluate loss and gradient, redraw."""
        num_bins, soft = self.num_bins.value, self.binning.value == "soft"
        probs = torch.tensor([*EXAMPLE_PROBS, self.value.value], dtype=torch.float64).view(1, 1, -1)
        targets = torch.tensor([*EXAMPLE_TARGETS, self.target.value], dtype=torch.float64).view(
            1, 1, -1
        )
        value, value_target = probs[..., -1:], targets[..., -1:]
        if soft:
            self.weights = soft_binning(value, value_target, num_bins).count[0, 0]
            loss_function = SoftL1ACELoss(num_bins=num_bins)
        else:
            self.weights = hard_binning(value, value_target, num_bins).count[0, 0]
            loss_function = HardL1ACELoss(num_bins=num_bins)
        probs.requires_grad_(True)
        loss = loss_function(probs, targets)
        (gradient,) = torch.autograd.grad(loss, probs)
        self.loss, self.gradient = loss.item(), gradient[0, 0]
        self.figure = plots.binning_figure(
            self.value.value, self.weights, probs.detach()[0, 0], targets[0, 0], self.gradient,
            self.loss, self.binning.value, highlight=len(EXAMPLE_PROBS),
        )  # fmt: skip
        shares = ", ".join(
            f"bin {k} ({w:.2f})" for k, w in enumerate(self.weights.tolist()) if w > 0
        )
        self.summary.value = (
            f"p = {self.value.value:.3f} goes to {shares}; mL1-ACE ({self.binning.value}) = "
            f"{self.loss:.4f}; ∂loss/∂p = {float(self.gradient[-1]):+.4f}"
        )
        _show(self.output, _figure_output(self.figure))


def binning_playground(
    value: float = 0.37, num_bins: int = 5, binning: str = "soft", target: int = 1
) -> widgets.Box:
    """The displayable binning playground."""
    return BinningPlayground(value, num_bins, binning, target).widget
