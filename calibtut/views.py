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

import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.binning import hard_binning, soft_binning
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
from calibtut.runs import RunDir, RunResults, resolve_runs

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
    "floor_table",
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
        beside the ACE (at the saved number of bins only).

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
    if num_bins is None and all("ace_floor" in r.per_image for r in results.values()):
        floors = {label: _floor_row(r, image_id) for label, r in results.items()}
    return plots.compare_reliability_diagrams(
        prepared,
        names,
        image=0,
        classes=_class_positions(classes, names),
        title=image_id if title is None else title,
        floors=floors,
        fig=fig,
    )


def _floor_row(results: RunResults, image_id: str) -> torch.Tensor:
    """The image's ACE floors ``(1, classes)`` in the bins' class order."""
    rows = results.per_image[results.per_image["image_id"] == image_id]
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
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Image, truth, prediction, confidence and errors of one test image under each run.

    Class names come from the runs' ``config.json``, which must agree.

    Args:
        runs: the runs.
        image_id: the test image (None: the first, sorted, that every run saved).
        channel: the region shown for multi-label (sigmoid) datasets, e.g. KiTS's "tumor"
            (None: the first).
        slice_index: the slice of a 3D image (None: the one with the most foreground).
        axis: the axis to slice along.
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
    return plots.compare_image_overlays(
        arrays, class_names, slice_index, axis, index, image_id, fig=fig
    )


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


def image_metrics(runs: Runs, image_id: str, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """One test image's ``per_image.csv`` values under each run, for the shown classes.

    Args:
        runs: the runs.
        image_id: the test image.
        classes: class names to keep (None: all).

    Returns:
        One row per (run, class): Dice, ECE, ACE, MCE and the noise floors where saved.

    Example:
        >>> image_metrics(runs, "case_017", classes=["lesion"])   # doctest: +SKIP

    Taught in notebooks/08_exploring_reliability (the image explorer).
    """
    frames = []
    for label, r in _results(runs).items():
        table = r.per_image[r.per_image["image_id"] == image_id]
        if classes is not None:
            table = table[table["class_name"].isin(list(classes))]
        frames.append(table.assign(run=label))
    table = pd.concat(frames).set_index(["run", "class_name"])
    columns = [c for c in ("dice", "ece", "ace", "ace_floor", "mce", "mce_floor") if c in table]
    return table[columns]


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
