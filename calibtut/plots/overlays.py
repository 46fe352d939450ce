"""Image overlays: the image, ground truth, prediction, confidence and errors of one case.

They draw the compact arrays a run saves per test image (``RunDir.prediction``): class-index
maps for softmax datasets, one channel per region for sigmoid (multi-label) ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from calibtut.plots.style import (
    CLASS_COLOURS,
    COLOUR_BAR,
    COLOURS,
    SUPTITLE,
    TITLE,
    Canvas,
    canvas,
    check_class_names,
    figure_of,
    finish,
    styled,
)

__all__ = [
    "OVERLAY_KEYS",
    "overlay_layout",
    "slice_count",
    "busiest_slice",
    "image_overlay",
    "compare_image_overlays",
]

OVERLAY_KEYS = ("image", "label", "prediction", "confidence")
_LEGEND_COLUMNS = 6


def overlay_layout(arrays: Mapping[str, np.ndarray]) -> str:
    """``"softmax"`` (class-index maps) or ``"sigmoid"`` (one region per channel) saved arrays.

    Args:
        arrays: what ``RunDir.prediction`` returns (see ``RunDir.write_prediction``).

    Returns:
        ``"softmax"`` or ``"sigmoid"``.

    Raises:
        ValueError: keys are missing or the shapes do not fit either layout.

    Example:
        >>> import numpy as np
        >>> maps = {k: np.zeros((4, 4)) for k in OVERLAY_KEYS}
        >>> overlay_layout(maps)
        'softmax'
        >>> overlay_layout({**maps, **{k: np.zeros((3, 4, 4)) for k in OVERLAY_KEYS[1:]}})
        'sigmoid'
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
    """Number of slices along ``axis`` of a 3D image; 0 for a 2D image (nothing to slice).

    Args:
        arrays: saved overlay arrays (``RunDir.prediction``).
        axis: a spatial axis of the image, in [-3, 2].

    Returns:
        The number of slices (0 for a 2D image).

    Raises:
        ValueError: bad arrays (:func:`overlay_layout`) or a bad ``axis``.
    """
    overlay_layout(arrays)
    image = np.asarray(arrays["image"])
    return 0 if image.ndim == 2 else image.shape[_spatial_axis(axis)]


def slice_shape(arrays: Mapping[str, np.ndarray], axis: int = -1) -> tuple[int, int]:
    """The (rows, columns) of what an overlay panel shows: a 2D image, or a slice of a 3D one.

    Args:
        arrays: saved overlay arrays (``RunDir.prediction``).
        axis: the spatial axis a 3D image is sliced along, in [-3, 2].

    Returns:
        The shown panel's shape, the frame a crop ``region`` is given in.

    Raises:
        ValueError: bad arrays (:func:`overlay_layout`) or a bad ``axis``.
    """
    overlay_layout(arrays)
    shape = np.shape(arrays["image"])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    rows, columns = (int(n) for a, n in enumerate(shape) if a != _spatial_axis(axis))
    return rows, columns


def busiest_slice(arrays: Mapping[str, np.ndarray], axis: int = -1) -> int:
    """The slice along ``axis`` with the most ground-truth foreground (middle one if none).

    Args:
        arrays: saved overlay arrays of a 3D image (``RunDir.prediction``).
        axis: a spatial axis of the image, in [-3, 2].

    Returns:
        The slice's index along ``axis``.

    Raises:
        ValueError: bad arrays, a 2D image or a bad ``axis``.
    """
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
    *,
    region: tuple[int, int, int, int] | None = None,
    fig: Canvas | None = None,
) -> Figure:
    """Image, ground truth, prediction, confidence and errors of one case (one slice if 3D).

    ``arrays`` as ``RunDir.prediction`` returns them. Class-index maps (softmax; label 0 is the
    background) show each class in :data:`CLASS_COLOURS`, the confidence is the max probability
    and errors are false positives, false negatives and wrong classes. Per-channel regions
    (sigmoid, e.g. overlapping tumour regions) are filled largest first; confidence and errors are
    those of region ``channel``. A 3D image shows ``slice_index`` along ``axis`` (default: the
    slice with the most ground truth).

    Args:
        arrays: one case's saved overlay arrays (``RunDir.prediction``).
        class_names: the names of the output channels (softmax: background first).
        slice_index: the slice of a 3D image (None: the one with the most ground truth).
        axis: the spatial axis to slice along.
        channel: the region whose confidence and errors are shown (sigmoid layouts).
        title: a title above the panels.
        region: show only ``(row_start, row_stop, column_start, column_stop)`` of the slice
            (half-open, in :func:`slice_shape`'s frame): a zoom. The grey scale stays the whole
            slice's and the error count is that of the region shown.
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Raises:
        ValueError: bad arrays, slice, axis, channel or region.

    Example:
        >>> fig = image_overlay(run.prediction("case_017"), ["background", "organ"])  # doctest: +SKIP
    """
    return _overlay_grid(
        {"": arrays}, class_names, slice_index, axis, channel, title, fig, region=region
    )


