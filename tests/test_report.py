"""calibtut.report: every number of the comparison table checked against a direct computation
from the run directories' files (numpy and scipy by hand), the Markdown, the written files, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fakes import evaluated_run
from reference import as_sums, direct_errors
from scipy.stats import t as t_distribution
from scipy.stats import wilcoxon

from calibtut.methods import LOSSES
from calibtut.report import (
    PHANTOM_NOTE,
    REPORT_COLUMNS,
    headline,
    report_markdown,
    report_table,
    write_report,
)
from calibtut.runs import RunDir

IMAGES = [f"img{i}" for i in range(8)]
CLASSES = ["organ", "ring"]  # scored classes 1 and 2; background (0) left out, as evaluation does
SEEDS = (0, 1)
NUM_BINS = 20


def make_run(root, loss: str, seed: int, images=IMAGES, dataset="synthetic", config=None) -> RunDir:
    """A run directory with random but valid per-image values, bins and noise floors."""
    rng = np.random.default_rng([LOSSES.index(loss), seed])
    shape = (len(images), len(CLASSES))
    empty = np.zeros(shape, dtype=bool)
    for i, image in enumerate(images):
        empty[i, 1] = image in ("img2", "img5")  # ring absent
    values = {
        "dice": np.where(empty, math.nan, rng.uniform(0.5, 0.95, shape)),
        "ece": rng.uniform(0.01, 0.2, shape),
        "ace": rng.uniform(0.05, 0.4, shape),
        "mce": rng.uniform(0.2, 0.9, shape),
    }
    label = np.zeros((8, 8), dtype=np.uint8)
    label[2:6, 2:6] = 1
    prediction = {
        "image": rng.normal(size=(8, 8)), "label": label, "prediction": label,
        "confidence": rng.uniform(0.5, 1, (8, 8)),
    }  # fmt: skip
    return evaluated_run(
        root, dataset, loss, seed, image_ids=list(images), classes=CLASSES, values=values,
        empty=empty, num_bins=NUM_BINS, predictions={images[0]: prediction}, config=config,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root, loss, seed) for seed in SEEDS for loss in LOSSES]


@pytest.fixture(scope="module")
def table(runs):
    return report_table(runs)


def cell(table, scope, metric, loss):
    rows = table[(table["scope"] == scope) & (table["metric"] == metric) & (table["loss"] == loss)]
    assert len(rows) == 1, (scope, metric, loss)
    return rows.iloc[0]


def per_image_values(runs, loss, scope, metric) -> dict[tuple[int, str], float]:
    """(seed, image) -> value, straight from per_image.csv: one class, or the paper's class mean."""
    out = {}
    for run in runs:
        if run.config["loss"] != loss:
            continue
        frame = run.results().per_image
        for image, group in frame.groupby("image_id"):
            if scope in CLASSES:
                value = group.loc[group["class_name"] == scope, metric].item()
            elif metric == "dice":
                value = group.loc[~group["empty"], "dice"].mean()
            else:
                value = group[metric].mean()
            out[(run.config["seed"], image)] = value
    return out


