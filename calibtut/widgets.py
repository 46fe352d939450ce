"""Interactive explorers (ipywidgets 8) over run directories, and a binning playground.

Widgets hold no maths and never train: they resolve runs with :mod:`calibtut.runs`, ask
:mod:`calibtut.views` for every figure and table, and show them. Figures are rendered to PNG into
:class:`ipywidgets.Output` areas, so they need no front-end extension beyond ipywidgets' own and
work in JupyterLab, Notebook, Binder and (after :func:`enable_colab_widgets`) Colab.

Each explorer is a small class whose controls are attributes and whose ``update()`` redraws, so
code (and tests) can drive it; its ``widget`` is the box to display (or display the explorer
itself). Rendered images of the last few control states are kept (as PNG bytes, not figures), so
moving a control back costs nothing; :meth:`close` releases everything.
"""

from __future__ import annotations

import base64
import io
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from calibtut import plots, views
from calibtut.runs import RunDir, resolve_runs

__all__ = [
    "enable_colab_widgets",
    "BinningPlayground",
    "ImageExplorer",
    "DatasetExplorer",
    "binning_playground",
    "image_explorer",
    "dataset_explorer",
    "ALL_CLASSES",
]

RunsArgument = RunDir | str | Path | Iterable[RunDir | str | Path]
ALL_CLASSES = -1
DISPLAY_DPI = 100


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


def _message(text: str) -> dict[str, Any]:
    return _html_output(f"<i>{text}</i>", text)


def _show(output: widgets.Output, *items: dict[str, Any]) -> None:
    """Replace an Output's content in one step (no flicker, and no kernel needed to do it)."""
    output.outputs = tuple(items)


class _Rendered:
    """The PNG outputs of the last few control states, and the figure drawn last.

    Only the encoded images are kept (a figure holds its whole artist tree and pixel buffer), so
    an explorer's memory stays small however long it is used.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.figure: Figure | None = None
        self._items: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()

    def get(self, key: Hashable, draw: Callable[[], Figure]) -> dict[str, Any]:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        self.figure = draw()
        self._items[key] = _figure_output(self.figure)
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return self._items[key]

    def clear(self) -> None:
        self._items.clear()
        if self.figure is not None:
            plt.close(self.figure)
        self.figure = None


# --- the explorers ---


class _Explorer:
    """Shared run loading, run and class controls, display and closing of the two explorers."""

    def __init__(self, runs: RunsArgument) -> None:
        enable_colab_widgets()
        self.run_dirs = views.labelled(resolve_runs(runs))
        self.labels = list(self.run_dirs)
        results = {label: run.results() for label, run in self.run_dirs.items()}
        self.class_names = views.shared_classes(results)  # scored classes: the bins' class axis
        first = next(iter(results.values()))
        self.class_indices = first.class_indices  # their output channels
        self._check_channels(results)
        self.results = results
        self.runs = widgets.SelectMultiple(
            options=[(label, i) for i, label in enumerate(self.labels)],
            value=self._default_selection(),
            rows=min(len(self.labels), 6),
            description="runs",
        )
        first_class = 0
        background = next(iter(self.run_dirs.values())).config.get("background_channel")
        if self.class_indices[0] == background:  # the background is scored: open on the next
            first_class = min(1, len(self.class_names) - 1)
        self.class_index = widgets.Dropdown(
            options=[("all classes", ALL_CLASSES)]
            + [(n, c) for c, n in enumerate(self.class_names)],
            value=first_class,
            description="class",
        )
        self.widget: widgets.Box
        self._controls: list[widgets.Widget] = [self.runs, self.class_index]

    def _check_channels(self, results: dict) -> None:
        for run in self.run_dirs.values():
            if "class_names" not in run.config:
                raise ValueError(
                    f"{run.config_path} lacks class_names (the names of the output channels)."
                )
        channels = {
            label: (tuple(run.config.get("class_names", ())), tuple(results[label].class_indices))
            for label, run in self.run_dirs.items()
        }
        if len(set(channels.values())) != 1:
            raise ValueError(f"Runs to explore together need the same classes, got {channels}.")
        self.channel_names = list(next(iter(channels.values()))[0])  # every output channel

    def _default_selection(self, most: int = 3) -> tuple[int, ...]:
        """The runs an explorer opens on: the first run of each loss (e.g. baseline, hard, soft)."""
        chosen: dict[tuple[str, str], int] = {}
        for i, run in enumerate(self.run_dirs.values()):
            config = run.config
            chosen.setdefault((str(config.get("dataset")), str(config.get("loss"))), i)
        return tuple(list(chosen.values())[:most])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def selected(self) -> dict[str, RunDir]:
        return {self.labels[i]: self.run_dirs[self.labels[i]] for i in self.runs.value}

    @property
    def classes(self) -> list[str] | None:
        """The shown classes' names (None: all of them)."""
        if self.class_index.value == ALL_CLASSES:
            return None
        return [self.class_names[self.class_index.value]]

    @property
    def channels(self) -> list[int]:
        """The shown classes' output channels (per_image.csv's ``class_index``)."""
        shown = self.class_names if self.classes is None else self.classes
        return [self.class_indices[self.class_names.index(name)] for name in shown]

    def close(self) -> None:
        """Close the widgets and drop the rendered images (a closed explorer is inert)."""
        for rendered in self._renders():
            rendered.clear()
        for control in self._all_widgets():
            control.close()

    def _renders(self) -> list[_Rendered]:
        return []

    def _all_widgets(self) -> list[widgets.Widget]:
        return [*self._controls, self.widget]


