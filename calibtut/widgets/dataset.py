"""The dataset explorer: dataset reliability histograms, linked to the images behind each cell."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import pandas as pd
from matplotlib.figure import Figure

from calibtut import plots, views
from calibtut.runs import RunDir
from calibtut.widgets._common import (
    DATASET_VIEWS,
    RunsArgument,
    _Explorer,
    _message,
    _Rendered,
    _show,
    _table_output,
    _tag_controls,
    _weak,
)
from calibtut.widgets.images import ImageExplorer


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