@styled
def compare_image_overlays(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    slice_index: int | None = None,
    axis: int = -1,
    channel: int = 0,
    title: str | None = None,
    probability_title: str | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    fig: Canvas | None = None,
) -> Figure:
    """Overlays of one case under several runs, one row per run (see :func:`image_overlay`).

    Args:
        runs: ``{label: arrays}``, the case's saved overlay arrays under each run.
        class_names: the names of the output channels (the same in every run).
        slice_index: the slice of a 3D image (None: the one with the most ground truth).
        axis: the spatial axis to slice along.
        channel: the region whose confidence and errors are shown (sigmoid layouts).
        title: a title above the panels.
        probability_title: the title of the probability panel when ``confidence`` holds one
            class's probability map rather than the largest probability (e.g. ``"P(LV)"``).
        region: the part of the slice to show, a zoom (see :func:`image_overlay`).
        fig: a Figure or SubFigure to draw into (None: a new one).

    Returns:
        The figure.

    Raises:
        ValueError: ``runs`` is empty, or their arrays differ in layout or shape.

    Taught in notebooks/00_start_here, 03_training_with_calibration_losses and 04_acdc to
    07_brats (through calibtut.views).
    """
    return _overlay_grid(
        runs, class_names, slice_index, axis, channel, title, fig, probability_title, region
    )


def _overlay_grid(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    slice_index: int | None,
    axis: int,
    channel: int,
    title: str | None,
    fig: Canvas | None,
    probability_title: str | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> Figure:
    sigmoid, names = _check_overlays(runs, class_names, channel)
    first = next(iter(runs.values()))
    slice_index = _check_slice(first, slice_index, axis)
    crop = _check_region(region, slice_shape(first, axis))
    shown_classes = range(len(names)) if sigmoid else range(1, len(names))
    kinds = ("false positive", "false negative") + (() if sigmoid else ("wrong class",))
    legend_rows = -(-(len(shown_classes) + len(kinds)) // _LEGEND_COLUMNS)
    fig, axes, bar = _image_grid(len(runs), 5, bool(title), legend_rows, fig)
    for row, (label, arrays) in enumerate(runs.items()):
        shown = _slice(arrays, sigmoid, slice_index, axis)
        window = _grey_window(shown[0])  # the whole slice's, so a zoom keeps its grey levels
        shown = [values[..., crop[0], crop[1]] for values in shown]
        confidence_image = _draw_overlay_row(axes[row], shown, sigmoid, channel, label, window)
    where = "" if slice_index is None else f" (slice {slice_index})"
    region = f" of {names[channel]}" if sigmoid else ""
    confidence_title = f"P({names[channel]})" if sigmoid else "confidence (max probability)"
    confidence_title = probability_title or confidence_title
    titles = ["image" + where, "ground truth", "prediction", confidence_title, "errors" + region]
    for ax, text in zip(axes[0], titles, strict=True):
        ax.set_title(text)
    fig.colorbar(confidence_image, cax=fig.add_axes(bar), label="probability")
    n = len(CLASS_COLOURS)
    handles = [Patch(color=CLASS_COLOURS[c % n], alpha=0.6, label=names[c]) for c in shown_classes]
    handles += [Patch(color=COLOURS[k.replace(" ", "_")], label=k) for k in kinds]
    fig.legend(
        handles=handles, loc="lower center", ncols=min(len(handles), _LEGEND_COLUMNS), fontsize=11
    )
    finish(fig, title)
    return figure_of(fig)


def _check_overlays(
    runs: Mapping[str, Mapping[str, np.ndarray]], class_names: Sequence[str], channel: int
) -> tuple[bool, list[str]]:
    """Whether the runs' arrays are per-region (sigmoid), and the names of their channels."""
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {label: overlay arrays}.")
    layouts = {label: overlay_layout(arrays) for label, arrays in runs.items()}
    shapes = {label: np.shape(arrays["label"]) for label, arrays in runs.items()}
    if len(set(layouts.values())) != 1 or len(set(shapes.values())) != 1:
        raise ValueError(f"runs to compare need one layout and shape, got {layouts} / {shapes}.")
    sigmoid = next(iter(layouts.values())) == "sigmoid"
    first = next(iter(runs.values()))
    num_classes = np.shape(first["label"])[0] if sigmoid else len(class_names)
    names = check_class_names(class_names, num_classes)
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
    return sigmoid, names


def _grey_window(image: np.ndarray) -> tuple[float, float]:
    """The grey scale of an image panel: its 1st to 99th percentile."""
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1)


def _check_region(
    region: tuple[int, int, int, int] | None, shape: tuple[int, int]
) -> tuple[slice, slice]:
    """The rows and columns a panel shows: all, or a non-empty ``region`` inside ``shape``."""
    if region is None:
        return slice(None), slice(None)
    try:
        r0, r1, c0, c1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(
            f"region must be (row_start, row_stop, column_start, column_stop), got {region!r}."
        ) from None
    if not (0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]):
        raise ValueError(f"region {region!r} is empty or outside the {shape} slice.")
    return slice(r0, r1), slice(c0, c1)


