"""The comparison report of run directories: one table (Markdown and CSV) and its figures.

For each dataset, method and *scope* (each scored class, ``macro`` over classes, ``micro`` from
the bins pooled over the test set) it gives Dice, ECE, ACE and MCE, and the Brier score, NLL and
equal-mass ECE where the runs saved them (mean over test images, pooled over seeds, with its 95 %
bootstrap confidence interval over images) and, for every method but the baseline, the per-image
percentage change against the Dice+CE baseline of the same seed (mean ± std, and its 95 % CI) with
two p-values: the two-sided paired t-test, the paper's test (``p_value``), and the Wilcoxon
signed-rank test beside it as a robustness check (``p_wilcoxon``).

Runs evaluated before calibtut saved the Brier score, NLL and equal-mass ECE lack them: a method
one of whose runs lacks a score has no value for it (the Markdown says "n/a"), never a mean over
the runs that happen to have it.

The statistics are :mod:`calibtut.paper`'s (``percentage_changes`` and
``summarize_percentage_changes``, the paper's main-table method), applied to one frame per scope:
``macro`` is :func:`calibtut.paper.runs_frame` itself (the paper's per-image convention); per class
and micro, :func:`scope_frame` builds the same frame from ``per_image.csv`` and ``bins.npz``, with
the scope in the frame's ``source`` column and the paper's metric labels. Micro errors are one
value per run, so their change is over seeds and carries no test. Runs trained on a phantom
(``"phantom": true`` in their config) are a pipeline check: their dataset's numbers are shown,
without p-values (``phantom`` column; the Markdown says so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from calibtut import plots, views
from calibtut.methods import COMPARED_LOSSES, ordered
from calibtut.metrics import METRIC_TITLES, micro_errors, noise_floor
from calibtut.paper import (
    FRAME_COLUMNS,
    percentage_changes,
    runs_frame,
    summarize_percentage_changes,
)
from calibtut.runs import (
    FLOOR_COLUMNS,
    IMAGE_METRICS,
    SCORE_COLUMNS,
    RunDir,
    atomic_write,
    check_writable_folder,
    resolve_runs,
)

__all__ = [
    "REPORT_COLUMNS",
    "scope_frame",
    "report_table",
    "report_markdown",
    "seed_table",
    "seed_markdown",
    "headline",
    "write_report",
    "bootstrap_ci",
    "ci_table",
    "ci_markdown",
    "CI_METRICS",
]

METRICS = IMAGE_METRICS
REPORT_COLUMNS = (
    "dataset",
    "scope",
    "metric",
    "loss",
    "value",
    "ci_low",
    "ci_high",
    "pct_change",
    "pct_std",
    "pct_low",
    "pct_high",
    "n",
    "p_value",
    "p_wilcoxon",
    "phantom",
)
PHANTOM_NOTE = "phantom data: a pipeline check, no statistics"
"""What the Markdown says under a dataset whose runs were trained on a phantom."""
MACRO, MICRO = "macro", "micro"
COMPARED_METRICS = (*METRICS, *SCORE_COLUMNS)
"""The metrics compared with the baseline (Δ% and p-values); the noise floors are not."""
NOT_AVAILABLE = "n/a"
"""What the Markdown shows for a score a run was evaluated without."""
NOT_AVAILABLE_NOTE = (
    f"{NOT_AVAILABLE}: not in these runs' results (evaluated before calibtut saved the Brier "
    "score, NLL and equal-mass ECE); `calibtut evaluate RUN` again adds them."
)


def _metrics(runs: Sequence[RunDir]) -> list[str]:
    """The per-image metrics of the report: Dice, ECE, ACE, MCE, the noise floors when all runs
    were evaluated with them, and each score (:data:`~calibtut.runs.SCORE_COLUMNS`) any run has."""
    columns = [set(run.results().per_image) for run in runs]
    floors = all(set(FLOOR_COLUMNS) <= c for c in columns)
    scores = [m for m in SCORE_COLUMNS if any(m in c for c in columns)]
    return [*METRICS, *(FLOOR_COLUMNS if floors else ()), *scores]


def _without_partial_scores(frame: pd.DataFrame, runs: Sequence[RunDir]) -> pd.DataFrame:
    """``frame`` without a score of a dataset's method one of whose runs lacks it: a mean over
    the seeds that happen to have it would claim a value the method does not have."""
    lacking = {
        (run.config["dataset"], run.config["loss"], metric)
        for run in runs
        for metric in SCORE_COLUMNS
        if metric not in run.results().per_image
    }
    if not lacking:
        return frame
    keys = pd.MultiIndex.from_frame(frame[["dataset", "loss", "metric"]])
    return frame[~keys.isin(list(lacking))].reset_index(drop=True)


def scope_frame(runs: Sequence[RunDir]) -> pd.DataFrame:
    """Per-image values of every run in :mod:`calibtut.paper`'s frame layout, one source per scope.

    Sources: each scored class (the image's value for that class), ``macro`` (the paper's
    per-image class mean, :func:`calibtut.paper.runs_frame`) and ``micro`` (per run one value, the
    class mean of the errors of the pooled bins, under image id ``"pooled"``). Metrics: Dice,
    ECE, ACE, MCE, where every run has them the noise floors ``ace_floor``/``mce_floor``
    (micro: the floor of the pooled bins, from the pooled label draws), and the Brier score, NLL
    and equal-mass ECE (per-image scopes only) of the methods all of whose runs saved them.
    """
    metrics = _metrics(runs)
    parts = []
    for run in runs:
        config = run.config
        keys = {"dataset": config["dataset"], "loss": config["loss"], "seed": int(config["seed"])}
        results = run.results()
        per_image = results.per_image
        clash = set(per_image["class_name"]) & {MACRO, MICRO}
        if clash:
            raise ValueError(f"{run.per_image_path}: a class may not be named {sorted(clash)}")
        available = [m for m in metrics if m in per_image]
        parts.append(runs_frame([run], source=MACRO, metrics=available))
        long = per_image.melt(
            id_vars=["image_id", "class_name"], value_vars=available, var_name="metric"
        )
        parts.append(
            pd.DataFrame(
                {
                    "source": long["class_name"],
                    **keys,
                    "image_id": long["image_id"],
                    "metric": long["metric"],
                    "value": long["value"].astype(float),
                }
            )
        )
        micro = {name: getattr(micro_errors(results.bins), name) for name in ("ece", "ace", "mce")}
        if "ace_floor" in metrics and results.draws is not None:
            floor = noise_floor(results.bins.pooled(), results.draws.pooled())
            micro.update(ace_floor=floor.ace, mce_floor=floor.mce)
        parts.append(
            pd.DataFrame(
                [
                    {
                        "source": MICRO,
                        **keys,
                        "image_id": "pooled",
                        "metric": name,
                        "value": float(np.nanmean(values[0].double().numpy())),
                    }
                    for name, values in micro.items()
                ]
            )
        )
    frame = pd.concat(parts, ignore_index=True)[list(FRAME_COLUMNS)]
    # the macro rows first, as runs_frame of all runs would give them
    frame = pd.concat([frame[frame["source"] == MACRO], frame[frame["source"] != MACRO]])
    return _without_partial_scores(frame.reset_index(drop=True), runs)


def _intervals(
    frame: pd.DataFrame,
    keys: list[str],
    column: str,
    names: tuple[str, str],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per group of ``keys``: the bootstrap CI of the mean of ``column`` with the images as the
    resampled unit (an image carries all its seeds' values: :func:`bootstrap_ci` ``groups``), as
    columns ``names``, and ``n_images``, the images with a finite value."""
    rows = []
    for key, part in frame.groupby(keys, sort=False):
        _, low, high = bootstrap_ci(
            part[column], groups=part["image_id"], n_boot=n_boot, level=level, seed=seed
        )
        images = part.loc[np.isfinite(part[column].to_numpy(dtype=float)), "image_id"].nunique()
        rows.append((*key, low, high, images))
    return pd.DataFrame(rows, columns=[*keys, *names, "n_images"])


