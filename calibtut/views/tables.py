"""Tables of saved runs: per-class summaries, confidence directions, one image's metrics."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from calibtut.metrics import (
    REDUCTIONS,
    confidence_direction,
    dataset_reliability_histogram,
    macro_errors,
    micro_errors,
)
from calibtut.runs import RunDir
from calibtut.views._runs import Runs, _results
from calibtut.views.finding import image_values


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