def _draw_overlay_row(
    axes, shown: list[np.ndarray], sigmoid: bool, channel: int, label: str,
    window: tuple[float, float],
):  # fmt: skip
    """One run's image, truth, prediction, confidence and errors; returns the confidence image."""
    image, truth, predicted, confidence = shown
    grey = {"cmap": "gray", "vmin": window[0], "vmax": window[1]}
    image_ax, truth_ax, prediction_ax, confidence_ax, error_ax = axes
    for ax in (image_ax, truth_ax, prediction_ax, error_ax):
        ax.imshow(image, **grey)
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
        fontsize=11, ha="left", va="bottom", gid="error_count",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
    )  # fmt: skip
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if label:
        image_ax.set_ylabel(label)
    return confidence_image


def _image_grid(
    n_rows: int, n_columns: int, title: bool, legend_rows: int, fig: Canvas | None
) -> tuple[Canvas, np.ndarray, tuple[float, float, float, float]]:
    """Square image panels in inches, a colour bar box at the right and room below for a legend
    of ``legend_rows`` rows."""
    size, gap, left = 2.1, 0.08, 0.3
    bottom = 0.2 + 0.3 * legend_rows
    top = TITLE + (SUPTITLE if title else 0.0)
    width = left + n_columns * size + (n_columns - 1) * gap + COLOUR_BAR
    height = top + n_rows * size + (n_rows - 1) * gap + bottom
    fig = canvas(fig, width, height)
    axes = np.empty((n_rows, n_columns), dtype=object)
    for row in range(n_rows):
        y = height - top - (row + 1) * size - row * gap
        for column in range(n_columns):
            x = left + column * (size + gap)
            axes[row, column] = fig.add_axes((x / width, y / height, size / width, size / height))
    panels_height = n_rows * size + (n_rows - 1) * gap
    bar_x = width - COLOUR_BAR + 0.2
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
    n = len(CLASS_COLOURS)
    colours = np.array([mcolors.to_rgba(colour, alpha) for colour in CLASS_COLOURS])
    if not sigmoid:
        rgba = colours[labels.astype(np.int64) % n]
        rgba[labels == 0] = 0.0
        return rgba
    rgba = np.zeros((*labels.shape[1:], 4))
    for c in np.argsort([-(region > 0).sum() for region in labels], kind="stable"):
        rgba[labels[c] > 0] = colours[c % n]
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
