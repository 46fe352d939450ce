"""The comparison report of run directories: one table (Markdown and CSV) and its figures.

For each dataset, loss and *scope* (each scored class, ``macro`` over classes, ``micro`` from the
bins pooled over the test set) it gives Dice, ECE, ACE and MCE (mean over test images, pooled over
seeds) and, for the hard and soft runs, the per-image percentage change against the Dice+CE
baseline of the same seed (mean ± std) with two p-values: the two-sided paired t-test, the paper's
test (``p_value``), and the Wilcoxon signed-rank test beside it as a robustness check
(``p_wilcoxon``).

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
from calibtut.methods import COMPARED_LOSSES, LOSSES
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
]

METRICS = IMAGE_METRICS
REPORT_COLUMNS = (
    "dataset",
    "scope",
    "metric",
    "loss",
    "value",
    "pct_change",
    "pct_std",
    "n",
    "p_value",
    "p_wilcoxon",
    "phantom",
)
PHANTOM_NOTE = "phantom data: a pipeline check, no statistics"
"""What the Markdown says under a dataset whose runs were trained on a phantom."""
MACRO, MICRO = "macro", "micro"


def _metrics(runs: Sequence[RunDir]) -> list[str]:
    """The per-image metrics every run has: Dice, ECE, ACE, MCE, and the noise floors when all
    runs were evaluated with them."""
    floors = all(set(FLOOR_COLUMNS) <= set(run.results().per_image) for run in runs)
    return [*METRICS, *(FLOOR_COLUMNS if floors else ())]


def scope_frame(runs: Sequence[RunDir]) -> pd.DataFrame:
    """Per-image values of every run in :mod:`calibtut.paper`'s frame layout, one source per scope.

    Sources: each scored class (the image's value for that class), ``macro`` (the paper's
    per-image class mean, :func:`calibtut.paper.runs_frame`) and ``micro`` (per run one value, the
    class mean of the errors of the pooled bins, under image id ``"pooled"``). Metrics: Dice,
    ECE, ACE, MCE and, where every run has them, the noise floors ``ace_floor``/``mce_floor``
    (micro: the floor of the pooled bins, from the pooled label draws).
    """
    metrics = _metrics(runs)
    parts = [runs_frame(list(runs), source=MACRO, metrics=metrics)]
    for run in runs:
        config = run.config
        keys = {"dataset": config["dataset"], "loss": config["loss"], "seed": int(config["seed"])}
        results = run.results()
        per_image = results.per_image
        clash = set(per_image["class_name"]) & {MACRO, MICRO}
        if clash:
            raise ValueError(f"{run.per_image_path}: a class may not be named {sorted(clash)}")
        long = per_image.melt(
            id_vars=["image_id", "class_name"], value_vars=metrics, var_name="metric"
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
    return pd.concat(parts, ignore_index=True)[list(FRAME_COLUMNS)]


def report_table(runs: Sequence[RunDir]) -> pd.DataFrame:
    """The comparison table, long: one row per dataset, scope, metric and loss (:data:`REPORT_COLUMNS`).

    ``value`` is the mean over test images and seeds (NaN skipped: Dice of a class absent from an
    image); ``pct_change``/``pct_std``/``n``/``p_value``/``p_wilcoxon`` compare each loss with the
    baseline (:func:`calibtut.paper.summarize_percentage_changes`: ``p_value`` the paired t-test,
    as the paper; ``p_wilcoxon`` the signed-rank test); baseline rows, and the noise floors
    (a property of the probabilities, not a result to improve), leave them empty. ``phantom`` is
    True for a dataset any of whose runs was trained on a phantom (``"phantom": true`` in its
    config): its numbers are a pipeline check, so its p-values are NaN.
    """
    frame = scope_frame(runs)
    keys = ["dataset", "source", "metric", "loss"]
    values = frame.groupby(keys, sort=False)["value"].mean().reset_index()
    compared = frame.groupby("dataset")["loss"].agg(
        lambda losses: "baseline" in set(losses) and len(set(losses)) > 1
    )
    to_compare = frame[frame["dataset"].isin(compared[compared].index)]
    to_compare = to_compare[to_compare["metric"].isin(METRICS)]
    if to_compare.empty:
        table = values.assign(
            pct_change=math.nan, pct_std=math.nan, n=pd.NA, p_value=math.nan, p_wilcoxon=math.nan
        )
    else:
        summary = summarize_percentage_changes(percentage_changes(to_compare))
        # The paper also pools all datasets ("all"); a report keeps datasets apart.
        summary = summary[summary["dataset"] != "all"]
        summary = summary.rename(columns={"mean": "pct_change", "std": "pct_std"})
        table = values.merge(summary, on=keys, how="left")
    phantoms = {run.config["dataset"] for run in runs if run.config.get("phantom", False)}
    table["phantom"] = table["dataset"].isin(phantoms)
    no_test = (table["source"] == MICRO) | table["phantom"]  # micro: one pooled value per seed
    table.loc[no_test, ["p_value", "p_wilcoxon"]] = math.nan
    table = table.rename(columns={"source": "scope"})
    table["n"] = table["n"].astype("Int64")
    return _ordered(table, runs)[list(REPORT_COLUMNS)]


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
        "loss": list(LOSSES),
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
    """One Markdown table per dataset and metric: rows are scopes, columns each loss and its Δ%."""
    lines: list[str] = []
    for dataset in dict.fromkeys(table["dataset"]):
        part = table[table["dataset"] == dataset]
        losses = [loss for loss in LOSSES if loss in set(part["loss"])]
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
        for metric in METRICS:
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
            for scope in dict.fromkeys(rows["scope"]):
                line = [scope]
                for loss in losses:
                    row = cells.get((scope, loss))
                    value = None if row is None else row["value"]
                    line.append(_cell(value, floor_of.get((scope, loss))))
                    if loss in COMPARED_LOSSES:
                        line.append(_change_cell(row))
                lines.append("| " + " | ".join(line) + " |")
            lines.append("")
    return "\n".join(lines)


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
    report's macro scope.

    Taught in notebooks/00_start_here and 03_training_with_calibration_losses.
    """
    table = report_table(list(runs.values()) if isinstance(runs, Mapping) else list(runs))
    macro = table[table["scope"] == MACRO].pivot_table(
        index="loss", columns="metric", values="value", aggfunc="first"
    )
    order = [loss for loss in LOSSES if loss in macro.index]
    return macro.reindex(order)[[m for m in METRIC_TITLES if m in macro.columns]]


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
statistics) show their numbers without p-values.
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
        losses = [loss for loss in LOSSES if any(r.config["loss"] == loss for r in group)]
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
