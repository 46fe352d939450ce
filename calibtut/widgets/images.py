"""The image explorer: one test image under several runs (metrics, reliability diagrams, overlays)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import pandas as pd
from matplotlib.figure import Figure

from calibtut import plots, views
from calibtut.widgets._common import (
    RunsArgument,
    _Explorer,
    _message,
    _number,
    _Rendered,
    _show,
    _table_html,
    _tag_controls,
    _weak,
)


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
