"""Run-aware figures and tables: run directories -> prepared data -> plots.

What notebooks and explorers call to show saved runs. Each function reads the runs' results
(:meth:`calibtut.runs.RunDir.results`, cached), asks :mod:`calibtut.metrics` to prepare them
(re-binning, reliability, histograms, macro and micro errors) and hands the result to
:mod:`calibtut.plots`. Runs are given as a mapping ``{label: RunDir}`` (a loss name as label
picks that loss's colour and legend), or as a list of runs, labelled by what differs between them.

Example:
    >>> from calibtut import views
    >>> from calibtut.runs import resolve_runs
    >>> runs = views.by_loss(resolve_runs("runs/demo/synthetic"))   # doctest: +SKIP
    >>> views.dataset_histograms(runs, classes=["lesion"])           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.binning import bin_edges, hard_binning, soft_binning
from calibtut.losses import l1_ace_gradient
from calibtut.methods import LOSSES
from calibtut.metrics import (
    REDUCTIONS,
    calibration_errors,
    confidence_direction,
    dataset_reliability,
    dataset_reliability_histogram,
    draw_floor_labels,
    macro_errors,
    micro_errors,
    noise_floor,
    reliability,
)
from calibtut.plots.style import Canvas
from calibtut.runs import RunDir, RunResults, image_means, resolve_runs

__all__ = [
    "Runs",
    "by_loss",
    "labelled",
    "shared_classes",
    "learning_curves",
    "dice_vs_ace",
    "reliability_diagrams",
    "dataset_histograms",
    "overlays",
    "paired_changes",
    "typical_image",
    "class_summary",
    "confidence_directions",
    "image_metrics",
    "image_values",
    "RANKINGS",
    "image_ranking",
    "baseline_of",
    "histogram_cells",
    "cell_images",
    "floor_table",
    "bin_gap_changes",
    "gap_change_figure",
    "ImageDistribution",
    "image_distribution",
    "distribution_figure",
    "BinningExample",
    "binning_example",
    "EXAMPLE_PROBS",
    "EXAMPLE_TARGETS",
]

Runs = Mapping[str, RunDir] | Iterable[RunDir | str]

EXAMPLE_PROBS = (0.05, 0.15, 0.3, 0.45, 0.55, 0.7, 0.85, 0.95)
EXAMPLE_TARGETS = (0, 0, 1, 0, 1, 0, 1, 1)
"""The binning playground's small example (one image, one class); the chosen value joins it."""


# --- runs and labels ---


def labelled(runs: Runs) -> dict[str, RunDir]:
    """``{label: RunDir}``: a mapping as given, or a list of runs (or paths to resolve) labelled
    by the dataset/loss/seed parts that differ between them.

    Runs of one dataset and seed are labelled by their loss, so they get the loss's colour and
    legend; where the parts cannot tell two runs apart, their paths label them.

    Args:
        runs: ``{label: RunDir}``, or runs, paths of runs or folders of runs
            (:func:`calibtut.runs.resolve_runs`).

    Returns:
        ``{label: RunDir}`` in the order given.

    Raises:
        ValueError: no runs, or a path that is not an evaluated run.
        FileNotFoundError: a path that is neither a run nor a folder of runs.

    Example:
        >>> list(labelled("runs/demo/synthetic"))                 # doctest: +SKIP
        ['baseline', 'hard', 'soft']
    """
    if isinstance(runs, Mapping):
        if not runs:
            raise ValueError("runs must not be empty.")
        return {str(label): _as_run(run) for label, run in runs.items()}
    found = resolve_runs(list(runs) if not isinstance(runs, RunDir | str) else runs)
    parts = [
        (str(c.get("dataset", "?")), str(c.get("loss", "?")), f"seed_{c.get('seed', '?')}")
        for c in (run.config for run in found)
    ]
    varying = [i for i in range(3) if len({p[i] for p in parts}) > 1] or [1]
    labels = ["/".join(p[i] for i in varying) for p in parts]
    if len(set(labels)) < len(labels):
        labels = [str(run.path) for run in found]
    return dict(zip(labels, found, strict=True))


