"""The comparison report of run directories: one table (Markdown and CSV) and its figures.

For each dataset, loss and *scope* (each scored class, ``macro`` over classes, ``micro`` from the
bins pooled over the test set) it gives Dice, ECE, ACE and MCE (mean over test images, pooled over
seeds) and, for the hard and soft runs, the per-image percentage change against the Dice+CE
baseline of the same seed (mean ± std) with a two-sided paired Wilcoxon signed-rank p-value.

The statistics are :mod:`calibtut.paper`'s (``percentage_changes`` and
``summarize_percentage_changes``, the paper's main-table method), applied to one frame per scope:
``macro`` is :func:`calibtut.paper.runs_frame` itself (the paper's per-image convention); per class
and micro, :func:`scope_frame` builds the same frame from ``per_image.csv`` and ``bins.npz``, with
the scope in the frame's ``source`` column and the paper's metric labels. Micro errors are one
value per run, so their change is over seeds and carries no test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calibtut import plots
from calibtut.metrics import micro_errors
from calibtut.paper import (
    COMPARED_LOSSES,
    FRAME_COLUMNS,
    percentage_changes,
    runs_frame,
    summarize_percentage_changes,
)
from calibtut.runs import LOSSES, RunDir, atomic_write, find_runs

__all__ = [
    "METRICS",
    "REPORT_COLUMNS",
    "collect_runs",
    "scope_frame",
    "report_table",
    "report_markdown",
    "write_report",
]

METRICS = ("dice", "ece", "ace", "mce")
METRIC_TITLES = {"dice": "Dice", "ece": "ECE", "ace": "ACE", "mce": "MCE"}
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
)
MACRO, MICRO = "macro", "micro"
# calibtut.paper labels its frames' metrics so; per class and micro values reuse the labels.
_PAPER_LABEL = {"dice": "dice", "ece": "macro_ece", "ace": "macro_ace", "mce": "macro_mce"}
_FROM_PAPER_LABEL = {label: metric for metric, label in _PAPER_LABEL.items()}


def collect_runs(paths: Iterable[str | Path]) -> list[RunDir]:
    """Evaluated runs: each path is a run directory or a folder holding runs at any depth."""
    runs: dict[Path, RunDir] = {}
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            run = RunDir(path)
            if not run.is_evaluated:
                raise ValueError(
                    f"{path} has not been evaluated (no per_image.csv/bins.npz): "
                    "finish training it, or run `calibtut evaluate` on it"
                )
            found = [run]
        elif path.is_dir():
            found = find_runs(path)
            if not found:
                raise FileNotFoundError(f"no evaluated run directory under {path}")
        else:
            raise FileNotFoundError(f"{path} is neither a run directory nor a folder of runs")
        runs.update((run.path.resolve(), run) for run in found)
    if not runs:
        raise ValueError("a report needs at least one run directory")
    return list(runs.values())


def scope_frame(runs: Sequence[RunDir]) -> pd.DataFrame:
    """Per-image values of every run in :mod:`calibtut.paper`'s frame layout, one source per scope.

    Sources: each scored class (the image's value for that class), ``macro`` (the paper's
    per-image class mean, :func:`calibtut.paper.runs_frame`) and ``micro`` (per run one value, the
    class mean of the errors of the pooled bins, under image id ``"pooled"``).
    """
    parts = [runs_frame([run.path for run in runs], source=MACRO)]
    for run in runs:
        config = run.config
        keys = {"dataset": config["dataset"], "loss": config["loss"], "seed": int(config["seed"])}
        per_image = run.per_image()
        clash = set(per_image["class_name"]) & {MACRO, MICRO}
        if clash:
            raise ValueError(f"{run.per_image_path}: a class may not be named {sorted(clash)}")
        long = per_image.melt(
            id_vars=["image_id", "class_name"], value_vars=list(METRICS), var_name="metric"
        )
        parts.append(
            pd.DataFrame(
                {
                    "source": long["class_name"],
                    **keys,
                    "image_id": long["image_id"],
                    "metric": long["metric"].map(_PAPER_LABEL),
                    "value": long["value"].astype(float),
                }
            )
        )
        bins, _, _ = run.bins()
        micro = micro_errors(bins)
        parts.append(
            pd.DataFrame(
                [
                    {
                        "source": MICRO,
                        **keys,
                        "image_id": "pooled",
                        "metric": _PAPER_LABEL[name],
                        "value": float(np.nanmean(getattr(micro, name)[0].double().numpy())),
                    }
                    for name in ("ece", "ace", "mce")
                ]
            )
        )
    return pd.concat(parts, ignore_index=True)[list(FRAME_COLUMNS)]


def report_table(runs: Sequence[RunDir]) -> pd.DataFrame:
    """The comparison table, long: one row per dataset, scope, metric and loss (:data:`REPORT_COLUMNS`).

    ``value`` is the mean over test images and seeds (NaN skipped: Dice of a class absent from an
    image); ``pct_change``/``pct_std``/``n``/``p_value`` compare hard and soft with the baseline
    (:func:`calibtut.paper.summarize_percentage_changes`); baseline rows leave them empty.
    """
    frame = scope_frame(runs)
    keys = ["dataset", "source", "metric", "loss"]
    values = frame.groupby(keys, sort=False)["value"].mean().reset_index()
    compared = frame.groupby("dataset")["loss"].agg(
        lambda losses: "baseline" in set(losses) and len(set(losses)) > 1
    )
    to_compare = frame[frame["dataset"].isin(compared[compared].index)]
    if to_compare.empty:
        table = values.assign(pct_change=math.nan, pct_std=math.nan, n=pd.NA, p_value=math.nan)
    else:
        summary = summarize_percentage_changes(percentage_changes(to_compare))
        # The paper also pools all datasets ("all"); a report keeps datasets apart.
        summary = summary[summary["dataset"] != "all"]
        summary = summary.rename(columns={"mean": "pct_change", "std": "pct_std"})
        table = values.merge(summary, on=keys, how="left")
    table.loc[table["source"] == MICRO, "p_value"] = math.nan  # one pooled value per seed: no test
    table = table.rename(columns={"source": "scope"})
    table["metric"] = table["metric"].map(_FROM_PAPER_LABEL)
    table["n"] = table["n"].astype("Int64")
    return _ordered(table, runs)[list(REPORT_COLUMNS)]


def _ordered(table: pd.DataFrame, runs: Sequence[RunDir]) -> pd.DataFrame:
    """Datasets in run order; classes in the runs' order, then macro, micro; metrics and losses fixed."""
    classes = dict.fromkeys(
        name for run in runs for name in run.per_image().sort_values("class_index")["class_name"]
    )
    scopes = [*classes, MACRO, MICRO]
    order = {
        "dataset": list(dict.fromkeys(run.config["dataset"] for run in runs)),
        "scope": scopes,
        "metric": list(METRICS),
        "loss": list(LOSSES),
    }
    ranks = [
        table[column].map({v: i for i, v in enumerate(values)}) for column, values in order.items()
    ]
    return table.iloc[np.lexsort(ranks[::-1])].reset_index(drop=True)


