"""What every explorer shares: rendering to output areas, tables, weak callbacks, closing, and the explorer base class."""

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
from matplotlib.figure import Figure

from calibtut import plots, views
from calibtut.runs import RunDir, resolve_runs

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