def by_loss(runs: Iterable[RunDir], seed: int | None = None) -> dict[str, RunDir]:
    """The runs keyed by loss, in the methods' order (the lowest seed of each, or ``seed``).

    Args:
        runs: the runs to choose from.
        seed: take each loss's run of this seed (None: its lowest seed).

    Returns:
        ``{loss: RunDir}``, baseline first (:data:`calibtut.methods.LOSSES`).

    Example:
        >>> from calibtut.runs import find_runs
        >>> by_loss(find_runs("runs/demo"), seed=0)               # doctest: +SKIP
        {'baseline': RunDir('runs/demo/synthetic/baseline/seed_0'), ...}

    Taught in notebooks/08_exploring_reliability.
    """
    chosen: dict[str, RunDir] = {}
    for run in sorted(runs, key=lambda r: int(r.config.get("seed", 0))):
        config = run.config
        if seed is None or int(config.get("seed", -1)) == seed:
            chosen.setdefault(str(config["loss"]), run)
    order = [n for n in LOSSES if n in chosen] + [n for n in chosen if n not in LOSSES]
    return {loss: chosen[loss] for loss in order}


def _as_run(run: RunDir | str) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def _results(runs: Runs) -> dict[str, RunResults]:
    return {label: run.results() for label, run in labelled(runs).items()}


def shared_classes(results: Mapping[str, RunResults]) -> list[str]:
    """The scored classes of runs shown together; they must score the same ones.

    Args:
        results: ``{label: RunResults}`` of the runs.

    Returns:
        The class names, in the order of the bins' class axis.

    Raises:
        ValueError: the runs score different classes.
    """
    names = {label: tuple(r.class_names) for label, r in results.items()}
    if len(set(names.values())) != 1:
        raise ValueError(f"runs shown together must score the same classes, got {names}.")
    return list(next(iter(names.values())))


def _class_positions(classes: Sequence[str] | None, names: Sequence[str]) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [classes]
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(f"classes {unknown} are not among the scored classes {list(names)}.")
    return [list(names).index(c) for c in classes]


# --- figures ---


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


# --- tables ---


