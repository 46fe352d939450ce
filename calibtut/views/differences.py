"""Differences from the baseline: per-bin gap changes, per-image distributions with outliers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from calibtut import plots
from calibtut.binning import bin_edges
from calibtut.metrics import (
    reliability,
)
from calibtut.plots.style import Canvas
from calibtut.views._runs import Runs, _class_positions, labelled, shared_classes
from calibtut.views.finding import RANKINGS, baseline_of, image_ranking


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