def _cell(value: float) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.4f}"


def _change_cell(row: pd.Series | None) -> str:
    if row is None or pd.isna(row["pct_change"]):
        return "—"
    if row["n"] > 1:
        text = f"{row['pct_change']:+.1f} ± {row['pct_std']:.1f}%"
    else:  # one pair (e.g. micro, one seed): a spread would be meaningless
        text = f"{row['pct_change']:+.1f}%"
    if not pd.isna(row["p_value"]):
        text += f" (p={row['p_value']:.2g})"
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
            for scope in dict.fromkeys(rows["scope"]):
                line = [scope]
                for loss in losses:
                    row = cells.get((scope, loss))
                    line.append(_cell(None if row is None else row["value"]))
                    if loss in COMPARED_LOSSES:
                        line.append(_change_cell(row))
                lines.append("| " + " | ".join(line) + " |")
            lines.append("")
    return "\n".join(lines)


_EXPLANATION = """\
Values are means over the test images (pooled over seeds). Scopes: each scored class; `macro`,
the per-image mean over classes (calibration errors over all classes, Dice over the classes
present), averaged over images; `micro`, the errors of the bins pooled over the whole test set
(mean over classes). Δ% is the per-image percentage change against the Dice+CE baseline of the
same seed, mean ± std over images, with the two-sided paired Wilcoxon signed-rank p-value over
images (micro: over seeds, no test). Lower is better for ECE, ACE and MCE; higher for Dice.
"""


def write_report(paths: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    """Write ``report.md``, ``report.csv`` and ``figures/`` for the runs under ``paths`` into
    ``out``; returns the table (:func:`report_table`)."""
    runs = collect_runs(paths)
    table = report_table(runs)
    out = Path(out)
    figures = _write_figures(runs, out / "figures")
    text = [
        "# calibtut report\n",
        f"{len(runs)} runs: " + ", ".join(sorted(run.name for run in runs)) + ".\n",
        _EXPLANATION,
        report_markdown(table),
    ]
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
    histograms, the reliability diagrams of the first test image and its overlays."""
    written: list[tuple[str, Path]] = []
    by_dataset: dict[str, list[RunDir]] = {}
    for run in runs:
        by_dataset.setdefault(run.config["dataset"], []).append(run)
    for dataset, group in by_dataset.items():
        losses = [loss for loss in LOSSES if any(r.config["loss"] == loss for r in group)]
        seeds = sorted(
            set.intersection(
                *(
                    {int(r.config["seed"]) for r in group if r.config["loss"] == loss}
                    for loss in losses
                )
            )
        )
        if not seeds:
            continue
        chosen = {
            loss: next(
                r for r in group if r.config["loss"] == loss and int(r.config["seed"]) == seeds[0]
            )
            for loss in losses
        }
        suffix = f"{dataset}, seed {seeds[0]}"
        figures = [
            (
                f"Dataset reliability histograms ({suffix})",
                f"{dataset}_reliability_histograms",
                plots.compare_run_reliability_histograms(chosen),
            ),
        ]
        bins = {loss: run.bins() for loss, run in chosen.items()}
        first_id = bins[losses[0]][1][0]
        if all(ids[0] == first_id for _, ids, _ in bins.values()):
            stats = {loss: b for loss, (b, _, _) in bins.items()}
            figures.append(
                (
                    f"Reliability diagrams of test image {first_id} ({suffix})",
                    f"{dataset}_reliability_diagrams",
                    plots.compare_reliability_diagrams(stats, bins[losses[0]][2], image=0),
                )
            )
        shared = sorted(set.intersection(*(set(run.prediction_ids()) for run in chosen.values())))
        if shared:
            figures.append(
                (
                    f"Test image {shared[0]} ({suffix})",
                    f"{dataset}_overlays",
                    plots.compare_run_overlays(chosen, image_id=shared[0]),
                )
            )
        for title, name, fig in figures:
            png, _ = plots.save_figure(fig, folder / name)
            written.append((title, png))
    return written