def typical_image(run: RunDir, metric: str = "ace") -> str:
    """The test image whose per-image ``metric`` (class mean) is the median of the run's: a
    typical image rather than a best or worst case.

    Args:
        run: an evaluated run.
        metric: a per-image metric (``per_image.csv`` column).

    Returns:
        The image's id.

    Raises:
        ValueError: no image has a value of ``metric``.

    Example:
        >>> typical_image(runs["baseline"], "ace")                # doctest: +SKIP
        'case_017'

    Taught in notebooks/03_training_with_calibration_losses.
    """
    values = run.results().image_means()[metric].dropna().sort_values()
    if values.empty:
        raise ValueError(f"{run.path} has no image with a {metric} value.")
    return str(values.index[len(values) // 2])


def class_summary(run: RunDir, num_bins: int | None = None) -> pd.DataFrame:
    """Per scored class: macro (per image, then averaged) and micro (pooled) ECE/ACE/MCE, and
    the mean Dice over the images that hold the class (``per_image.csv``).

    Args:
        run: an evaluated run.
        num_bins: re-bin the saved bins to this many (None: as saved).

    Returns:
        One row per scored class: ``macro_ece``, ``macro_ace``, ``macro_mce``, ``micro_ece``,
        ``micro_ace``, ``micro_mce`` and ``dice``.

    Example:
        >>> class_summary(runs["soft"], num_bins=10)              # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability (the dataset explorer).
    """
    results = run.results()
    bins = results.rebinned(num_bins)
    macro, micro = macro_errors(bins), micro_errors(bins)
    columns = {}
    for name in REDUCTIONS.values():
        columns[f"macro_{name}"] = getattr(macro, name).double().numpy()
    for name in REDUCTIONS.values():
        columns[f"micro_{name}"] = getattr(micro, name)[0].double().numpy()
    dice = results.per_image.groupby("class_index")["dice"].mean()
    columns["dice"] = dice.reindex(results.class_indices).to_numpy()
    return pd.DataFrame(columns, index=pd.Index(results.class_names, name="class"))


def confidence_directions(runs: Runs) -> pd.DataFrame:
    """Per run and class, the shares of its dataset histogram's counts that are overconfident,
    on the diagonal and underconfident (:func:`calibtut.metrics.confidence_direction`).

    Args:
        runs: the runs.

    Returns:
        One row per (run, class), the three shares as columns.

    Example:
        >>> confidence_directions(by_loss(find_runs("runs/demo")))   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability.
    """
    rows = {}
    for label, r in _results(runs).items():
        direction = confidence_direction(dataset_reliability_histogram(r.bins))
        for c, name in enumerate(r.class_names):
            rows[(label, name)] = {
                "overconfident": float(direction.overconfident[c]),
                "on the diagonal": float(direction.calibrated[c]),
                "underconfident": float(direction.underconfident[c]),
            }
    return pd.DataFrame(rows).T.rename_axis(["run", "class"])


def image_metrics(
    runs: Runs, image_id: str, classes: Sequence[str] | None = None, num_bins: int | None = None
) -> pd.DataFrame:
    """One test image's ``per_image.csv`` values under each run, for the shown classes.

    Args:
        runs: the runs.
        image_id: the test image.
        classes: class names to keep (None: all).
        num_bins: ECE/ACE/MCE and floors at this many bins, re-binned from the saved bins
            (None: as saved, :func:`image_values`).

    Returns:
        One row per (run, class): Dice, ECE, ACE, MCE and the noise floors where saved.

    Example:
        >>> image_metrics(runs, "case_017", classes=["lesion"])   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability (the image explorer).
    """
    frames = []
    for label, r in _results(runs).items():
        values = image_values(r, num_bins)
        table = values[values["image_id"] == image_id]
        if classes is not None:
            table = table[table["class_name"].isin(list(classes))]
        frames.append(table.assign(run=label))
    table = pd.concat(frames).set_index(["run", "class_name"])
    columns = [c for c in ("dice", "ece", "ace", "ace_floor", "mce", "mce_floor") if c in table]
    return table[columns]


def image_values(results: RunResults, num_bins: int | None = None) -> pd.DataFrame:
    """``per_image.csv`` with its calibration errors (and noise floors) at ``num_bins``.

    Re-binning merges neighbouring saved bins exactly (:meth:`RunResults.rebinned`), so the
    errors are what evaluation would have written at that number of bins; Dice is unchanged.

    Args:
        results: a run's results.
        num_bins: a divisor of the saved number of bins (None: the saved table itself).

    Returns:
        A table with ``per_image.csv``'s rows and columns.

    Raises:
        ValueError: ``num_bins`` does not divide the saved number of bins.
    """
    if num_bins is None or num_bins == results.bins.num_bins:
        return results.per_image
    bins = results.rebinned(num_bins)
    table = results.per_image.copy()
    image = table["image_id"].map({i: k for k, i in enumerate(results.image_ids)}).to_numpy()
    cls = table["class_index"].map({c: k for k, c in enumerate(results.class_indices)}).to_numpy()
    errors = calibration_errors(bins)
    for name in ("ece", "ace", "mce"):
        table[name] = getattr(errors, name).double().numpy()[image, cls]
    draws = results.rebinned_draws(num_bins)
    if draws is not None and "ace_floor" in table:
        floor = noise_floor(bins, draws)
        table["ace_floor"] = floor.ace.double().numpy()[image, cls]
        table["mce_floor"] = floor.mce.double().numpy()[image, cls]
    return table


RANKINGS: dict[str, tuple[str, bool] | None] = {
    "image id": None,
    "ACE": ("ace", False),
    "Dice": ("dice", False),
    "MCE": ("mce", False),
    "ECE": ("ece", False),
    "ACE noise floor": ("ace_floor", False),
    "ACE / noise floor": ("ace_over_floor", False),
    "ACE change from baseline": ("ace", True),
    "Dice change from baseline": ("dice", True),
    "MCE change from baseline": ("mce", True),
}
"""What images can be ranked by: ``{name: (metric, change from the baseline)}`` (None: the id)."""


def baseline_of(runs: Mapping[str, RunDir], run: str) -> str | None:
    """The label of the baseline run to compare ``run`` with: what every "change from the
    baseline" (rankings, gap changes, distributions) subtracts.

    Args:
        runs: ``{label: RunDir}`` to choose from.
        run: the label of the run to compare.

    Returns:
        A baseline of the same dataset and seed if there is one, else the first baseline (None:
        no baseline among ``runs``, or ``run`` is one).
    """
    configs = {label: r.config for label, r in runs.items()}
    if str(configs[run].get("loss")) == "baseline":
        return None
    baselines = [label for label, c in configs.items() if str(c.get("loss")) == "baseline"]
    same = [
        label
        for label in baselines
        if (configs[label].get("dataset"), configs[label].get("seed"))
        == (configs[run].get("dataset"), configs[run].get("seed"))
    ]
    return (same or baselines or [None])[0]


def image_ranking(
    runs: Runs,
    key: str = "ACE",
    classes: Sequence[str] | None = None,
    run: str | None = None,
    baseline: str | None = None,
    num_bins: int | None = None,
    descending: bool = True,
    within: tuple[float, float] | None = None,
) -> pd.Series:
    """The test images of ``run`` ranked by one of :data:`RANKINGS`, with the value of each.

    A value is the image's class mean (the paper's, :func:`calibtut.runs.image_means`: Dice over
    the classes present) over ``classes``; a change is ``run``'s value minus the baseline's on
    the same image (negative: lower under ``run``).

    Args:
        runs: the runs.
        key: a name of :data:`RANKINGS`.
        classes: the classes averaged (None: all scored classes).
        run: the label of the run ranked (None: the first).
        baseline: the label of the run a change is taken from (None: :func:`baseline_of`).
        num_bins: errors and floors re-binned to this many bins (:func:`image_values`).
        descending: largest first (NaN always last; ids: reverse alphabetical).
        within: keep only values in ``[low, high]`` (ids: ignored).

    Returns:
        The values (float, NaN where undefined), indexed by image id, in ranked order.

    Raises:
        ValueError: an unknown key or run, or a change without a baseline.

    Example:
        >>> image_ranking(runs, "ACE change from baseline", run="soft").head(3)   # doctest: +SKIP
    """
    chosen = labelled(runs)
    if key not in RANKINGS:
        raise ValueError(f"unknown ranking {key!r}; expected one of {list(RANKINGS)}.")
    run = next(iter(chosen)) if run is None else run
    if run not in chosen:
        raise ValueError(f"run {run!r} is not one of {list(chosen)}.")

    def values(label: str) -> pd.DataFrame:
        results = chosen[label].results()
        table = image_values(results, num_bins)
        if classes is not None:
            table = table[table["class_name"].isin(list(classes))]
        means = image_means(table).reindex(results.image_ids)
        if "ace_floor" in means:
            means["ace_over_floor"] = means["ace"] / means["ace_floor"]
        return means

    ranking = RANKINGS[key]
    ids = values(run).index
    if ranking is None:
        ordered = sorted(ids, reverse=descending)
        return pd.Series(float("nan"), index=pd.Index(ordered, name="image_id"), name=key)
    metric, change = ranking
    mine = values(run)
    if metric not in mine:
        raise ValueError(f"{chosen[run].path} saved no {metric} (evaluate it again for floors).")
    value = mine[metric]
    if change:
        baseline = baseline_of(chosen, run) if baseline is None else baseline
        if baseline is None or baseline == run:
            raise ValueError(f"{key}: choose a run other than a baseline, and a baseline run.")
        value = value - values(baseline)[metric].reindex(value.index)
    if within is not None:
        value = value[value.between(*within) | value.isna()]
    return value.sort_values(ascending=not descending, na_position="last").rename(key)


def histogram_cells(run: RunDir, class_name: str, num_bins: int | None = None) -> pd.DataFrame:
    """The occupied cells of a run's dataset reliability histogram of one class, fullest first.

    Args:
        run: an evaluated run.
        class_name: a scored class.
        num_bins: re-bin the saved bins to this many first.

    Returns:
        One row per occupied cell: ``confidence_bin``, ``truth_bin`` (the histogram's x and y
        bins) and ``images`` (its count: one per image that puts a bin there).
    """
    results = run.results()
    (c,) = _class_positions([class_name], results.class_names)
    matrix = dataset_reliability_histogram(results.rebinned(num_bins))[c]
    truth, confidence = torch.nonzero(matrix, as_tuple=True)
    cells = pd.DataFrame(
        {
            "confidence_bin": confidence.numpy(),
            "truth_bin": truth.numpy(),
            "images": matrix[truth, confidence].numpy(),
        }
    )
    return cells.sort_values(
        ["images", "confidence_bin", "truth_bin"], ascending=[False, True, True]
    ).reset_index(drop=True)


def cell_images(
    run: RunDir, class_name: str, truth_bin: int, confidence_bin: int, num_bins: int | None = None
) -> list[str]:
    """The test images that put a count in one cell of a run's dataset reliability histogram:
    those whose confidence bin ``confidence_bin`` is occupied and has its mean ground truth in
    ``truth_bin`` (:func:`calibtut.metrics.dataset_reliability_histogram` of each image alone).

    Args:
        run: an evaluated run.
        class_name: a scored class.
        truth_bin, confidence_bin: the cell (y and x bins of the histogram).
        num_bins: re-bin the saved bins to this many first.

    Returns:
        The images' ids, in the run's order.
    """
    results = run.results()
    (c,) = _class_positions([class_name], results.class_names)
    bins = results.rebinned(num_bins)
    return [
        image_id
        for b, image_id in enumerate(results.image_ids)
        if dataset_reliability_histogram(bins.select(slice(b, b + 1)))[c, truth_bin, confidence_bin]
    ]


# --- differences from the baseline ---


def bin_gap_changes(
    runs: Runs,
    image_id: str | None = None,
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
) -> pd.DataFrame:
    """Per confidence bin, how much each loss changed the calibration gap of its baseline: where
    on the probability axis a loss helped, and where it hurt, which one ACE number hides.

    The gap of a bin is ``|mean prediction - mean ground truth|`` (what a reliability diagram
    shades). For one image it is that image's; for the dataset (``image_id=None``) the gaps are
    paired image by image and averaged over the images whose bin is occupied under both runs,
    so ``change`` is the mean per-image change (the macro view, as the paper's ACE).

    Args:
        runs: the runs; each one that is not a baseline is compared with its baseline among them
            (:func:`baseline_of`), a baseline run itself gets no rows.
        image_id: one test image (None: every image both runs scored).
        classes: class names (None: all scored classes).
        num_bins: re-bin the saved bins to this many first.

    Returns:
        One row per (run, class, bin): ``run``, ``baseline``, ``class``, ``bin``, ``low``/``high``
        (its edges, the last drawn at 1), ``gap`` and ``baseline_gap`` (NaN where no paired image
        has the bin), ``change`` (``gap - baseline_gap``: negative where the loss lowered it),
        ``images`` (the paired images) and ``count``/``baseline_count`` (each run's voxels in
        the bin over the images compared: a bin with voxels in one run only has no change).

    Raises:
        ValueError: no run with a baseline among ``runs``, an unknown class or image.

    Example:
        >>> bin_gap_changes(runs, "case_017", classes=["ring"])   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability.
    """
    chosen = labelled(runs)
    results = {label: run.results() for label, run in chosen.items()}
    names = shared_classes(results)
    positions = _class_positions(classes, names) or list(range(len(names)))
    pairs = [(label, baseline_of(chosen, label)) for label in chosen]
    pairs = [(label, base) for label, base in pairs if base is not None]
    if not pairs:
        raise ValueError(
            f"no run of {list(chosen)} has a baseline among them: give a baseline run and a run "
            "of another loss."
        )
    rows = []
    for label, base in pairs:
        mine, theirs = results[label], results[base]
        ids = [image_id] if image_id is not None else [
            i for i in mine.image_ids if i in set(theirs.image_ids)
        ]  # fmt: skip
        bins = {
            key: r.rebinned(num_bins).select(torch.tensor([r.image(i) for i in ids]))
            for key, r in (("run", mine), ("base", theirs))
        }
        gap = {key: reliability(b).gap.double() for key, b in bins.items()}
        paired = bins["run"].occupied & bins["base"].occupied  # (images, classes, bins)
        images = paired.sum(0)
        mean = {
            key: torch.where(paired, g, 0.0).sum(0) / images.clamp(min=1) for key, g in gap.items()
        }
        count = {key: b.count.double().sum(0) for key, b in bins.items()}
        edges = torch.clamp(bin_edges(paired.shape[-1]).double(), max=1.0)
        for c in positions:
            for k in range(paired.shape[-1]):
                has = bool(images[c, k])
                run_gap = float(mean["run"][c, k]) if has else float("nan")
                base_gap = float(mean["base"][c, k]) if has else float("nan")
                rows.append({
                    "run": label, "baseline": base, "class": names[c], "bin": k,
                    "low": float(edges[k]), "high": float(edges[k + 1]), "gap": run_gap,
                    "baseline_gap": base_gap, "change": run_gap - base_gap,
                    "images": int(images[c, k]), "count": float(count["run"][c, k]),
                    "baseline_count": float(count["base"][c, k]),
                })  # fmt: skip
    return pd.DataFrame(rows)


def gap_change_figure(
    runs: Runs,
    image_id: str | None = None,
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
    title: str | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Bars of :func:`bin_gap_changes`: a row per loss, a panel per class.

    Args:
        runs, image_id, classes, num_bins: as :func:`bin_gap_changes`.
        title: a title (None: says what is compared, on which image or the dataset).
        fig: a Figure or SubFigure to draw into.

    Returns:
        The figure (:func:`calibtut.plots.plot_gap_changes`).

    Example:
        >>> gap_change_figure(by_loss(find_runs("runs/demo")))      # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability (and the explorers' "gap change" views).
    """
    changes = bin_gap_changes(runs, image_id, classes, num_bins)
    if title is None:
        where = f"image {image_id}" if image_id is not None else "mean over the test images"
        title = f"gap change per bin from the baseline, {where}"
    return plots.plot_gap_changes(changes, title=title, dataset=image_id is None, fig=fig)


@dataclass(frozen=True)
class ImageDistribution:
    """Per run, the per-image values of one ranking (:data:`RANKINGS`), their box-plot summary
    and the outliers: what :func:`calibtut.plots.plot_image_distribution` draws.

    Args:
        key: the ranking (e.g. ``"ACE"`` or ``"ACE change from baseline"``).
        values: one row per (run, image): ``run``, ``image_id``, ``value`` (NaN left out) and
            ``outlier``.
        summary: one row per run (index ``run``): ``q1``, ``median``, ``q3``, ``whislo``,
            ``whishi`` (the most extreme values within ``whisker`` IQRs of the quartiles),
            ``low_fence``/``high_fence`` (the bounds beyond which an image is an outlier) and
            ``images``.
        whisker: the fences' distance from the quartiles, in IQRs (Tukey's 1.5).
    """

    key: str
    values: pd.DataFrame
    summary: pd.DataFrame
    whisker: float

    @property
    def outliers(self) -> pd.DataFrame:
        """The outlying images, largest values first."""
        return self.values[self.values["outlier"]].sort_values("value", ascending=False)


def image_distribution(
    runs: Runs,
    key: str = "ACE",
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
    whisker: float = 1.5,
) -> ImageDistribution:
    """The distribution over test images of a per-image value (by default the class-mean ACE;
    ``"ACE change from baseline"`` for a loss's effect), with Tukey's outliers: the few images a
    mean is most sensitive to, and the ones worth opening in the image explorer.

    Args:
        runs: the runs (for a change, each run that is not a baseline, against its baseline).
        key: a name of :data:`RANKINGS` other than the image id.
        classes: the classes averaged (None: all scored classes).
        num_bins: re-bin the saved bins to this many first.
        whisker: an image is an outlier beyond ``whisker`` IQRs from the quartiles.

    Returns:
        :class:`ImageDistribution` (quartiles by linear interpolation, as ``numpy.percentile``).

    Raises:
        ValueError: an unknown or id key, a change without a baseline, a run with no value.

    Example:
        >>> image_distribution(runs, "ACE change from baseline").outliers   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability.
    """
    if RANKINGS.get(key, "missing") in ("missing", None):
        keys = [k for k, v in RANKINGS.items() if v is not None]
        raise ValueError(f"key must be one of {keys}, got {key!r}.")
    chosen = labelled(runs)
    change = RANKINGS[key][1]
    labels = [label for label in chosen if not change or baseline_of(chosen, label) is not None]
    if not labels:
        raise ValueError(f"{key}: no run of {list(chosen)} has a baseline among them.")
    frames, summary = [], {}
    for label in labels:
        values = image_ranking(chosen, key, classes, label, num_bins=num_bins).dropna()
        if values.empty:
            raise ValueError(f"run {label!r} has no image with a value of {key}.")
        q1, median, q3 = np.percentile(values.to_numpy(), [25, 50, 75])
        low, high = q1 - whisker * (q3 - q1), q3 + whisker * (q3 - q1)
        inside = values[(values >= low) & (values <= high)]
        summary[label] = {
            "q1": q1, "median": median, "q3": q3, "whislo": float(inside.min()),
            "whishi": float(inside.max()), "low_fence": low, "high_fence": high,
            "images": len(values),
        }  # fmt: skip
        frames.append(
            pd.DataFrame(
                {
                    "run": label,
                    "image_id": values.index,
                    "value": values.to_numpy(),
                    "outlier": ((values < low) | (values > high)).to_numpy(),
                }
            )  # fmt: skip
        )
    table = pd.DataFrame(summary).T.rename_axis("run")
    table["images"] = table["images"].astype(int)
    return ImageDistribution(key, pd.concat(frames, ignore_index=True), table, whisker)


def distribution_figure(
    runs: Runs,
    key: str = "ACE",
    classes: Sequence[str] | None = None,
    num_bins: int | None = None,
    whisker: float = 1.5,
    title: str | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Box plots of :func:`image_distribution`, every image a dot, outliers ringed and named.

    Args:
        runs, key, classes, num_bins, whisker: as :func:`image_distribution`.
        title: a title (None: the key, the classes and the bins).
        ax: an Axes to draw into.

    Returns:
        The figure (:func:`calibtut.plots.plot_image_distribution`).

    Example:
        >>> distribution_figure(runs, "ACE change from baseline")   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability (and the dataset explorer).
    """
    distribution = image_distribution(runs, key, classes, num_bins, whisker)
    shown = "all classes" if classes is None else ", ".join(classes)
    if title is None:
        title = f"per-image {key} ({shown})"
    change = RANKINGS[key][1]
    return plots.plot_image_distribution(
        distribution.values, distribution.summary, ylabel=key, title=title,
        reference=0.0 if change else None, ax=ax,
    )  # fmt: skip


# --- the binning playground ---


@dataclass(frozen=True)
class BinningExample:
    """Where one probability is binned, and the mL1-ACE and its gradient on a small example.

    Args:
        weights: the value's share of each bin ``(num_bins,)`` (one 1 for hard bins).
        probs: the example's probabilities, the value last.
        targets: their targets.
        loss: the example's mL1-ACE.
        gradient: ``d loss / d probs``.
        figure: :func:`calibtut.plots.binning_figure` of all of it.
    """

    weights: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor
    loss: float
    gradient: torch.Tensor
    figure: Figure


def floor_table(
    probs: torch.Tensor,
    target: torch.Tensor,
    class_names: Sequence[str],
    num_bins: int = 20,
    draws: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """How much of one image's ACE a perfectly calibrated model would show too: per class the
    ACE, its noise floor (:func:`calibtut.metrics.noise_floor`), their ratio and the voxels of a
    typical middle bin (the fewer, the higher the floor).

    Args:
        probs: one image's probabilities ``(1, C, *spatial)``.
        target: its one-hot labels, the same shape.
        class_names: the ``C`` classes.
        num_bins: equal-width bins.
        draws: label draws behind the floor (its standard error is printed in the table).
        seed: seeds the draws.

    Returns:
        One row per class: ``ACE``, ``floor``, ``floor se``, ``ACE / floor`` and ``voxels per
        middle bin`` (the median count of the occupied bins between the first and the last).

    Example:
        >>> from calibtut.data import toy_segmentation
        >>> toy = toy_segmentation()
        >>> table = floor_table(toy.probs, toy.target, toy.class_names)
        >>> bool((table["ACE"] > table["floor"]).all())
        True

    Taught in notebooks/01_what_is_calibration.
    """
    bins = hard_binning(probs, target, num_bins)
    generator = torch.Generator().manual_seed(seed)
    floor = noise_floor(bins, draw_floor_labels(probs, num_bins, draws, generator=generator))
    ace = calibration_errors(bins).ace[0].double()
    middle = bins.count[0, :, 1:-1].double()
    counts = [row[row > 0].median().item() if (row > 0).any() else 0.0 for row in middle]
    return pd.DataFrame(
        {
            "ACE": ace.numpy(),
            "floor": floor.ace[0].double().numpy(),
            "floor se": floor.ace_se[0].double().numpy(),
            "ACE / floor": (ace / floor.ace[0].double()).numpy(),
            "voxels per middle bin": counts,
        },
        index=pd.Index(list(class_names), name="class"),
    )


def binning_example(
    value: float, num_bins: int = 5, binning: str = "soft", target: int = 1
) -> BinningExample:
    """Bin ``value`` (with its ``target``) alone, and evaluate the loss on the example with it.

    What the binning playground shows: the example is :data:`EXAMPLE_PROBS` /
    :data:`EXAMPLE_TARGETS` plus the value; the figure is :func:`calibtut.plots.binning_figure`.

    Args:
        value: the probability to bin, in [0, 1].
        num_bins: the number of bins.
        binning: ``"soft"`` or ``"hard"``.
        target: the value's target (0 or 1).

    Returns:
        :class:`BinningExample`.

    Example:
        >>> example = binning_example(0.5, num_bins=2, binning="soft")   # doctest: +SKIP
        >>> example.weights                                              # doctest: +SKIP
        tensor([0.5000, 0.5000], dtype=torch.float64)

    Taught in notebooks/02_hard_and_soft_binning.
    """
    probs = torch.tensor([*EXAMPLE_PROBS, value], dtype=torch.float64).view(1, 1, -1)
    targets = torch.tensor([*EXAMPLE_TARGETS, target], dtype=torch.float64).view(1, 1, -1)
    bin_values = soft_binning if binning == "soft" else hard_binning
    weights = bin_values(probs[..., -1:], targets[..., -1:], num_bins).count[0, 0]
    loss, gradient = l1_ace_gradient(probs, targets, binning, num_bins)
    figure = plots.binning_figure(
        value, weights, probs[0, 0], targets[0, 0], gradient[0, 0], loss, binning,
        highlight=len(EXAMPLE_PROBS),
    )  # fmt: skip
    return BinningExample(weights, probs[0, 0], targets[0, 0], loss, gradient[0, 0], figure)