def report_table(runs: Sequence[RunDir]) -> pd.DataFrame:
    """The comparison table, long: one row per dataset, scope, metric and loss (:data:`REPORT_COLUMNS`).

    ``value`` is the mean over test images and seeds (NaN skipped: Dice of a class absent from an
    image), ``ci_low``/``ci_high`` its 95 % bootstrap CI over test images (:func:`bootstrap_ci`;
    an image carries all its seeds' values, so the interval says how much the mean depends on
    which images were drawn, not on the seeds); ``pct_change``/``pct_std``/``n``/``p_value``/
    ``p_wilcoxon`` compare each method with the baseline
    (:func:`calibtut.paper.summarize_percentage_changes`: ``p_value`` the paired t-test, as the
    paper; ``p_wilcoxon`` the signed-rank test) and ``pct_low``/``pct_high`` are the CI of
    ``pct_change``, resampled the same way; baseline rows, and the noise floors (a property of
    the probabilities, not a result to improve), leave them empty. The micro scope, one pooled
    value per run, has no CI. ``phantom`` is True for a dataset any of whose runs was trained on
    a phantom (``"phantom": true`` in its config): its numbers are a pipeline check, so its
    p-values and CIs are NaN.
    """
    frame = scope_frame(runs)
    keys = ["dataset", "source", "metric", "loss"]
    values = frame.groupby(keys, sort=False)["value"].mean().reset_index()
    per_image = frame[frame["source"] != MICRO]
    values = values.merge(
        _intervals(per_image, keys, "value", ("ci_low", "ci_high")).drop(columns="n_images"),
        on=keys,
        how="left",
    )
    compared = frame.groupby("dataset")["loss"].agg(
        lambda losses: "baseline" in set(losses) and len(set(losses)) > 1
    )
    to_compare = _comparable(frame[frame["dataset"].isin(compared[compared].index)])
    if to_compare.empty:
        table = values.assign(
            pct_change=math.nan, pct_std=math.nan, pct_low=math.nan, pct_high=math.nan,
            n=pd.NA, p_value=math.nan, p_wilcoxon=math.nan,
        )  # fmt: skip
    else:
        changes = percentage_changes(to_compare)
        summary = summarize_percentage_changes(changes)
        # The paper also pools all datasets ("all"); a report keeps datasets apart.
        summary = summary[summary["dataset"] != "all"]
        summary = summary.rename(columns={"mean": "pct_change", "std": "pct_std"})
        intervals = _intervals(
            changes[changes["source"] != MICRO], keys, "pct_change", ("pct_low", "pct_high")
        )
        summary = summary.merge(intervals.drop(columns="n_images"), on=keys, how="left")
        table = values.merge(summary, on=keys, how="left")
    phantoms = {run.config["dataset"] for run in runs if run.config.get("phantom", False)}
    table["phantom"] = table["dataset"].isin(phantoms)
    no_test = (table["source"] == MICRO) | table["phantom"]  # micro: one pooled value per seed
    table.loc[no_test, ["p_value", "p_wilcoxon"]] = math.nan
    table.loc[table["phantom"], ["ci_low", "ci_high", "pct_low", "pct_high"]] = math.nan
    table = table.rename(columns={"source": "scope"})
    table["n"] = table["n"].astype("Int64")
    return _ordered(table, runs)[list(REPORT_COLUMNS)]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` to compare with the baseline: Dice, ECE, ACE and MCE, and each
    score only where the baseline of that seed has it (an old baseline run without scores leaves
    them uncompared, "n/a", rather than failing the whole comparison)."""
    core = frame[frame["metric"].isin(METRICS)]
    scores = frame[frame["metric"].isin(SCORE_COLUMNS)]
    if scores.empty:
        return core
    keys = ["source", "dataset", "seed", "metric"]
    baselines = scores.loc[scores["loss"] == "baseline", keys].drop_duplicates()
    return pd.concat([core, scores.merge(baselines, on=keys, how="inner")], ignore_index=True)


def _ordered(table: pd.DataFrame, runs: Sequence[RunDir]) -> pd.DataFrame:
    """Datasets in run order; classes in the runs' order, then macro, micro; metrics and losses fixed."""
    classes = dict.fromkeys(
        name
        for run in runs
        for name in run.results().per_image.sort_values("class_index")["class_name"]
    )
    scopes = [*classes, MACRO, MICRO]
    order = {
        "dataset": list(dict.fromkeys(run.config["dataset"] for run in runs)),
        "scope": scopes,
        "metric": list(METRIC_TITLES),
        "loss": ordered(table["loss"]),
    }
    ranks = [
        table[column].map({v: i for i, v in enumerate(values)}) for column, values in order.items()
    ]
    return table.iloc[np.lexsort(ranks[::-1])].reset_index(drop=True)


def _cell(value: float, floor: float | None = None) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:.4f}" + ("" if floor is None or pd.isna(floor) else f" [{floor:.3f}]")


def _change_cell(row: pd.Series | None) -> str:
    if row is None or pd.isna(row["pct_change"]):
        return "—"
    if row["n"] > 1:
        text = f"{row['pct_change']:+.1f} ± {row['pct_std']:.1f}%"
    else:  # one pair (e.g. micro, one seed): a spread would be meaningless
        text = f"{row['pct_change']:+.1f}%"
    tests = [
        f"{name}={row[column]:.2g}"
        for name, column in (("p", "p_value"), ("p_W", "p_wilcoxon"))
        if column in row and not pd.isna(row[column])
    ]
    if tests:
        text += f" ({', '.join(tests)})"
    return text


def report_markdown(table: pd.DataFrame) -> str:
    """Per dataset: the macro summary with 95 % CIs (:func:`ci_markdown`'s layout), then one
    Markdown table per metric: rows are scopes, columns each method and its Δ%.

    A score (Brier, NLL, equal-mass ECE) that a method's runs were evaluated without reads
    "n/a", and a note under the table says why."""
    lines: list[str] = []
    for dataset in dict.fromkeys(table["dataset"]):
        part = table[table["dataset"] == dataset]
        losses = ordered(part["loss"])
        header = [
            "scope",
            *[
                c
                for loss in losses
                for c in ([loss] if loss not in COMPARED_LOSSES else [loss, f"Δ% {loss}"])
            ],
        ]
        lines.append(f"## {dataset}\n")
        if "phantom" in part and part["phantom"].any():
            lines.append(f"*{PHANTOM_NOTE}*: these runs were trained on a phantom.\n")
        if "ci_low" in part:
            macro = part[part["scope"] == MACRO]
            summary = [m for m in SUMMARY_METRICS if (macro["metric"] == m).any()]
            lines += _summary_lines(macro.rename(columns={"value": "mean"}), summary, losses)
        for metric in COMPARED_METRICS:
            rows = part[part["metric"] == metric]
            if rows.empty:
                continue
            lines += [
                f"### {METRIC_TITLES[metric]}\n",
                "| " + " | ".join(header) + " |",
                "|---" + "|---:" * (len(header) - 1) + "|",
            ]
            cells = {(r.scope, r.loss): r for _, r in rows.iterrows()}
            floors = part[part["metric"] == f"{metric}_floor"]
            floor_of = {(r.scope, r.loss): r.value for r in floors.itertuples(index=False)}
            score = metric in SCORE_COLUMNS
            missing = False
            for scope in dict.fromkeys(rows["scope"]):
                line = [scope]
                for loss in losses:
                    row = cells.get((scope, loss))
                    value = None if row is None else row["value"]
                    if score and row is None:
                        line += [NOT_AVAILABLE] * (1 + (loss in COMPARED_LOSSES))
                        missing = True
                        continue
                    line.append(_cell(value, floor_of.get((scope, loss))))
                    if loss in COMPARED_LOSSES:
                        baseline_missing = score and (scope, "baseline") not in cells
                        line.append(NOT_AVAILABLE if baseline_missing else _change_cell(row))
                        missing |= baseline_missing
                lines.append("| " + " | ".join(line) + " |")
            lines.append("")
            if missing:
                lines.append(f"*{NOT_AVAILABLE_NOTE}*\n")
    return "\n".join(lines)


SUMMARY_METRICS = ("dice", "ece", "ace", "ace_floor", "mce", *SCORE_COLUMNS)
"""The columns of the report's macro summary (those its runs have), in order."""


def _interval_cell(mean: float, low: float, high: float, percent: bool = False) -> str:
    """``0.1234 [0.1100, 0.1350]``, or ``-12.3% [-15.1, -9.4]``; without a CI, the mean alone."""
    if mean is None or pd.isna(mean):
        return "—"
    if percent:
        text = f"{mean:+.1f}%"
        return text if pd.isna(low) else f"{text} [{low:+.1f}, {high:+.1f}]"
    return f"{mean:.4f}" if pd.isna(low) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def _summary_lines(part: pd.DataFrame, metrics: Sequence[str], losses: Sequence[str]) -> list[str]:
    """One dataset's two wide tables: per method the macro mean [95 % CI] of each metric, and
    per compared method its Δ% against the baseline [95 % CI]; "n/a" where a method lacks a
    score (part: rows of ``metric``, ``loss``, ``mean``, ``ci_low``, ``ci_high``, ``pct_change``,
    ``pct_low``, ``pct_high``)."""
    cells = {(r.metric, r.loss): r for r in part.itertuples(index=False)}
    titles = [METRIC_TITLES[m] for m in metrics]
    lines = [
        "### Macro summary: mean [95 % CI over test images]\n",
        "| method | " + " | ".join(titles) + " |",
        "|---" + "|---:" * len(metrics) + "|",
    ]
    missing = False
    for loss in losses:
        row = [loss]
        for metric in metrics:
            cell = cells.get((metric, loss))
            missing |= cell is None
            row.append(
                NOT_AVAILABLE
                if cell is None
                else _interval_cell(cell.mean, cell.ci_low, cell.ci_high)
            )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    compared = [m for m in metrics if m in COMPARED_METRICS]
    treated = [loss for loss in losses if loss != "baseline"]
    if "baseline" in losses and treated and compared:
        lines += [
            "### Macro Δ% against the baseline: mean [95 % CI over test images]\n",
            "| method | " + " | ".join(METRIC_TITLES[m] for m in compared) + " |",
            "|---" + "|---:" * len(compared) + "|",
        ]
        for loss in treated:
            row = [loss]
            for metric in compared:
                cell = cells.get((metric, loss))
                if cell is None or (metric, "baseline") not in cells:
                    row.append(NOT_AVAILABLE)
                    missing = True
                else:
                    row.append(
                        _interval_cell(cell.pct_change, cell.pct_low, cell.pct_high, percent=True)
                    )
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if missing:
        lines.append(f"*{NOT_AVAILABLE_NOTE}*\n")
    return lines


SEED_METRICS = ("ace", "mce", "dice")
"""The metrics of the per-seed table (:func:`seed_table`)."""


def seed_table(runs: Sequence[RunDir]) -> pd.DataFrame:
    """Each seed on its own: the macro Δ% of every loss against the baseline of its seed.

    The pooled table hides whether one seed carries the result; this one shows every seed
    (columns as :func:`report_table`, with ``seed``; baselines and phantoms without p-values).
    Empty when no dataset has a baseline and another loss of two or more seeds.

    Example:
        >>> seed_table(resolve_runs("runs/demo"))   # doctest: +SKIP
    """
    frame = scope_frame(runs)
    frame = frame[(frame["source"] == MACRO) & frame["metric"].isin(SEED_METRICS)]
    parts = []
    for (dataset, seed), part in frame.groupby(["dataset", "seed"], sort=True):
        seeds = frame.loc[frame["dataset"] == dataset, "seed"].nunique()
        if seeds < 2 or "baseline" not in set(part["loss"]) or part["loss"].nunique() < 2:
            continue
        summary = summarize_percentage_changes(percentage_changes(part))
        summary = summary[summary["dataset"] != "all"].assign(seed=seed)
        parts.append(summary)
    if not parts:
        return pd.DataFrame(columns=["dataset", "seed", "metric", "loss", "pct_change"])
    table = pd.concat(parts, ignore_index=True).rename(
        columns={"mean": "pct_change", "std": "pct_std"}
    )
    phantoms = {run.config["dataset"] for run in runs if run.config.get("phantom", False)}
    table.loc[table["dataset"].isin(phantoms), ["p_value", "p_wilcoxon"]] = math.nan
    return table[
        ["dataset", "seed", "metric", "loss", "pct_change", "pct_std", "n", "p_value", "p_wilcoxon"]
    ]


def seed_markdown(table: pd.DataFrame) -> str:
    """:func:`seed_table` as one Markdown table per dataset: a row per seed, a column per loss
    and metric."""
    lines: list[str] = []
    for dataset in dict.fromkeys(table["dataset"]):
        part = table[table["dataset"] == dataset]
        columns = [
            (metric, loss)
            for metric in SEED_METRICS
            for loss in COMPARED_LOSSES
            if ((part["metric"] == metric) & (part["loss"] == loss)).any()
        ]
        header = ["seed", *(f"{METRIC_TITLES[m]} Δ% {loss}" for m, loss in columns)]
        lines += [
            f"## {dataset}: macro Δ% by seed\n",
            "| " + " | ".join(header) + " |",
            "|---" + "|---:" * (len(header) - 1) + "|",
        ]
        cells = {(r.seed, r.metric, r.loss): r for _, r in part.iterrows()}
        for seed in sorted(set(part["seed"])):
            row = [str(seed)] + [
                _change_cell(cells.get((seed, metric, loss))) for metric, loss in columns
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def headline(runs: Mapping[str, RunDir] | Sequence[RunDir]) -> pd.DataFrame:
    """Per loss, Dice, ECE, ACE and MCE (and their noise floors) averaged over test images: the
    report's macro scope (the scores and CIs: :func:`ci_table`).

    Taught in notebooks/00_start_here and 03_training_with_calibration_losses.
    """
    table = report_table(list(runs.values()) if isinstance(runs, Mapping) else list(runs))
    macro = table[table["scope"] == MACRO].pivot_table(
        index="loss", columns="metric", values="value", aggfunc="first"
    )
    order = ordered(macro.index)
    shown = (*METRICS, *FLOOR_COLUMNS)
    return macro.reindex(order)[[m for m in METRIC_TITLES if m in macro.columns and m in shown]]


CI_COLUMNS = (
    "dataset", "metric", "loss", "n_images", "mean", "ci_low", "ci_high",
    "pct_change", "pct_low", "pct_high",
)  # fmt: skip
CI_METRICS = ("dice", "ece", "ace", "ace_above_floor", "mce", *SCORE_COLUMNS)
"""The metrics of :func:`ci_table`, in its order: ``ace_above_floor`` is each image's ACE minus
its noise floor (the part of the ACE a method can remove), where the runs have floors."""


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The mean of ``values`` and its percentile bootstrap confidence interval.

    ``n_boot`` resamples (with replacement, as many as there are), the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of their means. NaN values (Dice of an absent class) are left
    out first; no value left: all three NaN. With ``groups`` (one label per value, e.g. the
    image of each seed's value) the groups are resampled, each with all its values (a cluster
    bootstrap): the images are the unit, however many seeds each carries, and the mean is still
    the mean of all values.

    Args:
        values: one value per image (or per image and seed, with ``groups``).
        groups: the resampled unit of each value (None: each value its own).
        n_boot: the number of resamples (a positive integer).
        level: the interval's coverage, in (0, 1).
        seed: seeds the resampling (the interval is reproducible).

    Returns:
        ``(mean, low, high)``.

    Raises:
        ValueError: a bad ``n_boot`` or ``level``, or ``groups`` of another length.

    Example:
        >>> bootstrap_ci([1.0, 1.0, 1.0])
        (1.0, 1.0, 1.0)
        >>> bootstrap_ci([0.0, 2.0, 4.0, 6.0], groups=["a", "a", "b", "b"])[0]
        3.0
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    x = np.asarray(values, dtype=np.float64).ravel()
    labels = np.arange(x.size) if groups is None else np.asarray(groups, dtype=object).ravel()
    if labels.size != x.size:
        raise ValueError(f"groups has {labels.size} labels for {x.size} values")
    finite = np.isfinite(x)
    x, labels = x[finite], labels[finite]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    codes, uniques = pd.factorize(labels)
    sums = np.bincount(codes, weights=x, minlength=len(uniques))
    counts = np.bincount(codes, minlength=len(uniques))
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(uniques), size=(n_boot, len(uniques)))
    means = sums[chosen].sum(1) / counts[chosen].sum(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(low), float(high)


def ci_table(
    runs: Sequence[RunDir], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Per dataset, metric (:data:`CI_METRICS`) and method: the macro mean over test images with
    its bootstrap CI, and the paper's Δ% against the baseline (mean per-image change) with its
    CI (:data:`CI_COLUMNS`): the table of notebooks/10_calibration_toolbox.

    The numbers are the report's macro scope (:func:`report_table`): means over images and
    seeds, images the resampled unit (each with all its seeds' values), so an interval says how
    much the result depends on which test images were drawn; it does not cover the seed-to-seed
    spread of training. Δ% is empty for the baseline, for ``ace_above_floor`` (near-zero
    baselines make its ratios meaningless) and where no baseline of the same seeds has the
    metric; a method one of whose runs lacks a score has no row for it.

    Example:
        >>> ci_table(resolve_runs("runs/demo"))   # doctest: +SKIP

    Taught in notebooks/10_calibration_toolbox.
    """
    frame = scope_frame(runs)
    frame = frame[frame["source"] == MACRO]
    keys = ["source", "dataset", "loss", "seed", "image_id"]
    if {"ace", "ace_floor"} <= set(frame["metric"]):
        chosen = frame[frame["metric"].isin(["ace", "ace_floor"])]
        wide = chosen.set_index([*keys, "metric"])["value"].unstack("metric")
        above = (wide["ace"] - wide["ace_floor"]).rename("value").reset_index()
        frame = pd.concat([frame, above.assign(metric="ace_above_floor")], ignore_index=True)
    frame = frame[frame["metric"].isin(CI_METRICS)]
    by = ["dataset", "metric", "loss"]
    options = {"n_boot": n_boot, "level": level, "seed": seed}
    means = frame.groupby(by, sort=False)["value"].mean().rename("mean").reset_index()
    table = means.merge(_intervals(frame, by, "value", ("ci_low", "ci_high"), **options), on=by)
    compare = _comparable(frame[frame["metric"] != "ace_above_floor"])
    treated = compare["loss"] != "baseline"
    table = table.assign(pct_change=math.nan, pct_low=math.nan, pct_high=math.nan)
    if "baseline" in set(compare["loss"]) and treated.any():
        datasets = set(compare.loc[compare["loss"] == "baseline", "dataset"])
        changes = percentage_changes(compare[compare["dataset"].isin(datasets)])
        pct = changes.groupby(by, sort=False)["pct_change"].mean().reset_index()
        pct = pct.merge(
            _intervals(changes, by, "pct_change", ("pct_low", "pct_high"), **options).drop(
                columns="n_images"
            ),
            on=by,
        )
        table = table.drop(columns=["pct_change", "pct_low", "pct_high"]).merge(
            pct, on=by, how="left"
        )
    table = table[list(CI_COLUMNS)]
    order = {"metric": list(CI_METRICS), "loss": ordered(table["loss"])}
    ranks = [table[c].map({v: i for i, v in enumerate(vals)}) for c, vals in order.items()]
    return table.iloc[np.lexsort(ranks[::-1])].reset_index(drop=True)


def ci_markdown(table: pd.DataFrame) -> str:
    """:func:`ci_table` as Markdown: per dataset, the methods' means [95 % CI] of every metric,
    then their Δ% against the baseline [95 % CI]; "n/a" where a method's runs lack a score.

    Example:
        >>> print(ci_markdown(ci_table(resolve_runs("runs/demo"))))   # doctest: +SKIP

    Taught in notebooks/10_calibration_toolbox.
    """
    lines: list[str] = []
    for dataset in dict.fromkeys(table["dataset"]):
        part = table[table["dataset"] == dataset]
        metrics = [m for m in CI_METRICS if (part["metric"] == m).any()]
        lines.append(f"## {dataset}\n")
        lines += _summary_lines(part, metrics, ordered(part["loss"]))
    return "\n".join(lines)


_EXPLANATION = """\
Values are means over the test images (pooled over seeds). Scopes: each scored class; `macro`,
the per-image mean over classes (calibration errors over all classes, Dice over the classes
present), averaged over images; `micro`, the errors of the bins pooled over the whole test set
(mean over classes). In brackets after an ACE or MCE, its **noise floor**: the value a perfectly
calibrated model with the same probabilities would still show, because a bin holds finitely many
voxels (labels drawn from the model's own probabilities); only the part above it can be lowered.

Δ% is the paper's statistic: each image's percentage change against the Dice+CE baseline of the
same seed, `(loss - baseline) / baseline * 100`, then the mean ± std of those per-image ratios
over images. It is not the change of the means (an image whose baseline ACE is small weighs as
much as one whose ACE is large), so it can differ from, even disagree in sign with, the change
of the table's means. Lower is better for ECE, ACE and MCE; higher for Dice. The figure
"every test image, baseline against each loss" shows the pairs behind each Δ%.

p: the paper's test, the two-sided paired t-test over images on the raw per-image values
(`scipy.stats.ttest_rel`). p_W: the two-sided paired Wilcoxon signed-rank test over the same
images, a robustness check that does not assume normal differences. The two can disagree on
heavy-tailed data: a few images with large differences dominate the t-test's mean and standard
deviation, while the rank test responds to a consistent shift of most images. In the paper's
published results, KiTS Dice with hard mL1-ACE has t-test p = 0.65 but Wilcoxon p = 0.027 (66 of
98 images lose a little Dice, a few gain a lot), BraTS ECE with hard mL1-ACE 0.63 vs 0.0013.
Micro: one value per seed, no test. Runs trained on a phantom (phantom data: a pipeline check, no
statistics) show their numbers without p-values or intervals.

In square brackets in the macro summary: the 95 % bootstrap confidence interval of the mean (and of
Δ%) over test images: 2000 resamples of the images, each carrying all its seeds' values. It says
how much the number depends on which test images were drawn, not how much it varies from one
training seed to the next. Brier is the mean squared error of each class's probability, NLL its
mean binary negative log-likelihood (probabilities clipped to [1e-7, 1 - 1e-7]): proper scores
that need no bins, lower is better. The equal-mass ECE is the ECE over bins that each hold the same
number of voxels (adaptive binning, Nixon et al. 2019; as many bins as the ACE), not the paper's
ACE, which averages equal-width bins. n/a: a score the runs were evaluated without (older runs);
evaluating them again adds it.
"""


def write_report(paths: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    """Write ``report.md``, ``report.csv`` and ``figures/`` for the runs under ``paths`` into
    ``out``; returns the table (:func:`report_table`)."""
    out = Path(out)
    check_writable_folder(out, "the report folder")
    runs = resolve_runs(paths)
    table = report_table(runs)
    figures = _write_figures(runs, out / "figures")
    text = [
        "# calibtut report\n",
        f"{len(runs)} runs: " + ", ".join(sorted(run.name for run in runs)) + ".\n",
        _EXPLANATION,
        report_markdown(table),
    ]
    by_seed = seed_table(runs)
    if not by_seed.empty:
        text.append(seed_markdown(by_seed))
    if figures:
        text.append("## Figures\n")
        text += [
            f"### {title}\n\n![{title}]({path.relative_to(out).as_posix()})\n"
            for title, path in figures
        ]
    atomic_write(out / "report.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "report.md", lambda p: p.write_text("\n".join(text)))
    return table


def _write_figures(runs: Sequence[RunDir], folder: Path) -> list[tuple[str, Path]]:
    """Per dataset, for the lowest seed that every loss has: the losses' dataset reliability
    histograms, the reliability diagrams of the typical test image (median baseline ACE), its
    overlays, and every image's baseline-vs-loss values."""
    written: list[tuple[str, Path]] = []
    by_dataset: dict[str, list[RunDir]] = {}
    for run in runs:
        by_dataset.setdefault(run.config["dataset"], []).append(run)
    for dataset, group in by_dataset.items():
        losses = ordered(r.config["loss"] for r in group)
        seeds = set.intersection(
            *({int(r.config["seed"]) for r in group if r.config["loss"] == loss} for loss in losses)
        )
        if not seeds:
            continue
        chosen = views.by_loss(group, seed=min(seeds))
        suffix = f"{dataset}, seed {min(seeds)}"

        def save(title: str, name: str, fig: Figure, prefix: str = dataset) -> None:
            png, _ = plots.save_figure(fig, folder / f"{prefix}_{name}")
            written.append((title, png))

        save(
            f"Dataset reliability histograms ({suffix})",
            "reliability_histograms",
            views.dataset_histograms(chosen),
        )
        ids = [run.results().image_ids for run in chosen.values()]
        if all(set(i) == set(ids[0]) for i in ids):
            typical = views.typical_image(next(iter(chosen.values())))
            save(
                f"Reliability diagrams of test image {typical}, the median baseline ACE ({suffix})",
                "reliability_diagrams",
                views.reliability_diagrams(chosen, typical),
            )
            if len(chosen) > 1 and "baseline" in chosen:
                save(
                    f"Every test image, baseline against each loss ({dataset}, all seeds)",
                    "paired_changes",
                    views.paired_changes(group),
                )
        shared = sorted(set.intersection(*(set(run.prediction_ids()) for run in chosen.values())))
        if shared:
            save(
                f"Test image {shared[0]} ({suffix})",
                "overlays",
                views.overlays(chosen, image_id=shared[0]),
            )
    return written