class ImageExplorer(_Explorer):
    """One test image under one or several runs: its metrics, reliability diagrams and overlay.

    Controls: ``runs`` (several side by side), ``image``, ``class_index`` and ``slice`` (3D);
    ``metrics`` shows the image's values (``per_image.csv``). The figures drawn last are
    ``diagram_figure`` and ``overlay_figure``, the numbers ``metrics_table``.
    """

    def __init__(self, runs: RunsArgument, axis: int = -1) -> None:
        super().__init__(runs)
        self.axis = axis
        ids = [r.image_ids for r in self.results.values()]
        image_ids = [i for i in ids[0] if all(i in other for other in ids[1:])]
        if not image_ids:
            raise ValueError(f"The runs {self.labels} have no test image in common.")
        self.image = widgets.Dropdown(options=image_ids, value=image_ids[0], description="image")
        self.slice = widgets.IntSlider(
            value=0, min=0, max=0, description="slice", continuous_update=False
        )
        self.metrics = widgets.HTML()
        self.diagram_output = widgets.Output()
        self.overlay_output = widgets.Output()
        self.metrics_table = pd.DataFrame()
        self._slice_source: tuple[str, int] | None = None
        self._drawing = False
        self._diagrams = _Rendered()
        self._overlays = _Rendered()
        controls = widgets.VBox([self.image, self.class_index, self.slice])
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.runs, controls]),
                self.metrics,
                self.diagram_output,
                self.overlay_output,
            ]
        )
        self._controls += [self.image, self.slice, self.metrics, controls]
        self._controls += [self.diagram_output, self.overlay_output]
        for control in (self.runs, self.image, self.class_index):
            control.observe(lambda _: self.update(), names="value")
        self.slice.observe(lambda _: self._slice_moved(), names="value")
        self.update()

    @property
    def diagram_figure(self) -> Figure | None:
        return self._diagrams.figure

    @property
    def overlay_figure(self) -> Figure | None:
        return self._overlays.figure

    def _renders(self) -> list[_Rendered]:
        return [self._diagrams, self._overlays]

    def update(self) -> None:
        """Redraw the metrics table, the reliability diagrams and the overlay."""
        selected = self.selected
        if not selected:
            _show(self.diagram_output, _message("Select at least one run."))
            _show(self.overlay_output)
            self.metrics.value = ""
            return
        image_id = self.image.value
        self.metrics_table = views.image_metrics(selected, image_id, self.classes)
        table = self.metrics_table.to_html(float_format=lambda v: f"{v:.4f}")
        self.metrics.value = f"<b>{image_id}</b>" + table
        shown = self._diagrams.get(
            (self.runs.value, image_id, self.class_index.value),
            lambda: views.reliability_diagrams(
                selected, image_id, self.classes, title=f"image {image_id}"
            ),
        )
        _show(self.diagram_output, shown)
        self.update_overlay()

    def update_overlay(self) -> None:
        """Redraw the overlay (image, truth, prediction, confidence, errors) at the current slice."""
        image_id = self.image.value
        saved = {
            label: run for label, run in self.selected.items() if image_id in run.prediction_ids()
        }
        if not saved:
            self._overlays.figure = None
            text = f"No saved prediction for image {image_id} in the selected runs."
            _show(self.overlay_output, _message(text))
            self._sync_slice(image_id, None)
            return
        arrays = next(iter(saved.values())).prediction(image_id)
        self._sync_slice(image_id, arrays)
        sigmoid = plots.overlay_layout(arrays) == "sigmoid"
        channel = self.channel_names[self.channels[0]] if sigmoid else None
        slice_index = self.slice.value if plots.slice_count(arrays, self.axis) else None
        shown = self._overlays.get(
            (tuple(saved), image_id, slice_index, channel),
            lambda: views.overlays(saved, image_id, channel, slice_index, self.axis),
        )
        _show(self.overlay_output, shown)

    def _sync_slice(self, image_id: str, arrays: dict | None) -> None:
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


