"""Figures of saved runs: learning curves, trade-off, reliability diagrams, histograms, overlays."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.metrics import (
    dataset_reliability,
    reliability,
)
from calibtut.plots.style import Canvas
from calibtut.runs import RunResults
from calibtut.views._runs import Runs, _class_positions, _results, labelled, shared_classes
from calibtut.views.finding import image_values


def learning_curves(
    runs: Runs,
    metrics: Sequence[str] = ("train_loss", "val_dice", "val_ace"),
    *,
    fig: Canvas | None = None,
) -> Figure:
    """The runs' ``history.csv`` columns ``metrics`` against the epoch (validation epochs only).

    Args:
        runs: the runs (a mapping ``{label: RunDir}`` or runs to label).
        metrics: ``history.csv`` columns, one panel each.
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure (:func:`calibtut.plots.plot_learning_curves`).

    Example:
        >>> learning_curves(runs, ("train_loss", "val_ace"))      # doctest: +SKIP

    Taught in notebooks/03_training_with_calibration_losses and 04_acdc to 07_brats.
    """
    histories = {label: run.history() for label, run in labelled(runs).items()}
    return plots.plot_learning_curves(histories, metrics, fig=fig)


def dice_vs_ace(runs: Runs, *, ax: Axes | None = None) -> Figure:
    """Per test image, Dice against ACE (the paper's class means), one colour per run.

    Args:
        runs: the runs.
        ax: an Axes to draw into.

    Returns:
        The figure (:func:`calibtut.plots.plot_dice_vs_ace`).

    Example:
        >>> dice_vs_ace(runs)                                     # doctest: +SKIP

    Taught in notebooks/03_training_with_calibration_losses.
    """
    means = {label: r.image_means() for label, r in _results(runs).items()}
    return plots.plot_dice_vs_ace(means, ax=ax)


def reliability_diagrams(
    runs: Runs,
    image_id: str,
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
    title: str | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """The reliability diagrams of test image ``image_id`` under each run (a row per run).

    Args:
        runs: the runs (they must score the same classes).
        image_id: the test image.
        classes: class names to show (None: all scored classes).
        num_bins: re-bin the saved bins to this many (a divisor of the saved number).
        title: a title (None: the image id).
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure; where the runs saved noise floors (``ace_floor``), each panel prints the floor
        beside the ACE (re-binned with the bins: :func:`image_values`).

    Raises:
        ValueError: the runs score different classes, an unknown class or image, or a
            ``num_bins`` that does not divide the saved number.

    Example:
        >>> reliability_diagrams(runs, typical_image(runs["baseline"]))   # doctest: +SKIP

    Taught in notebooks/00_start_here, 03_training_with_calibration_losses and
    08_exploring_reliability (the image explorer).
    """
    results = _results(runs)
    names = shared_classes(results)
    prepared = {
        label: reliability(r.rebinned(num_bins).select(r.image(image_id)))
        for label, r in results.items()
    }
    floors = None
    if all("ace_floor" in r.per_image for r in results.values()):
        floors = {label: _floor_row(r, image_id, num_bins) for label, r in results.items()}
    return plots.compare_reliability_diagrams(
        prepared,
        names,
        image=0,
        classes=_class_positions(classes, names),
        title=image_id if title is None else title,
        floors=floors,
        fig=fig,
    )


def _floor_row(results: RunResults, image_id: str, num_bins: int | None = None) -> torch.Tensor:
    """The image's ACE floors ``(1, classes)`` in the bins' class order (at ``num_bins``)."""
    table = image_values(results, num_bins)
    rows = table[table["image_id"] == image_id]
    by_channel = rows.set_index("class_index")["ace_floor"]
    return torch.tensor([[float(by_channel[c]) for c in results.class_indices]])


def dataset_histograms(
    runs: Runs,
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
    norm: str = "log",
    include_average: bool = True,
    title: str | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """The runs' dataset reliability histograms, one row per run, sharing one colour scale.

    Args:
        runs: the runs (they must score the same classes).
        classes: class names of the panels (None: every scored class).
        num_bins: re-bin the saved bins to this many (a divisor of the saved number).
        norm: the colour scale, ``"log"``, ``"power"`` or ``"linear"``.
        include_average: add the panel averaged over the classes.
        title: a title.
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure (:func:`calibtut.plots.compare_dataset_reliability_histograms`).

    Raises:
        ValueError: the runs score different classes, an unknown class, or a ``num_bins`` that
            does not divide the saved number.

    Example:
        >>> dataset_histograms(runs, classes=["lesion"], num_bins=10)   # doctest: +SKIP

    Taught in notebooks/03_training_with_calibration_losses, 04_acdc to 07_brats and
    08_exploring_reliability (the dataset explorer).
    """
    results = _results(runs)
    names = shared_classes(results)
    prepared = {label: dataset_reliability(r.rebinned(num_bins)) for label, r in results.items()}
    return plots.compare_dataset_reliability_histograms(
        prepared,
        names,
        classes=_class_positions(classes, names),
        norm=norm,
        include_average=include_average,
        title=title,
        fig=fig,
    )


def overlays(
    runs: Runs,
    image_id: str | None = None,
    channel: str | None = None,
    slice_index: int | None = None,
    axis: int = -1,
    region: tuple[int, int, int, int] | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Image, truth, prediction, confidence and errors of one test image under each run.

    Class names come from the runs' ``config.json``, which must agree.

    Args:
        runs: the runs.
        image_id: the test image (None: the first, sorted, that every run saved).
        channel: the class whose probability map is shown: for multi-label (sigmoid) datasets
            the region, e.g. KiTS's "tumor" (None: the first); for softmax datasets its softmax
            channel where the run saved every channel's probability (None: the confidence, the
            largest probability).
        slice_index: the slice of a 3D image (None: the one with the most foreground).
        axis: the axis to slice along.
        region: zoom on ``(row_start, row_stop, column_start, column_stop)`` of the slice
            (half-open, in the frame of :func:`calibtut.plots.slice_shape`; None: all of it);
            the title says which part is shown.
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure (:func:`calibtut.plots.compare_image_overlays`).

    Raises:
        ValueError: the runs name different classes, share no saved prediction, or ``channel``
            is not one of the classes.

    Example:
        >>> overlays(runs, channel="tumor")                      # doctest: +SKIP

    Taught in notebooks/00_start_here, 03_training_with_calibration_losses, 04_acdc to
    07_brats and 08_exploring_reliability (the image explorer).
    """
    chosen = labelled(runs)
    names = {label: run.config.get("class_names") for label, run in chosen.items()}
    class_names = next(iter(names.values()))
    if class_names is None or any(other != class_names for other in names.values()):
        raise ValueError(f"runs to compare must name the same classes in config.json, got {names}.")
    if image_id is None:
        shared = set.intersection(*(set(run.prediction_ids()) for run in chosen.values()))
        if not shared:
            raise ValueError(
                f"no test image has a saved prediction in every run of {list(chosen)} "
                "(predictions/ under each run directory)."
            )
        image_id = min(shared)
    index = 0
    if channel is not None:
        if channel not in class_names:
            raise ValueError(f"channel: {channel!r} is not one of the classes {class_names}.")
        index = class_names.index(channel)
    arrays = {label: run.prediction(image_id) for label, run in chosen.items()}
    first = next(iter(arrays.values()))
    probability_title = None
    if channel is not None and plots.overlay_layout(first) == "softmax":
        if all("probabilities" in a for a in arrays.values()):
            arrays = {k: {**a, "confidence": a["probabilities"][index]} for k, a in arrays.items()}
            probability_title = f"P({channel})"
    title = image_id
    if region is not None:
        rows, columns = plots.slice_shape(first, axis)
        r0, r1, c0, c1 = region
        if (r0, r1, c0, c1) != (0, rows, 0, columns):
            title = f"{image_id} · zoom: rows {r0}–{r1 - 1}, columns {c0}–{c1 - 1}"
    return plots.compare_image_overlays(
        arrays, class_names, slice_index, axis, index, title,
        probability_title=probability_title, region=region, fig=fig,
    )  # fmt: skip


def paired_changes(
    runs: Runs, metrics: Sequence[str] = ("ace", "mce", "dice"), *, fig: Canvas | None = None
) -> Figure:
    """Each test image's baseline value against its value under the other losses (same seed).

    Args:
        runs: the runs, a baseline among them.
        metrics: per-image metrics, one panel each.
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure (:func:`calibtut.plots.plot_paired_changes`).

    Example:
        >>> paired_changes(runs, ("ace", "dice"))                 # doctest: +SKIP
    """
    from calibtut.paper import percentage_changes, runs_frame

    pairs = percentage_changes(runs_frame(list(labelled(runs).values())))
    return plots.plot_paired_changes(pairs, metrics, fig=fig)
