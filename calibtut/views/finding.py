"""Finding images: per-image values, rankings, histogram cells and the images behind them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from calibtut.metrics import (
    calibration_errors,
    dataset_reliability_histogram,
    noise_floor,
)
from calibtut.runs import RunDir, RunResults, image_means
from calibtut.views._runs import Runs, _class_positions, labelled


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
