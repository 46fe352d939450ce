"""Interactive explorers (ipywidgets 8) over run directories, and a binning playground.

Widgets hold no maths and never train: they resolve runs with :mod:`calibtut.runs`, ask
:mod:`calibtut.views` for every figure and table, and show them. Figures are rendered to PNG into
:class:`ipywidgets.Output` areas, so they need no front-end extension beyond ipywidgets' own and
work in JupyterLab, Notebook, Binder and (after :func:`enable_colab_widgets`) Colab.

Each explorer is a small class whose controls are attributes and whose ``update()`` redraws, so
code (and tests) can drive it; its ``widget`` is the box to display (or display the explorer
itself). Each control carries the CSS class ``calibtut-<attribute>`` (``calibtut-sort``,
``calibtut-zoom-rows``...), what the browser test finds them by. Rendered images of the last few control states are kept (as PNG bytes, not figures), so
moving a control back costs nothing; :meth:`close` releases everything, and so does dropping the
explorer (running its notebook cell again): widget callbacks hold it only weakly.
"""

from __future__ import annotations

import base64
import io
import sys
import weakref
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
DATASET_VIEWS = {
    "histograms": "dataset reliability histograms, a row per run",
    "gap change": "per bin, each loss's gap minus its baseline's, averaged over the images",
    "per-image ACE": "the per-image ACE of each run, outliers marked",
    "ACE change": "per image, each loss's ACE minus its baseline's, outliers marked",
}
"""What the dataset explorer's ``view`` shows."""
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


HEADERS = {
    "run": "run",
    "class": "class",
    "class_name": "class",
    "dice": "Dice",
    "ece": "ECE",
    "ace": "ACE",
    "ace_floor": "ACE floor",
    "mce": "MCE",
    "mce_floor": "MCE floor",
    "macro_ece": "ECE macro",
    "macro_ace": "ACE macro",
    "macro_mce": "MCE macro",
    "micro_ece": "ECE micro",
    "micro_ace": "ACE micro",
    "micro_mce": "MCE micro",
}
"""Column and index names as the explorers' tables print them."""

_TABLE_STYLE = (
    "border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums;margin:4px 0"
)
_CELL = "padding:2px 10px;border:none;border-bottom:1px solid #e3e3e3"