def t_test_by_hand(v: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test from the differences: t = mean / (sd / sqrt(n)), n - 1 degrees."""
    d = v - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    return 2 * float(t_distribution.sf(abs(t), d.size - 1))


def micro_value(run: RunDir, metric: str) -> float:
    """Errors of the pooled bins, by hand, averaged over classes; floors from the pooled draws."""
    results = run.results()
    pooled = as_sums(results.bins).sum(1, keepdims=True)
    if metric.endswith("_floor"):
        draws = results.draws.target_sums.double().numpy().sum(0)  # (C, K, bins)
        per_draw = [
            direct_errors(np.stack([pooled[0], draws[None, :, k], pooled[2]]))[metric[:3]]
            for k in range(draws.shape[1])
        ]
        return float(np.mean(np.mean(per_draw, axis=0)))
    return float(np.mean(direct_errors(pooled)[metric]))


@pytest.mark.parametrize("scope", [*CLASSES, "macro"])
@pytest.mark.parametrize("metric", ["ace_floor", "mce_floor"])
def test_floors_are_reported_for_every_scope_without_a_comparison(runs, table, scope, metric):
    for loss in LOSSES:
        values = per_image_values(runs, loss, scope, metric)
        row = cell(table, scope, metric, loss)
        assert row["value"] == pytest.approx(np.mean(list(values.values())))
        assert math.isnan(row["pct_change"]) and math.isnan(row["p_value"])
        assert math.isnan(row["p_wilcoxon"])


@pytest.mark.parametrize("scope", [*CLASSES, "macro"])
@pytest.mark.parametrize("metric", ["dice", "ece", "ace", "mce"])
def test_per_image_scopes_equal_a_direct_computation(runs, table, scope, metric):
    baseline = per_image_values(runs, "baseline", scope, metric)
    assert cell(table, scope, metric, "baseline")["value"] == pytest.approx(
        np.nanmean(list(baseline.values()))
    )
    assert math.isnan(cell(table, scope, metric, "baseline")["pct_change"])
    for loss in ("hard", "soft"):
        values = per_image_values(runs, loss, scope, metric)
        keys = [k for k in baseline if not (np.isnan(baseline[k]) or np.isnan(values[k]))]
        b = np.array([baseline[k] for k in keys])
        v = np.array([values[k] for k in keys])
        change = (v - b) / b * 100
        row = cell(table, scope, metric, loss)
        assert row["value"] == pytest.approx(np.nanmean(list(values.values())))
        assert row["pct_change"] == pytest.approx(change.mean())
        assert row["pct_std"] == pytest.approx(change.std())
        assert row["n"] == len(keys) == (12 if (scope == "ring" and metric == "dice") else 16)
        assert row["p_value"] == pytest.approx(t_test_by_hand(v, b), rel=1e-9)  # the paper's
        assert row["p_wilcoxon"] == pytest.approx(wilcoxon(v, b).pvalue)
        assert not row["phantom"]


@pytest.mark.parametrize("metric", ["ece", "ace", "mce", "ace_floor", "mce_floor"])
def test_micro_scope_equals_pooled_bins_by_hand(runs, table, metric):
    by = {(r.config["loss"], r.config["seed"]): micro_value(r, metric) for r in runs}
    for loss in LOSSES:
        row = cell(table, "micro", metric, loss)
        assert row["value"] == pytest.approx(np.mean([by[(loss, s)] for s in SEEDS]))
        if loss != "baseline" and not metric.endswith("_floor"):
            change = [
                (by[(loss, s)] - by[("baseline", s)]) / by[("baseline", s)] * 100 for s in SEEDS
            ]
            assert row["pct_change"] == pytest.approx(np.mean(change))
            assert row["n"] == len(SEEDS) and math.isnan(row["p_value"])  # no test over 2 seeds
            assert math.isnan(row["p_wilcoxon"])
    assert not ((table["scope"] == "micro") & (table["metric"] == "dice")).any()


def test_table_order_and_markdown(table):
    assert list(dict.fromkeys(table["scope"])) == [*CLASSES, "macro", "micro"]
    assert list(dict.fromkeys(table["metric"])) == [
        "dice", "ece", "ace", "mce", "ace_floor", "mce_floor"
    ]  # fmt: skip
    text = report_markdown(table)
    assert "## synthetic" in text and "### ACE" in text
    assert "| scope | baseline | hard | Δ% hard | soft | Δ% soft |" in text
    soft = cell(table, "organ", "ace", "soft")
    assert list(table.columns) == list(REPORT_COLUMNS)
    expected = (
        f"{soft['pct_change']:+.1f} ± {soft['pct_std']:.1f}% "
        f"(p={soft['p_value']:.2g}, p_W={soft['p_wilcoxon']:.2g})"
    )
    line = next(
        line for line in text.splitlines() if line.startswith("| organ |") and expected in line
    )
    baseline = cell(table, "organ", "ace", "baseline")["value"]
    floor = cell(table, "organ", "ace_floor", "baseline")["value"]
    assert f"| organ | {baseline:.4f} [{floor:.3f}] |" in line  # the floor beside the ACE
    assert "### ACE floor" not in text
    assert PHANTOM_NOTE not in text


def test_write_report_files(runs, tmp_path):
    out = tmp_path / "report"
    table = write_report([runs[0].path.parents[1]], out)
    text = (out / "report.md").read_text()
    assert report_markdown(table) in text and "6 runs" in text
    written = pd.read_csv(out / "report.csv")
    pd.testing.assert_frame_equal(
        written[["pct_change", "value"]],
        table[["pct_change", "value"]].astype(float),
        check_exact=False,
    )
    assert "mean ± std of those per-image ratios" in text and "noise floor" in text
    assert "paired t-test" in text and "Wilcoxon signed-rank" in text  # what p and p_W are
    assert "t-test p = 0.65 but Wilcoxon p = 0.027" in text  # why they can disagree
    for name in ("reliability_histograms", "reliability_diagrams", "paired_changes", "overlays"):
        assert (out / "figures" / f"synthetic_{name}.png").is_file()
        assert f"figures/synthetic_{name}.png" in text


def test_phantom_runs_are_a_pipeline_check_without_statistics(runs, tmp_path):
    """Runs trained on a phantom keep their numbers and Δ% but carry no p-value; a real dataset
    reported beside them keeps its tests."""
    phantom = [
        make_run(tmp_path / "runs", loss, seed, dataset="acdc", config={"phantom": True})
        for seed in SEEDS
        for loss in LOSSES
    ]
    table = report_table([*phantom, *runs])
    acdc, synthetic = table[table["dataset"] == "acdc"], table[table["dataset"] == "synthetic"]
    assert acdc["phantom"].all() and not synthetic["phantom"].any()
    compared = acdc[acdc["loss"] != "baseline"]
    assert compared["p_value"].isna().all() and compared["p_wilcoxon"].isna().all()
    real = report_table(runs)
    numbers = ["value", "pct_change", "pct_std", "n"]
    pd.testing.assert_frame_equal(  # the same files as the synthetic runs: the same numbers
        acdc[numbers].reset_index(drop=True), real[numbers].reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(synthetic.reset_index(drop=True), real)
    text = report_markdown(table)
    acdc_text, synthetic_text = text.split("## synthetic")
    assert "## acdc" in acdc_text and PHANTOM_NOTE in acdc_text
    assert "(p=" not in acdc_text and "%" in acdc_text  # Δ% shown, without tests
    assert PHANTOM_NOTE not in synthetic_text and "(p=" in synthetic_text
    out = tmp_path / "report"
    write_report([p.path for p in phantom], out)
    text = (out / "report.md").read_text()
    assert "## acdc\n\n*phantom data: a pipeline check, no statistics*" in text


def test_baseline_only_has_no_comparison(tmp_path):
    run = make_run(tmp_path, "baseline", 0)
    table = report_table([run])
    assert table["pct_change"].isna().all() and set(table["loss"]) == {"baseline"}
    assert "Δ%" not in report_markdown(table)


def test_headline_is_the_macro_scope(runs, table):
    summary = headline(runs)
    assert list(summary.index) == list(LOSSES)
    assert list(summary.columns) == ["dice", "ece", "ace", "mce", "ace_floor", "mce_floor"]
    for loss in LOSSES:
        assert summary.loc[loss, "ace"] == pytest.approx(cell(table, "macro", "ace", loss)["value"])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    lonely = [make_run(tmp_path / "x", "baseline", 0), make_run(tmp_path / "x", "soft", 1)]
    with pytest.raises(ValueError, match="no baseline run for the soft run"):
        report_table(lonely)
    other_images = [
        make_run(tmp_path / "y", "baseline", 0),
        make_run(tmp_path / "y", "hard", 0, IMAGES[:-1]),
    ]
    with pytest.raises(ValueError, match="missing from the hard run"):
        report_table(other_images)


def test_change_cells_show_a_spread_only_over_several_pairs():
    from calibtut.report import _change_cell

    several = pd.Series({"pct_change": -12.345, "pct_std": 3.21, "n": 5, "p_value": 0.0625})
    single = pd.Series({"pct_change": -31.8, "pct_std": 0.0, "n": 1, "p_value": float("nan")})
    assert _change_cell(several) == "-12.3 ± 3.2% (p=0.062)"
    assert _change_cell(single) == "-31.8%"