class DatasetExplorer(_Explorer):
    """Dataset reliability histograms of one or several runs, with macro/micro metrics per class.

    Controls: ``runs``, ``class_index``, ``num_bins`` (divisors of the saved number) and
    ``norm`` (colour scaling). The figure drawn last is ``figure`` and the table ``table``.
    """

    def __init__(self, runs: RunsArgument) -> None:
        super().__init__(runs)
        saved = {label: r.bins.num_bins for label, r in self.results.items()}
        if len(set(saved.values())) != 1:
            raise ValueError(
                f"Runs to explore together need one saved number of bins, got {saved}."
            )
        stored = next(iter(saved.values()))
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
        self.table = pd.DataFrame()
        self._figures = _Rendered()
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
        self._controls += [self.num_bins, self.norm, self.figure_output, self.table_output]
        self._controls.append(controls)
        for control in (self.runs, self.class_index, self.num_bins, self.norm):
            control.observe(lambda _: self.update(), names="value")
        self.update()

    @property
    def figure(self) -> Figure | None:
        return self._figures.figure

    def _renders(self) -> list[_Rendered]:
        return [self._figures]

    def update(self) -> None:
        """Redraw the histograms and the metrics table for the current controls."""
        selected = self.selected
        if not selected:
            _show(self.figure_output, _message("Select at least one run."))
            _show(self.table_output)
            return
        num_bins = self.num_bins.value
        self.table = self.summary_table()
        shown = self._figures.get(
            (self.runs.value, self.class_index.value, num_bins, self.norm.value),
            lambda: views.dataset_histograms(
                selected, self.classes, num_bins=num_bins, norm=self.norm.value
            ),
        )
        _show(self.figure_output, shown)
        _show(self.table_output, _table_output(self.table))

    def summary_table(self) -> pd.DataFrame:
        """Macro and micro ECE/ACE/MCE and mean Dice per selected run and shown class."""
        frames = {
            label: views.class_summary(run, self.num_bins.value)
            for label, run in self.selected.items()
        }
        table = pd.concat(frames, names=["run"])
        if self.classes is not None:
            table = table[table.index.get_level_values("class").isin(self.classes)]
        return table


def dataset_explorer(runs: RunsArgument) -> widgets.Box:
    """The displayable dataset explorer over ``runs`` (run directories or folders of runs)."""
    return DatasetExplorer(runs).widget


# --- binning playground ---


class BinningPlayground:
    """Which bins receive a probability, with what weight, and the mL1-ACE it feeds.

    Controls: ``value`` (the probability), ``num_bins``, ``binning`` ("hard"/"soft") and
    ``target`` (that voxel's ground truth). ``update()`` asks
    :func:`calibtut.views.binning_example` for the bin shares, the loss and its gradient on a
    small example, kept as ``weights``, ``loss`` and ``gradient``.
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
        example = views.binning_example(
            self.value.value, self.num_bins.value, self.binning.value, self.target.value
        )
        if self.figure is not None:
            plt.close(self.figure)
        self.figure, self.weights = example.figure, example.weights
        self.loss, self.gradient = example.loss, example.gradient
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