def _table_html(table: pd.DataFrame, caption: str = "") -> str:
    """A compact table with human headers, numbers right-aligned to 4 decimals, no grid lines."""
    names = [HEADERS.get(str(n), str(n)) for n in table.index.names]
    head = "".join(
        f'<th style="{_CELL};text-align:left;border-bottom:2px solid #999">{n}</th>' for n in names
    )
    head += "".join(
        f'<th style="{_CELL};text-align:right;border-bottom:2px solid #999">'
        f"{HEADERS.get(str(c), str(c))}</th>"
        for c in table.columns
    )
    rows = []
    for index, values in zip(table.index, table.to_numpy(), strict=True):
        keys = index if isinstance(index, tuple) else (index,)
        cells = "".join(f'<td style="{_CELL};text-align:left">{k}</td>' for k in keys)
        cells += "".join(f'<td style="{_CELL};text-align:right">{_number(v)}</td>' for v in values)
        rows.append(f"<tr>{cells}</tr>")
    title = f'<caption style="text-align:left;font-weight:bold">{caption}</caption>'
    return (
        f'<table class="calibtut-table" style="{_TABLE_STYLE}">{title if caption else ""}'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if number != number else f"{number:.4f}"


def _table_output(table: pd.DataFrame, caption: str = "") -> dict[str, Any]:
    return _html_output(_table_html(table, caption), table.to_string())


def _message(text: str) -> dict[str, Any]:
    return _html_output(f"<i>{text}</i>", text)


def _show(output: widgets.Output, *items: dict[str, Any]) -> None:
    """Replace an Output's content in one step (no flicker, and no kernel needed to do it)."""
    output.outputs = tuple(items)


class _Rendered:
    """The PNG outputs of the last few control states, and the figure of the state shown.

    Only the encoded images are kept (a figure holds its whole artist tree and pixel buffer), so
    an explorer's memory stays small however long it is used. ``figure`` is the shown state's,
    for code and tests to inspect: after a return to a kept image it is drawn again on first
    use (never the figure of another state); the drawing function is kept for export too.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.draw: Callable[[], Figure] | None = None
        self._figure: Figure | None = None
        self._key: Hashable = None  # the state shown
        self._figure_key: Hashable = None  # the state self._figure was drawn for
        self._items: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()

    @property
    def figure(self) -> Figure | None:
        if self.draw is not None and self._figure_key != self._key:
            self._replace(self.draw(), self._key)
        return self._figure

    def get(self, key: Hashable, draw: Callable[[], Figure]) -> dict[str, Any]:
        self.draw, self._key = draw, key
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        self._replace(draw(), key)
        self._items[key] = _figure_output(self._figure)
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return self._items[key]

    def _replace(self, figure: Figure | None, key: Hashable = None) -> None:
        if self._figure is not None:
            plt.close(self._figure)
        self._figure, self._figure_key = figure, key

    def forget(self) -> None:
        """Show nothing: no figure, nothing to export (kept images stay)."""
        self._replace(None)
        self.draw, self._key = None, None

    def clear(self) -> None:
        self._items.clear()
        self.forget()


def _close(controls: list[widgets.Widget], renders: list[_Rendered]) -> None:
    """Close widgets and drop rendered images; run once, by close() or when the explorer dies."""
    for rendered in renders:
        rendered.clear()
    for control in controls:
        control.close()
    controls.clear()


def _weak(owner: Any, method: str) -> Callable[..., None]:
    """A widget callback that calls ``owner.method()`` without keeping ``owner`` alive.

    Widgets live in ipywidgets' registry until closed; a callback holding the explorer would
    keep it, its runs' figures and images alive after a notebook cell made a new one. With weak
    callbacks a replaced explorer is freed (and its widgets closed, :class:`_Explorer`).
    """
    ref = weakref.ref(owner)

    def call(*_: Any) -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    return call


def _tag_controls(owner: Any) -> None:
    """Give each control the CSS class ``calibtut-<attribute>`` (e.g. ``calibtut-sort``): stable
    hooks for a notebook's own CSS and for the browser test, whatever the widget's description."""
    for name, value in vars(owner).items():
        if isinstance(value, widgets.DOMWidget) and not name.startswith("_"):
            value.add_class(f"calibtut-{name.replace('_', '-')}")


def _bin_options(stored: int) -> list[int]:
    """The numbers of bins the saved bins can be merged into exactly (its divisors above 1)."""
    return [n for n in range(stored, 0, -1) if stored % n == 0 and n > 1] or [stored]


# --- the explorers ---


class _Explorer:
    """Shared run loading, run/class/bins controls, export, display and closing of the explorers.

    Every widget an explorer makes is registered in ``_controls``; :meth:`close` (or the
    explorer being garbage-collected, e.g. when a notebook cell is run again) closes them all.
    """

    def __init__(self, runs: RunsArgument, export_dir: str | Path = "figures") -> None:
        enable_colab_widgets()
        self.export_dir = Path(export_dir)
        self.run_dirs = views.labelled(resolve_runs(runs))
        self.labels = list(self.run_dirs)
        results = {label: run.results() for label, run in self.run_dirs.items()}
        self.class_names = views.shared_classes(results)  # scored classes: the bins' class axis
        first = next(iter(results.values()))
        self.class_indices = first.class_indices  # their output channels
        self._check_channels(results)
        self.results = results
        self._controls: list[widgets.Widget] = []
        self._renders: list[_Rendered] = []
        self._closer = weakref.finalize(self, _close, self._controls, self._renders)
        self.runs = self._add(
            widgets.SelectMultiple(
                options=[(label, i) for i, label in enumerate(self.labels)],
                value=self._default_selection(),
                rows=min(len(self.labels), 6),
                description="runs",
            )
        )
        first_class = 0
        background = next(iter(self.run_dirs.values())).config.get("background_channel")
        if self.class_indices[0] == background:  # the background is scored: open on the next
            first_class = min(1, len(self.class_names) - 1)
        self.class_index = self._add(
            widgets.Dropdown(
                options=[("all classes", ALL_CLASSES)]
                + [(n, c) for c, n in enumerate(self.class_names)],
                value=first_class,
                description="class",
            )
        )
        saved = {label: r.bins.num_bins for label, r in results.items()}
        if len(set(saved.values())) != 1:
            raise ValueError(
                f"Runs to explore together need one saved number of bins, got {saved}."
            )
        self.saved_bins = next(iter(saved.values()))
        self.num_bins = self._add(
            widgets.Dropdown(
                options=_bin_options(self.saved_bins), value=self.saved_bins, description="bins"
            )
        )
        self.export = self._add(
            widgets.Button(description="save PNG + PDF", icon="download", tooltip=(
                f"write the figures shown as PNG and PDF files into {self.export_dir}/"
            ))
        )  # fmt: skip
        self.export_status = self._add(widgets.HTML())
        self.export.on_click(_weak(self, "save_figures"))
        self.widget: widgets.Box

    def _add(self, control: widgets.Widget) -> Any:
        self._controls.append(control)
        return control

    def _render(self) -> _Rendered:
        rendered = _Rendered()
        self._renders.append(rendered)
        return rendered

    def _observe(self, method: str, *controls: widgets.Widget) -> None:
        for control in controls:
            control.observe(_weak(self, method), names="value")

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

    def compared(self) -> dict[str, RunDir]:
        """The selected runs that have a baseline among the explorer's runs, with those
        baselines (selected or not), in the explorer's order: what a change is taken from."""
        selected = self.selected
        wanted = {label for label in selected if views.baseline_of(self.run_dirs, label)}
        wanted |= {views.baseline_of(self.run_dirs, label) for label in set(wanted)}
        return {label: run for label, run in self.run_dirs.items() if label in wanted}

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

    @property
    def bins(self) -> int | None:
        """The chosen number of bins (None: as saved, so saved values are used as they are)."""
        return None if self.num_bins.value == self.saved_bins else self.num_bins.value

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def close(self) -> None:
        """Close every widget and drop the rendered images and figures (a closed explorer is
        inert). Done by itself when the explorer is garbage-collected."""
        self._closer()

    def _figures(self) -> dict[str, _Rendered]:
        """The shown figures by file-name part (what :meth:`save_figures` writes)."""
        return {}

    def _export_name(self) -> str:
        return "explorer"

    def save_figures(self) -> list[Path]:
        """Write the figures shown as PNG (200 dpi) and PDF into ``export_dir``; returns the paths.

        Each is drawn again from the current controls (the explorer keeps images, not figures).
        """
        paths: list[Path] = []
        for part, rendered in self._figures().items():
            if rendered.draw is None:
                continue
            figure = rendered.draw()
            name = f"{self._export_name()}_{part}".replace("/", "-").replace(" ", "_")
            paths += plots.save_figure(figure, self.export_dir / name)
            plt.close(figure)
        listed = ", ".join(str(p) for p in paths) or "nothing to save"
        self.export_status.value = f"<small>saved: {listed}</small>"
        return paths


class ImageExplorer(_Explorer):
    """One test image under one or several runs: its metrics, reliability diagrams and overlay,
    and the means to find the images worth looking at.

    Controls: ``runs`` (several side by side), ``class_index``, ``num_bins`` (re-binning the
    saved bins), ``sort`` (:data:`calibtut.views.RANKINGS`: ACE, Dice, MCE, the noise floor,
    the change from the baseline...), ``order``, ``within`` (keep images whose value lies in the
    range), ``image`` (each id with its value), ``previous``/``next``, ``slice`` (3D), the
    overlay's crop box ``zoom_rows``/``zoom_columns`` (``unzoom``: the whole slice again),
    ``diagram_view`` (the reliability diagrams, or per bin each loss's gap change from its
    baseline on this image) and ``export``. ``metrics`` shows the image's values. The figures drawn last are
    ``diagram_figure`` and ``overlay_figure``, the numbers ``metrics_table`` and the ranked
    images ``ranking``.
    """

    def __init__(
        self, runs: RunsArgument, axis: int = -1, export_dir: str | Path = "figures"
    ) -> None:
        super().__init__(runs, export_dir)
        self.axis = axis
        ids = [r.image_ids for r in self.results.values()]
        self.image_ids = [i for i in ids[0] if all(i in other for other in ids[1:])]
        if not self.image_ids:
            raise ValueError(f"The runs {self.labels} have no test image in common.")
        add = self._add
        self.sort = add(widgets.Dropdown(options=list(views.RANKINGS), value="image id",
                                         description="sort by"))  # fmt: skip
        self.order = add(widgets.ToggleButtons(
            options=[("largest first", True), ("smallest first", False)], value=False,
            description="order", style={"button_width": "120px"},
        ))  # fmt: skip
        self.within = add(widgets.FloatRangeSlider(
            min=0.0, max=1.0, value=(0.0, 1.0), step=0.001, readout_format=".3f",
            description="keep", continuous_update=False,
        ))  # fmt: skip
        self.ranked_by = add(widgets.HTML())
        self.image = add(widgets.Select(options=self.image_ids, value=self.image_ids[0],
                                        rows=10, description="image"))  # fmt: skip
        self.image.layout.width = "330px"
        self.previous = add(widgets.Button(description="previous", icon="arrow-up",
                                           layout=widgets.Layout(width="110px")))  # fmt: skip
        self.next = add(widgets.Button(description="next", icon="arrow-down",
                                       layout=widgets.Layout(width="110px")))  # fmt: skip
        self.position = add(widgets.HTML())
        self.slice = add(widgets.IntSlider(value=0, min=0, max=0, description="slice",
                                           continuous_update=False))  # fmt: skip
        # the overlay's crop box (a zoom), in the shown slice's rows and columns, inclusive
        self.zoom_rows = add(widgets.IntRangeSlider(value=(0, 0), min=0, max=0,
                                                    description="zoom rows",
                                                    continuous_update=False))  # fmt: skip
        self.zoom_columns = add(widgets.IntRangeSlider(value=(0, 0), min=0, max=0,
                                                       description="columns",
                                                       continuous_update=False))  # fmt: skip
        self.unzoom = add(widgets.Button(description="whole image", icon="expand",
                                         layout=widgets.Layout(width="130px")))  # fmt: skip
        self._zoom_shape: tuple[int, int] | None = None
        self.diagram_view = add(widgets.ToggleButtons(
            options=[("reliability", "reliability"), ("gap change", "gap change")],
            value="reliability", description="diagrams", style={"button_width": "120px"},
            tooltips=["the image's reliability diagrams, a row per run",
                      "per bin, each loss's gap minus its baseline's, on this image"],
        ))  # fmt: skip
        self.metrics = add(widgets.HTML())
        self.diagram_output = add(widgets.Output())
        self.overlay_output = add(widgets.Output())
        self.metrics_table = pd.DataFrame()
        self.ranking = pd.Series(dtype=float)
        self._slice_source: tuple[str, int] | None = None
        self._wanted: str | None = None  # the image show_image() lists as chosen
        self._holding = False
        self._diagrams = self._render()
        self._overlays = self._render()
        settings = add(widgets.VBox([self.runs, self.class_index, self.num_bins,
                                     self.diagram_view, self.export, self.export_status]))  # fmt: skip
        finding = add(widgets.VBox([self.sort, self.order, self.within, self.ranked_by]))
        stepping = add(widgets.HBox([self.previous, self.next, self.position]))
        choosing = add(widgets.VBox([self.image, stepping]))
        overlay = add(widgets.VBox([self.slice, self.zoom_rows, self.zoom_columns, self.unzoom]))
        controls = add(widgets.HBox([settings, finding, choosing, overlay],
                                    layout=widgets.Layout(flex_flow="row wrap")))  # fmt: skip
        # the figures scroll inside their own box, so the controls above stay in view
        shown = add(widgets.VBox(
            [self.metrics, self.diagram_output, self.overlay_output],
            layout=widgets.Layout(max_height="760px", overflow="auto"),
        ))  # fmt: skip
        self.widget = add(widgets.VBox([controls, shown]))
        self._observe("_rank_again", self.runs, self.class_index, self.num_bins, self.order)
        self._observe("_new_sort", self.sort)
        self._observe("_filter", self.within)
        self._observe("_image_chosen", self.image, self.diagram_view)
        self._observe("_slice_moved", self.slice, self.zoom_rows, self.zoom_columns)
        self.unzoom.on_click(_weak(self, "show_whole_image"))
        self.previous.on_click(_weak(self, "show_previous"))
        self.next.on_click(_weak(self, "show_next"))
        _tag_controls(self)
        self._new_sort()

    @property
    def diagram_figure(self) -> Figure | None:
        return self._diagrams.figure

    @property
    def overlay_figure(self) -> Figure | None:
        return self._overlays.figure

    def _figures(self) -> dict[str, _Rendered]:
        part = "diagrams" if self.diagram_view.value == "reliability" else "gap_changes"
        return {part: self._diagrams, "overlay": self._overlays}

    def _export_name(self) -> str:
        shown = "all" if self.classes is None else self.classes[0]
        return f"{self.image.value}_{shown}_{self.num_bins.value}bins"

    # --- finding images ---

    def _ranked_run(self) -> str:
        """The run whose values rank the images: the first selected, but for a change from the
        baseline the first selected run that is not a baseline (else the first such run)."""
        selected = list(self.selected) or self.labels
        ranking = views.RANKINGS[self.sort.value]
        if ranking is None or not ranking[1]:
            return selected[0]
        others = [label for label in selected + self.labels
                  if views.baseline_of(self.run_dirs, label) is not None]  # fmt: skip
        return others[0] if others else selected[0]

    def _ranking(self, within: tuple[float, float] | None) -> pd.Series:
        ranking = views.image_ranking(
            self.run_dirs, self.sort.value, self.classes, self._ranked_run(),
            num_bins=self.bins, descending=self.order.value, within=within,
        )  # fmt: skip
        return ranking[ranking.index.isin(self.image_ids)]

    def _new_sort(self) -> None:
        """A new ranking key: ids in order, the range reset to every value, then redraw."""
        ranking = views.RANKINGS[self.sort.value]
        self._holding = True
        try:  # errors largest first, Dice smallest first: the worst images on top
            self.order.value = ranking is not None and ranking[0] != "dice"
        finally:
            self._holding = False
        self._rank_again(reset=True)

    def _filter(self) -> None:
        if not self._holding:
            self._rank_again()

    def _rank_again(self, reset: bool = False) -> None:
        """Rank the images again (the controls changed what a value is) and redraw."""
        if self._holding:
            return
        self._holding = True
        try:
            if views.RANKINGS[self.sort.value] is None:
                self.within.layout.display = "none"
                self.ranking = self._ranking(None)
            else:
                try:
                    every = self._ranking(None)
                except ValueError as err:  # e.g. a change, and no baseline among the runs
                    self.ranked_by.value = f"<small>{err}</small>"
                    self.sort.value = "image id"
                    self.within.layout.display = "none"
                    every = self._ranking(None)
                finite = every.dropna()
                if views.RANKINGS[self.sort.value] is not None and len(finite):
                    self.within.layout.display = None
                    low, high = float(finite.min()), float(finite.max())
                    high = high if high > low else low + 1e-6
                    kept = self.within.value
                    if reset or kept[0] < low or kept[1] > high or self.within.min != low:
                        kept = (low, high)
                    with self.within.hold_trait_notifications():
                        self.within.min, self.within.max = low, high
                        self.within.step = (high - low) / 200
                        self.within.value = kept
                    full = kept == (low, high)
                    self.ranking = every if full else self._ranking(kept)
                else:
                    self.ranking = every
            self._list_images()
        finally:
            self._holding = False
        self.update()

    def _list_images(self) -> None:
        """The ranked ids, each with its value, keeping the chosen image where it is listed."""
        key = self.sort.value
        if views.RANKINGS[key] is None:
            options = [(i, i) for i in self.ranking.index]
            self.ranked_by.value = ""
        else:
            options = [(f"{i}   {_number(v)}", i) for i, v in self.ranking.items()]
            run = self._ranked_run()
            against = views.baseline_of(self.run_dirs, run) if views.RANKINGS[key][1] else None
            what = f"{run} − {against}" if against else run
            shown = "all classes" if self.classes is None else self.classes[0]
            self.ranked_by.value = (
                f"<small>{key} of <b>{what}</b>, {shown}, {self.num_bins.value} bins; "
                f"{len(options)} of {len(self.image_ids)} images</small>"
            )
        current = self.image.value if self._wanted is None else self._wanted
        if not options:
            options = [(f"(no image in this range) {current}", current)]
        self.image.options = options
        ids = [v for _, v in options]
        self.image.value = current if current in ids else ids[0]

    def show_image(self, image_id: str, class_index: int | None = None) -> None:
        """Show ``image_id`` (widening the kept range if it is filtered out), and the class
        ``class_index`` if given: the controls move together and the explorer redraws once."""
        if image_id not in self.image_ids:
            raise ValueError(f"{image_id!r} is not a test image of every selected run.")
        holding, self._holding = self._holding, True
        try:
            if class_index is not None:
                self.class_index.value = class_index
        finally:
            self._holding = holding
        self._wanted = image_id
        try:
            self._rank_again()  # the list for the class, with the image chosen: one redraw
        finally:
            self._wanted = None
        if self.image.value != image_id:  # filtered out by the kept range: keep every value
            self.within.value = (self.within.min, self.within.max)
            self.image.value = image_id

    def _step(self, by: int) -> None:
        ids = [v for _, v in self.image.options]
        position = ids.index(self.image.value) + by
        if 0 <= position < len(ids):
            self.image.value = ids[position]

    def show_previous(self) -> None:
        """The image above in the list (the previous in the ranking)."""
        self._step(-1)

    def show_next(self) -> None:
        """The image below in the list (the next in the ranking)."""
        self._step(1)

    def _image_chosen(self) -> None:
        if not self._holding:
            self.update()

    # --- drawing ---

    def update(self) -> None:
        """Redraw the metrics table, the reliability diagrams and the overlay."""
        ids = [v for _, v in self.image.options]
        at = ids.index(self.image.value) if self.image.value in ids else 0
        self.position.value = f"<small>{at + 1} of {len(ids)}</small>"
        self.previous.disabled, self.next.disabled = at == 0, at >= len(ids) - 1
        selected = self.selected
        if not selected:
            _show(self.diagram_output, _message("Select at least one run."))
            _show(self.overlay_output)
            self._diagrams.forget()
            self._overlays.forget()
            self.metrics.value = ""
            return
        # drawing functions are kept for export: they hold values, never the explorer itself
        image_id, num_bins, classes = self.image.value, self.bins, self.classes
        self.metrics_table = views.image_metrics(selected, image_id, classes, num_bins)
        caption = f"{image_id} · {self.num_bins.value} bins"
        self.metrics.value = _table_html(self.metrics_table, caption)
        key = (self.runs.value, image_id, self.class_index.value, num_bins)
        if self.diagram_view.value == "reliability":
            shown = self._diagrams.get(
                key,
                lambda: views.reliability_diagrams(
                    selected, image_id, classes, num_bins, title=f"image {image_id}"
                ),
            )
        elif compared := self.compared():
            shown = self._diagrams.get(
                ("gap change", *key),
                lambda: views.gap_change_figure(compared, image_id, classes, num_bins),
            )
        else:
            self._diagrams.forget()
            shown = _message(
                "A gap change needs a selected run other than a baseline, and a baseline run "
                "among the explorer's runs."
            )
        _show(self.diagram_output, shown)
        self.update_overlay()

    def update_overlay(self) -> None:
        """Redraw the overlay (image, truth, prediction, the class's probability, errors) at the
        current slice."""
        image_id = self.image.value
        saved = {
            label: run for label, run in self.selected.items() if image_id in run.prediction_ids()
        }
        if not saved:
            self._overlays.forget()
            text = (
                f"No saved prediction for image {image_id} in the selected runs "
                "(runs evaluated before every test image's prediction was saved: evaluate them "
                "again with `calibtut evaluate RUN`)."
            )
            _show(self.overlay_output, _message(text))
            self._sync_slice(image_id, None)
            return
        arrays = next(iter(saved.values())).prediction(image_id)
        self._sync_slice(image_id, arrays)
        sigmoid = plots.overlay_layout(arrays) == "sigmoid"
        single = self.classes is not None
        channel = self.channel_names[self.channels[0]] if sigmoid or single else None
        axis = self.axis
        slice_index = self.slice.value if plots.slice_count(arrays, axis) else None
        region = self.region
        shown = self._overlays.get(
            (tuple(saved), image_id, slice_index, channel, region),
            lambda: views.overlays(saved, image_id, channel, slice_index, axis, region),
        )
        _show(self.overlay_output, shown)

    @property
    def region(self) -> tuple[int, int, int, int] | None:
        """The overlay's crop box ``(row_start, row_stop, column_start, column_stop)``, half-open
        (None: the whole slice)."""
        if self._zoom_shape is None:
            return None
        (r0, r1), (c0, c1) = self.zoom_rows.value, self.zoom_columns.value
        if (r0, r1 + 1, c0, c1 + 1) == (0, self._zoom_shape[0], 0, self._zoom_shape[1]):
            return None
        return r0, r1 + 1, c0, c1 + 1

    def show_whole_image(self) -> None:
        """Zoom out: the whole slice in the overlay."""
        if self._zoom_shape is None:
            return
        rows, columns = self._zoom_shape
        holding, self._holding = self._holding, True
        try:
            self.zoom_rows.value, self.zoom_columns.value = (0, rows - 1), (0, columns - 1)
        finally:
            self._holding = holding
        self.update_overlay()

    def _sync_zoom(self, arrays: dict | None) -> None:
        """Fit the crop box to the shown slice (the whole of it for a slice of a new shape)."""
        shape = None if arrays is None else plots.slice_shape(arrays, self.axis)
        for control in (self.zoom_rows, self.zoom_columns, self.unzoom):
            control.layout.display = None if shape else "none"
        if shape is None or shape == self._zoom_shape:
            return
        self._zoom_shape = shape
        holding, self._holding = self._holding, True
        try:
            for control, size in zip((self.zoom_rows, self.zoom_columns), shape, strict=True):
                with control.hold_trait_notifications():
                    control.max = size - 1
                    control.value = (0, size - 1)
        finally:
            self._holding = holding

    def _sync_slice(self, image_id: str, arrays: dict | None) -> None:
        """Fit the slice slider to the image (hidden for 2D); start on the busiest slice."""
        self._sync_zoom(arrays)
        count = 0 if arrays is None else plots.slice_count(arrays, self.axis)
        self.slice.layout.display = None if count else "none"
        if count == 0 or self._slice_source == (image_id, count):
            return
        self._slice_source = (image_id, count)
        holding, self._holding = self._holding, True
        try:
            self.slice.max = count - 1
            self.slice.value = plots.busiest_slice(arrays, self.axis)
        finally:
            self._holding = holding

    def _slice_moved(self) -> None:
        if not self._holding:
            self.update_overlay()


def image_explorer(runs: RunsArgument, axis: int = -1) -> widgets.Box:
    """The displayable per-image explorer over ``runs`` (run directories or folders of runs).

    The box keeps its explorer alive; ``box.close()`` ends both.
    """
    explorer = ImageExplorer(runs, axis)
    explorer.widget._calibtut_explorer = explorer  # type: ignore[attr-defined]
    return explorer.widget


class DatasetExplorer(_Explorer):
    """Dataset reliability histograms of one or several runs, with macro/micro metrics per class,
    and the images behind any cell of a histogram.

    Controls: ``runs``, ``class_index``, ``num_bins`` (divisors of the saved number), ``view``
    (:data:`DATASET_VIEWS`: the histograms, the mean gap change per bin from the baseline, the
    per-image ACE or its change, outliers marked), ``norm`` (the histograms' colours), ``cell`` (a histogram cell of the first selected run, fullest first),
    ``cell_images`` (the images that put a count there) and ``open_image`` (show the chosen one
    in the linked ``image_explorer``), ``export``. The figure drawn last is ``figure`` and the
    table ``table``.
    """

    def __init__(
        self,
        runs: RunsArgument,
        image_explorer: ImageExplorer | None = None,
        export_dir: str | Path = "figures",
    ) -> None:
        super().__init__(runs, export_dir)
        self.image_explorer = image_explorer
        add = self._add
        self.norm = add(widgets.ToggleButtons(
            options=list(plots.HISTOGRAM_NORMS), value="log", description="colours",
            style={"button_width": "70px"},
        ))  # fmt: skip
        self.view = add(widgets.ToggleButtons(
            options=list(DATASET_VIEWS), value="histograms", description="show",
            style={"button_width": "120px"}, tooltips=list(DATASET_VIEWS.values()),
        ))  # fmt: skip
        self.cell = add(widgets.Dropdown(description="cell", layout=widgets.Layout(width="420px")))
        self.cell_images = add(widgets.Select(rows=6, description="images",
                                              layout=widgets.Layout(width="420px")))  # fmt: skip
        self.open_image = add(widgets.Button(
            description="open in image explorer", icon="search",
            disabled=image_explorer is None, layout=widgets.Layout(width="220px"),
        ))  # fmt: skip
        self.figure_output = add(widgets.Output())
        self.table_output = add(widgets.Output())
        self.table = pd.DataFrame()
        self._figures_rendered = self._render()
        self._holding = False
        settings = add(widgets.VBox([self.runs, self.class_index, self.num_bins, self.view,
                                     self.norm, self.export, self.export_status]))  # fmt: skip
        linking = add(widgets.VBox([
            add(widgets.HTML("<b>which images put counts in a cell?</b>")),
            self.cell, self.cell_images, self.open_image,
        ]))  # fmt: skip
        controls = add(widgets.HBox([settings, linking],
                                    layout=widgets.Layout(flex_flow="row wrap")))  # fmt: skip
        shown = add(
            widgets.VBox(
                [self.figure_output, self.table_output],
                layout=widgets.Layout(max_height="760px", overflow="auto"),
            )
        )
        self.widget = add(widgets.VBox([controls, shown]))
        self._observe("update", self.runs, self.class_index, self.num_bins, self.norm, self.view)
        self._observe("_cell_chosen", self.cell)
        self.open_image.on_click(_weak(self, "open_in_image_explorer"))
        _tag_controls(self)
        self.update()

    @property
    def figure(self) -> Figure | None:
        return self._figures_rendered.figure

    def _figures(self) -> dict[str, _Rendered]:
        return {self.view.value.replace(" ", "_"): self._figures_rendered}

    def _export_name(self) -> str:
        shown = "all" if self.classes is None else self.classes[0]
        norm = f"_{self.norm.value}" if self.view.value == "histograms" else ""
        return f"dataset_{shown}_{self.num_bins.value}bins{norm}"

    def update(self) -> None:
        """Redraw the histograms and the metrics table for the current controls."""
        if self._holding:
            return
        selected = self.selected
        self._list_cells()
        if not selected:
            _show(self.figure_output, _message("Select at least one run."))
            _show(self.table_output)
            self._figures_rendered.forget()
            return
        num_bins, classes, norm, view = (
            self.num_bins.value, self.classes, self.norm.value, self.view.value
        )  # fmt: skip
        self.norm.disabled = view != "histograms"
        self.table = self.summary_table()
        key = (view, self.runs.value, self.class_index.value, num_bins)
        compared = self.compared()
        if view == "histograms":
            shown = self._figures_rendered.get(
                (*key, norm),
                lambda: views.dataset_histograms(selected, classes, num_bins=num_bins, norm=norm),
            )
        elif view == "per-image ACE":
            shown = self._figures_rendered.get(
                key, lambda: views.distribution_figure(selected, "ACE", classes, num_bins)
            )
        elif not compared:
            self._figures_rendered.forget()
            shown = _message(
                "A change needs a selected run other than a baseline, and a baseline run among "
                "the explorer's runs."
            )
        elif view == "gap change":
            shown = self._figures_rendered.get(
                key, lambda: views.gap_change_figure(compared, None, classes, num_bins)
            )
        else:
            change = "ACE change from baseline"
            shown = self._figures_rendered.get(
                key, lambda: views.distribution_figure(compared, change, classes, num_bins)
            )
        _show(self.figure_output, shown)
        caption = f"per class, {num_bins} bins: macro (per image, then averaged) and micro (pooled)"
        _show(self.table_output, _table_output(self.table, caption))

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

    # --- linked view: a histogram cell -> its images -> the image explorer ---

    @property
    def cell_run(self) -> RunDir | None:
        """The run whose histogram cells are listed: the first selected."""
        selected = self.selected
        return next(iter(selected.values())) if selected else None

    def _list_cells(self) -> None:
        run = self.cell_run
        options: list[tuple[str, tuple[str, int, int]]] = []
        if run is not None:
            n = self.num_bins.value
            for name in self.class_names if self.classes is None else self.classes:
                cells = views.histogram_cells(run, name, n)
                for k, j, count in cells.itertuples(index=False):
                    where = f"p {k / n:.2f}–{(k + 1) / n:.2f} → truth {j / n:.2f}–{(j + 1) / n:.2f}"
                    label = f"{name} · {where} · {count} image{'s' * (count != 1)}"
                    options.append((label, (name, int(j), int(k))))
        current = self.cell.value
        self._holding = True
        try:
            self.cell.options = options
            values = [v for _, v in options]
            self.cell.value = current if current in values else (values[0] if values else None)
        finally:
            self._holding = False
        self._cell_chosen()

    def _cell_chosen(self) -> None:
        if self._holding:
            return
        run, cell = self.cell_run, self.cell.value
        if run is None or cell is None:
            self.cell_images.options = []
            return
        name, truth_bin, confidence_bin = cell
        ids = views.cell_images(run, name, truth_bin, confidence_bin, self.num_bins.value)
        self.cell_images.options = ids
        self.cell_images.value = ids[0] if ids else None

    def open_in_image_explorer(self) -> None:
        """Show the chosen image, and the cell's class, in the linked image explorer."""
        explorer, image_id = self.image_explorer, self.cell_images.value
        if explorer is None or explorer.closed or image_id is None:
            return
        explorer.show_image(image_id, self.class_names.index(self.cell.value[0]))


def dataset_explorer(runs: RunsArgument) -> widgets.Box:
    """The displayable dataset explorer over ``runs`` (run directories or folders of runs).

    The box keeps its explorer alive; ``box.close()`` ends both.
    """
    explorer = DatasetExplorer(runs)
    explorer.widget._calibtut_explorer = explorer  # type: ignore[attr-defined]
    return explorer.widget


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
        # redrawn on release, not on every step of a drag (a redraw takes a few hundred ms, so
        # a drag would queue redraws and show the last one seconds late)
        self.value = widgets.FloatSlider(
            value=value,
            min=0.0,
            max=1.0,
            step=0.005,
            readout_format=".3f",
            description="p",
            continuous_update=False,
        )
        self.num_bins = widgets.IntSlider(
            value=num_bins, min=1, max=20, description="bins", continuous_update=False
        )
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
        self._controls = [self.value, self.num_bins, self.binning, self.target, self.summary,
                          self.output, *self.widget.children, self.widget]  # fmt: skip
        self._closer = weakref.finalize(self, _close, self._controls, [])
        for control in (self.value, self.num_bins, self.binning, self.target):
            control.observe(_weak(self, "update"), names="value")
        _tag_controls(self)
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close the widgets and the figure (also done when the playground is garbage-collected)."""
        if self.figure is not None:
            plt.close(self.figure)
            self.figure = None
        self._closer()

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
    """The displayable binning playground (the box keeps it alive; ``box.close()`` ends both)."""
    playground = BinningPlayground(value, num_bins, binning, target)
    playground.widget._calibtut_explorer = playground  # type: ignore[attr-defined]
    return playground.widget
