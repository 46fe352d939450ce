"""calibtut.paper and its figure: the paper's table reproduced from its published per-image files,
every cell checked against an independent computation, the loader's cache and errors, and the same
statistics on calibtut run directories checked by hand."""

from __future__ import annotations

import contextlib
import csv
import functools
import http.server
import math
import shutil
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import (
    COMPLETE_CASES_DATASETS,
    COMPLETE_CASES_FOLDER,
    DICE_FACTORS,
    HARD_FACTORS,
    MISSING_FLAGS,
    PAPER_BUNDLES,
    PAPER_LOSS_DIRS,
    PAPER_METRIC_FILES,
    RERUN_FACTOR,
    RESULTS_FOLDER,
    SOFT_FACTOR,
    complete_images,
    evaluated_run,
    with_config,
    write_paper_results,
)
from scipy.stats import t as t_distribution

from calibtut import paper
from calibtut.plots import plot_per_image_distributions
from calibtut.runs import RunDir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "paper-results"
ACDC_DICE = "bundles/acdc17_baseline_dice_ce_1/seed_12345/inference_results/mean_dice_raw.csv"
SOURCES = ["fixture", "published"]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    """A small copy of the paper's results in the authors' layout, with hand-known changes."""
    return write_paper_results(tmp_path_factory.mktemp("paper-results"))


@pytest.fixture(scope="module")
def shared_root() -> Path:
    if not SHARED.is_dir():
        pytest.skip(
            f"checks of the published numbers need the authors' files at {SHARED}; the same "
            "code is tested on the fixture in the authors' layout"
        )
    return SHARED


@pytest.fixture(scope="module", params=SOURCES)
def results_root(request) -> Path:
    """Every layout test runs on the fixture, and on the published files when they are here."""
    name = "fixture_root" if request.param == "fixture" else "shared_root"
    return request.getfixturevalue(name)


@pytest.fixture(scope="module")
def paper_table(shared_root: Path) -> pd.DataFrame:
    return paper.percentage_change_table(shared_root)


@pytest.fixture(scope="module")
def complete_table(shared_root: Path) -> pd.DataFrame:
    return paper.complete_cases_table(shared_root)


# --- the paper's numbers ----------------------------------------------------------------------

PUBLISHED = [  # (dataset, metric, loss, mean, std) as printed in the paper
    ("acdc", "ace", "hard", -22.36, 15.05),
    ("acdc", "ace", "soft", -41.18, 16.09),
    ("acdc", "dice", "hard", 0.07, 2.42),
    ("acdc", "dice", "soft", -1.09, 2.35),
    ("amos", "ace", "hard", -2.83, 12.41),
    ("amos", "ace", "soft", -17.57, 13.92),
]


@pytest.mark.parametrize(("dataset", "metric", "loss", "mean", "std"), PUBLISHED)
def test_table_reproduces_published_cells(paper_table, dataset, metric, loss, mean, std):
    row = paper_table.query("dataset == @dataset and metric == @metric and loss == @loss")
    assert len(row) == 1
    assert round(float(row["mean"].iloc[0]), 2) == mean
    assert round(float(row["std"].iloc[0]), 2) == std


def test_fixture_table_equals_its_hand_known_changes(fixture_root):
    """The fixture's losses multiply the baseline by chosen factors (tests/fakes.py)."""
    table = paper.percentage_change_table(fixture_root)
    hard_pct = [100 * (f - 1) for f in HARD_FACTORS]
    for row in table.itertuples(index=False):
        if row.metric == "dice":
            expected = 0.0 if row.loss == "hard" else 100 * (DICE_FACTORS["soft"] - 1)
            assert row.mean == pytest.approx(expected, abs=1e-4) and row.std < 1e-4
        elif row.loss == "hard":
            assert row.mean == pytest.approx(statistics.fmean(hard_pct), abs=1e-4)
            assert row.std == pytest.approx(statistics.pstdev(hard_pct), abs=1e-4)
        else:
            assert row.mean == pytest.approx(100 * (SOFT_FACTOR - 1), abs=1e-4)
    counts = table.drop_duplicates("dataset").set_index("dataset")["n"].to_dict()
    assert counts == {"acdc": 6, "amos": 6, "kits": 6, "brats": 6, "all": 24}


# The paired t-test p-values of the authors' results_scripts/p-val_results.md (their
# calc_p_vals.py: scipy.stats.ttest_rel on the `mean` column), printed to 4 significant digits:
# (dataset, metric) -> (baseline vs hard, baseline vs soft).
PUBLISHED_T_TEST = {
    ("amos", "ace"): (0.01148, 3.839e-22),
    ("amos", "ece"): (0.2244, 0.08832),
    ("amos", "mce"): (0.0009338, 1.932e-28),
    ("amos", "dice"): (0.02925, 1.13e-07),
    ("acdc", "ace"): (6.991e-26, 1.385e-42),
    ("acdc", "ece"): (3.08e-23, 2.092e-26),
    ("acdc", "mce"): (2.603e-28, 1.348e-48),
    ("acdc", "dice"): (0.981, 1.148e-06),
    ("kits", "ace"): (4.153e-05, 3.962e-11),
    ("kits", "ece"): (0.2911, 0.7587),
    ("kits", "mce"): (8.575e-08, 1.479e-14),
    ("kits", "dice"): (0.6471, 0.8972),
    ("brats", "ace"): (8.048e-05, 1.273e-26),
    ("brats", "ece"): (0.6345, 0.5674),
    ("brats", "mce"): (4.976e-06, 9.942e-32),
    ("brats", "dice"): (0.8557, 1.773e-08),
}


@pytest.mark.parametrize(("dataset", "metric"), list(PUBLISHED_T_TEST))
def test_p_value_is_the_papers_t_test(paper_table, shared_root, dataset, metric):
    for loss, published in zip(("hard", "soft"), PUBLISHED_T_TEST[dataset, metric], strict=True):
        row = paper_table.query("dataset == @dataset and metric == @metric and loss == @loss")
        p_value = float(row["p_value"].iloc[0])
        assert float(f"{p_value:.3e}") == published, (loss, p_value)
        base = dict(_reference_means(shared_root, dataset, "baseline", metric))
        pairs = [
            (v, base[name]) for name, v in _reference_means(shared_root, dataset, loss, metric)
        ]
        by_hand = _reference_t_p([v for v, _ in pairs], [b for _, b in pairs])
        assert float(f"{by_hand:.3e}") == published


def test_where_the_t_test_and_the_rank_test_disagree(paper_table):
    """Heavy tails: KiTS Dice (hard) and BraTS ECE (hard) differ for the rank test only."""
    cells = paper_table.set_index(["dataset", "metric", "loss"])
    assert round(cells.loc[("kits", "dice", "hard"), "p_value"], 2) == 0.65
    assert round(cells.loc[("kits", "dice", "hard"), "p_wilcoxon"], 3) == 0.027
    assert round(cells.loc[("brats", "ece", "hard"), "p_value"], 2) == 0.63
    assert round(cells.loc[("brats", "ece", "hard"), "p_wilcoxon"], 4) == 0.0013


# The "Results for cases with complete ground truth classes" of the authors'
# results_scripts/perc-change_results.md: (dataset, metric) -> (hard mean, std, soft mean, std).
PUBLISHED_COMPLETE_CASES = {
    ("amos", "ace"): (-3.38, 12.59, -18.70, 12.98),
    ("amos", "ece"): (2.62, 21.47, -4.43, 20.20),
    ("amos", "mce"): (-4.08, 10.81, -19.73, 10.78),
    ("amos", "dice"): (-0.18, 0.98, -0.64, 1.29),
    ("acdc", "ace"): (-22.36, 15.05, -41.18, 16.09),
    ("acdc", "ece"): (-20.45, 17.08, -33.61, 20.00),
    ("acdc", "mce"): (-23.44, 14.78, -44.53, 13.90),
    ("acdc", "dice"): (0.07, 2.42, -1.09, 2.35),
    ("kits", "ace"): (-15.50, 40.60, -33.42, 30.55),
    ("kits", "ece"): (34.14, 87.90, -2.44, 65.66),
    ("kits", "mce"): (-23.32, 30.92, -38.14, 25.77),
    ("kits", "dice"): (1.40, 9.96, 0.55, 9.96),
    ("brats", "ace"): (-2.44, 40.26, -28.26, 31.16),
    ("brats", "ece"): (-0.49, 51.40, 14.06, 65.99),
    ("brats", "mce"): (-5.38, 33.41, -29.97, 27.45),
    ("brats", "dice"): (-0.05, 3.48, -2.33, 8.55),
    ("all", "ace"): (-8.69, 32.62, -29.88, 26.29),
    ("all", "ece"): (-1.05, 48.70, -2.73, 54.35),
    ("all", "mce"): (-11.22, 27.52, -32.14, 23.54),
    ("all", "dice"): (0.10, 4.17, -1.39, 6.78),
}


def test_complete_cases_table_reproduces_the_published_section(complete_table):
    cells = complete_table.set_index(["dataset", "metric", "loss"])
    for (dataset, metric), (hard, hard_std, soft, soft_std) in PUBLISHED_COMPLETE_CASES.items():
        for loss, mean, std in (("hard", hard, hard_std), ("soft", soft, soft_std)):
            row = cells.loc[(dataset, metric, loss)]
            assert (round(row["mean"], 2), round(row["std"], 2)) == (mean, std), (dataset, metric)
    counts = complete_table.drop_duplicates("dataset").set_index("dataset")["n"].to_dict()
    assert counts == {"acdc": 100, "amos": 87, "kits": 43, "brats": 192, "all": 422}


def test_fixture_complete_cases_equal_their_hand_known_changes(fixture_root):
    table = paper.complete_cases_table(fixture_root).set_index(["dataset", "metric", "loss"])
    for dataset in PAPER_BUNDLES:
        complete = complete_images(dataset)
        hard_pct = [100 * (HARD_FACTORS[i] - 1) for i in complete]
        row = table.loc[(dataset, "ace", "hard")]
        assert row["n"] == len(complete)
        assert row["mean"] == pytest.approx(statistics.fmean(hard_pct), abs=1e-4)
        assert row["std"] == pytest.approx(statistics.pstdev(hard_pct), abs=1e-4)
        assert table.loc[(dataset, "ace", "soft"), "mean"] == pytest.approx(-40.0, abs=1e-4)
    assert table.loc[("all", "ace", "hard"), "n"] == sum(
        len(complete_images(d)) for d in PAPER_BUNDLES
    )
    # the complete-case folder is read (its values are the re-run ones), ACDC's full results
    full = paper.paper_frame(fixture_root).set_index(["dataset", "loss", "metric", "image_id"])
    complete = paper.paper_frame(fixture_root, complete_cases=True)
    complete = complete.set_index(["dataset", "loss", "metric", "image_id"])["value"]
    ratio = complete / full["value"].loc[complete.index]
    by_dataset = ratio.groupby(level="dataset")
    assert by_dataset.min()["acdc"] == by_dataset.max()["acdc"] == 1.0
    for dataset in COMPLETE_CASES_DATASETS:
        assert by_dataset.min()[dataset] == pytest.approx(RERUN_FACTOR, rel=1e-6)
        assert by_dataset.max()[dataset] == pytest.approx(RERUN_FACTOR, rel=1e-6)


def test_complete_cases_are_the_images_without_a_missing_class(results_root):
    for dataset in COMPLETE_CASES_DATASETS:
        flags = _reference_flags(results_root, dataset)
        complete = {name for name, absent in flags.items() if not absent}
        in_folder = _reference_flags(results_root, dataset, complete=True)
        assert set(in_folder) == complete and not any(in_folder.values())
        assert {
            name for name, _ in _reference_means(results_root, dataset, "soft", "ace", True)
        } == (complete)
    assert not any(_reference_flags(results_root, "acdc").values())  # ACDC: complete, no folder


def test_complete_cases_refuse_an_incomplete_dataset_without_its_folder(tmp_path):
    root = write_paper_results(tmp_path / "copy")
    flags = _results_path(root, "acdc", "baseline", "missing_classes")
    lines = flags.read_text().splitlines()
    lines[2] = lines[2].replace(",0,", ",1,", 1)
    flags.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="acdc has no complete-cases results, yet 1 of its"):
        paper.complete_cases_table(root)
    shutil.rmtree(_results_path(root, "kits", "soft", "macro_ace", True).parent)
    with pytest.raises(FileNotFoundError, match=COMPLETE_CASES_FOLDER):
        paper.paper_frame(root, datasets=["kits"], complete_cases=True)


# --- the missing-classes report -----------------------------------------------------------------

# The authors' results_scripts/missing_classes_report.md: per dataset the classes some test images
# lack (with the count), and the incomplete images of all test images.
PUBLISHED_MISSING = {
    "acdc": ({}, 0, 100),
    "amos": (
        {"right_kidney": 2, "gallbladder": 7, "stomach": 1, "duodenum": 1, "bladder": 1,
         "prostate/uterus": 3},
        13, 100,
    ),
    "kits": ({"cyst": 55}, 55, 98),
    "brats": ({"Necrotic Tumour Core": 7, "Enhancing Tumour": 1}, 8, 200),
}  # fmt: skip


def _assert_report(report: paper.MissingClasses, expected: dict) -> None:
    assert list(report.per_class.columns) == list(paper.MISSING_CLASS_COLUMNS)
    assert list(report.cases.columns) == list(paper.CASE_COUNT_COLUMNS)
    assert list(report.incomplete_images.columns) == list(paper.INCOMPLETE_CASE_COLUMNS)
    for dataset, (missing, incomplete, images) in expected.items():
        rows = report.per_class[report.per_class["dataset"] == dataset]
        assert list(rows["class_name"]) == list(paper.PAPER_FLAG_CLASSES[dataset])
        assert (rows["images"] == images).all()
        assert dict(zip(rows["class_name"], rows["missing"], strict=True)) == {
            name: missing.get(name, 0) for name in paper.PAPER_FLAG_CLASSES[dataset]
        }
        case = report.cases.set_index("dataset").loc[dataset]
        assert (case["incomplete"], case["images"]) == (incomplete, images)
        assert (report.incomplete_images["dataset"] == dataset).sum() == incomplete


def test_missing_classes_report_reproduces_the_published_one(shared_root):
    report = paper.missing_classes_report(shared_root)
    _assert_report(report, PUBLISHED_MISSING)
    images = report.incomplete_images.set_index("image_id")["missing_classes"]
    assert images["amos_0029.nii.gz"] == "prostate/uterus"  # its NaN Dice class
    assert images["amos_0056.nii.gz"] == "gallbladder; duodenum"
    markdown = report.markdown()
    assert "### kits" in markdown and "| cyst | 55 |" in markdown
    assert "**Incomplete cases:** 13/100" in markdown


def test_missing_classes_report_on_the_fixture(fixture_root):
    expected = {}
    for dataset, flags in MISSING_FLAGS.items():
        names = paper.PAPER_FLAG_CLASSES[dataset]
        missing = {}
        for _, c in flags:
            missing[names[c]] = missing.get(names[c], 0) + 1
        expected[dataset] = (missing, len({image for image, _ in flags}), 6)
    report = paper.missing_classes_report(fixture_root)
    _assert_report(report, expected)
    kits = report.incomplete_images[report.incomplete_images["dataset"] == "kits"]
    assert list(kits["image_id"]) == ["kits_0000.nii.gz", "kits_0003.nii.gz"]
    assert set(kits["missing_classes"]) == {"cyst"}
    only = paper.missing_classes_report(fixture_root, datasets=["brats"])
    assert list(only.cases["dataset"]) == ["brats"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("filename,class0,mean\nx,0,0\n", "has 1 classes, expected 3"),
        ("filename,class0,class1,class2,mean\nx,0,0.5,0,0.17\n", "flags other than 0 and 1"),
    ],
)
def test_missing_classes_report_errors(tmp_path, content, message):
    path = _results_path(tmp_path, "kits", "baseline", "missing_classes")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        paper.missing_classes_report(tmp_path, datasets=["kits"])


def _results_path(root: Path, dataset: str, loss: str, stem: str, complete: bool = False) -> Path:
    """Where the authors keep a file; complete cases: their folder, ACDC's full results (complete)."""
    bundle = PAPER_BUNDLES[dataset][0].format(PAPER_LOSS_DIRS[loss])
    folder = (
        COMPLETE_CASES_FOLDER if complete and dataset in COMPLETE_CASES_DATASETS else RESULTS_FOLDER
    )
    return root / "bundles" / bundle / "seed_12345" / folder / f"{stem}_raw.csv"


def _reference_means(
    root: Path, dataset: str, loss: str, metric: str, complete: bool = False
) -> list[tuple[str, float]]:
    """(filename, mean column) per row, read with the csv module alone."""
    path = _results_path(root, dataset, loss, PAPER_METRIC_FILES[metric], complete)
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    n_classes = sum(name.startswith("class") for name in header)
    return [(row[0], float(row[n_classes + 1])) for row in rows]


def _reference_flags(root: Path, dataset: str, complete: bool = False) -> dict[str, list[int]]:
    """filename -> the indices of the classes flagged absent, with the csv module alone."""
    with _results_path(root, dataset, "baseline", "missing_classes", complete).open() as handle:
        header, *rows = list(csv.reader(handle))
    n_classes = sum(name.startswith("class") for name in header)
    return {row[0]: [c for c in range(n_classes) if float(row[1 + c]) == 1] for row in rows}


def _reference_t_p(values: list[float], baselines: list[float]) -> float:
    """Two-sided paired t-test by hand: t = mean(d) / (sd(d) / sqrt(n)) on the differences
    d = value - baseline, sd with n - 1, p = 2 P(T > |t|) for Student's t with n - 1 degrees."""
    diffs = [v - b for v, b in zip(values, baselines, strict=True)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return 2 * float(t_distribution.sf(abs(t), n - 1))


def _reference_wilcoxon_p(values: list[float], baselines: list[float]) -> float:
    """Two-sided signed-rank test, zero differences dropped: the exact distribution of the rank
    sum (by dynamic programming) for up to 50 untied differences, else the normal approximation
    with tie correction (scipy's ``method="auto"``)."""
    diffs = [v - b for v, b in zip(values, baselines, strict=True) if v != b]
    n = len(diffs)
    if n == 0:
        return 1.0
    order = sorted(range(n), key=lambda i: abs(diffs[i]))
    ranks = [0.0] * n
    tie_sizes = []
    start = 0
    while start < n:
        stop = start
        while stop + 1 < n and abs(diffs[order[stop + 1]]) == abs(diffs[order[start]]):
            stop += 1
        for k in range(start, stop + 1):
            ranks[order[k]] = (start + stop) / 2 + 1
        tie_sizes.append(stop - start + 1)
        start = stop + 1
    r_plus = sum(rank for rank, d in zip(ranks, diffs, strict=True) if d > 0)
    if n <= 50 and max(tie_sizes) == 1:
        ways = [1] + [0] * (
            n * (n + 1) // 2
        )  # ways[s]: sign patterns whose positive ranks sum to s
        for rank in range(1, n + 1):
            for total in range(len(ways) - 1, rank - 1, -1):
                ways[total] += ways[total - rank]
        low = min(r_plus, n * (n + 1) / 2 - r_plus)
        return min(1.0, 2 * sum(ways[: int(low) + 1]) / 2**n)
    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in tie_sizes) / 48
    z = (r_plus - n * (n + 1) / 4) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def _reference_table(
    root: Path, complete: bool = False
) -> dict[tuple[str, str, str], tuple[float, float, int, float, float]]:
    """(dataset, metric, loss) -> mean, pstdev, n, t-test p, Wilcoxon p, from the files alone."""
    cells = {}
    for metric in PAPER_METRIC_FILES:
        for loss in ("hard", "soft"):
            pooled_pct, pooled_values, pooled_baselines = [], [], []
            for dataset in PAPER_BUNDLES:
                base = dict(_reference_means(root, dataset, "baseline", metric, complete))
                pairs = [
                    (value, base[name])
                    for name, value in _reference_means(root, dataset, loss, metric, complete)
                ]
                assert len(pairs) == len(base)
                pct = [(v - b) / b * 100 for v, b in pairs]
                values, baselines = [v for v, _ in pairs], [b for _, b in pairs]
                cells[dataset, metric, loss] = (
                    statistics.fmean(pct),
                    statistics.pstdev(pct),
                    len(pct),
                    _reference_t_p(values, baselines),
                    _reference_wilcoxon_p(values, baselines),
                )
                pooled_pct += pct
                pooled_values += values
                pooled_baselines += baselines
            cells["all", metric, loss] = (
                statistics.fmean(pooled_pct),
                statistics.pstdev(pooled_pct),
                len(pooled_pct),
                _reference_t_p(pooled_values, pooled_baselines),
                _reference_wilcoxon_p(pooled_values, pooled_baselines),
            )
    return cells


def _assert_table_matches_reference(table: pd.DataFrame, reference: dict) -> None:
    assert len(table) == len(reference) == 5 * 4 * 2
    assert list(table.columns) == list(paper.TABLE_COLUMNS)
    assert (table["source"] == "paper").all()
    for row in table.itertuples(index=False):
        mean, std, n, p_t, p_w = reference[row.dataset, row.metric, row.loss]
        assert row.n == n
        assert row.mean == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert row.std == pytest.approx(std, rel=1e-9, abs=1e-9)
        assert row.p_value == pytest.approx(p_t, rel=1e-6, abs=1e-300)
        assert row.p_wilcoxon == pytest.approx(p_w, rel=1e-6)


def test_every_cell_matches_a_direct_computation(results_root):
    table = paper.percentage_change_table(results_root)
    _assert_table_matches_reference(table, _reference_table(results_root))


def test_complete_cases_table_matches_a_direct_computation(results_root):
    table = paper.complete_cases_table(results_root)
    _assert_table_matches_reference(table, _reference_table(results_root, complete=True))


def test_published_image_counts(paper_table):
    counts = paper_table.drop_duplicates("dataset").set_index("dataset")["n"].to_dict()
    assert counts == {"acdc": 100, "amos": 100, "kits": 98, "brats": 200, "all": 498}


def test_markdown_rendering(paper_table):
    lines = paper.percentage_change_markdown(paper_table).splitlines()
    assert lines[0] == (
        "| source | dataset | ACE hard | ACE soft | ECE hard | ECE soft "
        "| MCE hard | MCE soft | Dice hard | Dice soft |"
    )
    assert lines[1] == "|---|---|" + "---:|" * 8
    assert [line.split(" | ")[1] for line in lines[2:]] == ["acdc", "amos", "kits", "brats", "all"]
    acdc = lines[2].split(" | ")
    assert acdc[2:4] == ["-22.36 ± 15.05", "-41.18 ± 16.09"]
    assert acdc[8:10] == ["+0.07 ± 2.42", "-1.09 ± 2.35 |"]


def test_paper_frame_maps_names_and_uses_the_mean_column(results_root):
    frame = paper.paper_frame(results_root)
    assert list(frame.columns) == list(paper.FRAME_COLUMNS)
    per_dataset = frame[frame["metric"] == "dice"].groupby(["dataset", "loss"]).size()
    assert len(frame) == 4 * per_dataset.sum()
    assert set(frame["dataset"]) == {"acdc", "amos", "kits", "brats"}
    assert set(frame["loss"]) == {"baseline", "hard", "soft"}
    assert set(frame["metric"]) == set(paper.METRICS) == {"ace", "ece", "mce", "dice"}
    assert set(frame["seed"]) == {12345}
    assert not frame["value"].isna().any()


def test_published_dice_mean_skips_an_absent_class(shared_root):
    frame = paper.paper_frame(shared_root)
    assert len(frame) == 3 * 4 * (100 + 100 + 98 + 200)
    dice = frame.query("dataset == 'amos' and loss == 'baseline' and metric == 'dice'")
    # amos_0029 lacks class 14 (NaN Dice): its mean is over the other 14 classes
    assert dice.set_index("image_id").loc["amos_0029.nii.gz", "value"] == pytest.approx(0.920343)


def test_read_paper_csv_columns_and_missing_classes(results_root):
    missing = paper.read_paper_csv("amos", "baseline", "missing_classes", results_root)
    n = sum(column.startswith("class") for column in missing.columns)
    assert list(missing.columns) == ["image_id", *(f"class{i}" for i in range(n)), "mean"]
    flagged = missing.set_index("image_id")
    image, column = next(
        (i, c) for i in flagged.index for c in flagged.columns[:-1] if flagged.loc[i, c] == 1
    )
    dice = paper.read_paper_csv("amos", "baseline", "dice", results_root).set_index("image_id")
    assert math.isnan(dice.loc[image, column])  # the absent class has no Dice
    present = [c for c in dice.columns[:-1] if c != column]
    assert dice.loc[image, "mean"] == pytest.approx(dice.loc[image, present].mean(), abs=1e-6)


# --- loader errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "loss", "metric", "message"),
    [
        (
            "acdc17",
            "soft",
            "dice",
            "unknown dataset 'acdc17'; expected one of acdc, amos, kits, brats",
        ),
        (
            "acdc",
            "softl1ace",
            "dice",
            "unknown loss 'softl1ace'; expected one of baseline, hard, soft",
        ),
        ("acdc", "soft", "mean_dice", "unknown metric 'mean_dice'"),
    ],
)
def test_unknown_names_are_rejected(tmp_path, dataset, loss, metric, message):
    with pytest.raises(ValueError, match=message):
        paper.read_paper_csv(dataset, loss, metric, tmp_path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="acdc17_soft.*mean_dice_raw.csv not found: root="):
        paper.read_paper_csv("acdc", "soft", "dice", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("name,class0,mean\nx,1,1\n", "is not 'filename,class0,...,classN-1,mean'"),
        ("filename,class0,class1\nx,1,1\n", "is not 'filename,class0"),
        ("filename,class0,mean,mean\n", "no image rows"),
        ("filename,class0,mean,mean\nx,0.1,0.1\ny,0.2\n", "line 3: 2 fields, expected 3"),
        ("filename,class0,mean\nx,0.1,abc\n", "line 2: non-numeric value"),
        ("filename,class0,mean\nx,0.1,0.1\nx,0.2,0.2\n", "image 'x' appears more than once"),
        ("filename,class0,mean\n,0.1,0.1\n", "line 2: empty filename"),
    ],
)
def test_malformed_csv_is_rejected(tmp_path, content, message):
    path = tmp_path / ACDC_DICE
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        paper.read_paper_csv("acdc", "baseline", "dice", tmp_path)
    assert str(path) in str(error.value)


# --- download and cache ------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _TruncatingHandler(_QuietHandler):
    """Announces the whole file, sends half of it and hangs up."""

    root: Path

    def do_GET(self) -> None:
        body = (self.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])


class _GarbageHandler(_QuietHandler):
    def do_GET(self) -> None:
        body = b"<html>rate limited</html>\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def _serve(handler) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_offline_error_names_the_url_and_root(tmp_path):
    with pytest.raises(ConnectionError) as error:
        paper.read_paper_csv(
            "acdc", "baseline", "dice", base_url="http://127.0.0.1:9/", cache_dir=tmp_path
        )
    assert f"http://127.0.0.1:9/{ACDC_DICE}" in str(error.value)
    # one hint for both ways in: the API's root= and the notebooks' paper_root
    assert "pass root=" in str(error.value) and "paper_root parameter" in str(error.value)
    assert _files(tmp_path) == []


def test_download_is_cached_and_reused_offline(fixture_root, tmp_path):
    shared_root = fixture_root
    handler = functools.partial(_QuietHandler, directory=str(shared_root))
    with _serve(handler) as base_url:
        first = paper.read_paper_csv(
            "acdc", "baseline", "dice", base_url=base_url, cache_dir=tmp_path
        )
    (cached,) = _files(tmp_path)
    assert cached.as_posix().endswith(ACDC_DICE)
    assert cached.read_bytes() == (shared_root / ACDC_DICE).read_bytes()
    # the server is gone: the second read can only come from the cache
    again = paper.read_paper_csv("acdc", "baseline", "dice", base_url=base_url, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(
        first, paper.read_paper_csv("acdc", "baseline", "dice", shared_root)
    )


def test_cache_location_follows_calibtut_cache(fixture_root, tmp_path, monkeypatch):
    shared_root = fixture_root
    monkeypatch.setenv("CALIBTUT_CACHE", str(tmp_path))
    assert paper.default_cache_dir() == tmp_path / "paper-results"
    path = paper.paper_csv_path("kits", "hard", "ace", base_url=shared_root.as_uri() + "/")
    assert path.is_relative_to(tmp_path / "paper-results")
    relative = Path(*path.relative_to(tmp_path / "paper-results").parts[1:])  # after the URL key
    assert relative.as_posix() == paper.paper_relative_path("kits", "hard", "ace")
    assert path.read_bytes() == (shared_root / relative).read_bytes()


def test_missing_remote_file_is_file_not_found(tmp_path):
    with _serve(functools.partial(_QuietHandler, directory=str(tmp_path / "empty"))) as base_url:
        with pytest.raises(FileNotFoundError, match="HTTP 404"):
            paper.read_paper_csv(
                "acdc", "baseline", "dice", base_url=base_url, cache_dir=tmp_path / "c"
            )
    assert not (tmp_path / "c").exists() or _files(tmp_path / "c") == []


def test_truncated_download_leaves_nothing_in_the_cache(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setattr(_TruncatingHandler, "root", fixture_root, raising=False)
    with _serve(_TruncatingHandler) as base_url:
        with pytest.raises(ConnectionError, match="IncompleteRead"):
            paper.read_paper_csv("acdc", "baseline", "dice", base_url=base_url, cache_dir=tmp_path)
    assert _files(tmp_path) == []


def test_unreadable_download_is_not_cached(tmp_path):
    with _serve(_GarbageHandler) as base_url:
        with pytest.raises(ValueError, match="is not 'filename,class0"):
            paper.read_paper_csv("acdc", "baseline", "dice", base_url=base_url, cache_dir=tmp_path)
    assert _files(tmp_path) == []


# --- calibtut run directories ------------------------------------------------------------------

# (image, class): (ace, ece, mce, dice, empty); ece is NaN once, dice recorded for an empty class
BASELINE = {
    ("a", 0): (0.20, 0.02, 0.40, 0.80, False),
    ("a", 1): (0.10, 0.01, 0.20, 0.60, False),
    ("b", 0): (0.30, 0.03, 0.60, 0.90, False),
    ("b", 1): (0.50, 0.05, 1.00, float("nan"), True),
    ("c", 0): (0.40, 0.04, 0.80, 0.50, False),
    ("c", 1): (0.20, float("nan"), 0.40, 0.70, False),
    ("d", 0): (0.10, 0.01, 0.20, 0.00, False),
    ("d", 1): (0.30, 0.03, 0.60, 0.00, False),
}
SOFT = {
    ("a", 0): (0.05, 0.005, 0.10, 0.80, False),
    ("a", 1): (0.10, 0.010, 0.20, 0.74, False),
    ("b", 0): (0.20, 0.020, 0.40, 0.99, False),
    ("b", 1): (0.40, 0.040, 0.80, 0.00, True),
    ("c", 0): (0.15, 0.015, 0.30, 0.45, False),
    ("c", 1): (0.15, 0.015, 0.30, 0.45, False),
    ("d", 0): (0.12, 0.012, 0.24, 0.20, False),
    ("d", 1): (0.10, 0.010, 0.20, 0.40, False),
}
# Per image (a, b, c, d), worked by hand: ACE baseline .15 .40 .30 .20 -> soft .075 .30 .15 .11;
# ECE like ACE/10 but c's baseline is .04 (NaN class skipped); MCE = 2 ACE; Dice skips b's empty
# class (baseline .70 .90 .60 0 -> soft .77 .99 .45 .30) and image d (baseline 0: undefined).
HAND_PCT = {
    "ace": [-50.0, -25.0, -50.0, -45.0],
    "ece": [-50.0, -25.0, -62.5, -45.0],
    "mce": [-50.0, -25.0, -50.0, -45.0],
    "dice": [10.0, 10.0, -25.0],
}


def _write_run(root: Path, loss: str, values: dict, dataset: str = "synthetic") -> Path:
    """A run of images a-d and classes left, right (channels 0, 1) with the chosen values."""
    table = {m: np.zeros((4, 2)) for m in ("ace", "ece", "mce", "dice")}
    empty = np.zeros((4, 2), dtype=bool)
    for (image, index), (ace, ece, mce, dice, is_empty) in values.items():
        i = "abcd".index(image)
        for metric, value in zip(("ace", "ece", "mce", "dice"), (ace, ece, mce, dice), strict=True):
            table[metric][i, index] = value
        empty[i, index] = is_empty
    run = evaluated_run(
        root, dataset, loss, image_ids=list("abcd"), classes=("left", "right"),
        channels=("left", "right"), values=table, empty=empty, num_bins=5,
    )  # fmt: skip
    return run.path


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    _write_run(tmp_path / "runs", "baseline", BASELINE)
    _write_run(tmp_path / "runs", "soft", SOFT)
    return tmp_path / "runs"


def test_runs_table_matches_hand_computation(runs_root):
    table = paper.percentage_change_table(frame=paper.runs_frame(runs_root))
    assert list(table["dataset"]) == ["synthetic"] * 4 + ["all"] * 4
    assert set(table["source"]) == {"calibtut"} and set(table["loss"]) == {"soft"}
    for row in table.itertuples(index=False):
        pct = HAND_PCT[row.metric]
        assert row.n == len(pct)
        assert row.mean == pytest.approx(statistics.fmean(pct), rel=1e-9)
        assert row.std == pytest.approx(statistics.pstdev(pct), rel=1e-9)
    ace = table.iloc[0]
    assert (ace["metric"], ace["mean"], ace["std"]) == (
        "ace",
        pytest.approx(-42.5),
        pytest.approx(106.25**0.5),
    )
    # exact signed-rank tests: ACE falls on all 4 images (p = 2/16); Dice ranks +1 +2 -3 (p = 1)
    assert ace["p_wilcoxon"] == pytest.approx(0.125)
    assert table.iloc[3]["metric"] == "dice" and table.iloc[3]["p_wilcoxon"] == pytest.approx(1.0)
    # paired t-tests on the raw values, worked by hand: ACE differences -.075 -.10 -.15 -.09
    # (mean -.10375, sd .0325), t = -6.385 with 3 degrees of freedom
    diffs = [-0.075, -0.10, -0.15, -0.09]
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / 2)
    assert t == pytest.approx(-6.3846, abs=1e-4)
    assert ace["p_value"] == pytest.approx(2 * t_distribution.sf(abs(t), 3), rel=1e-9)
    assert ace["p_value"] == pytest.approx(0.00779, abs=1e-5)
    dice = [0.77 - 0.70, 0.99 - 0.90, 0.45 - 0.60]  # image d: baseline 0, left out
    t = statistics.fmean(dice) / (statistics.stdev(dice) / math.sqrt(3))
    assert table.iloc[3]["p_value"] == pytest.approx(2 * t_distribution.sf(abs(t), 2), rel=1e-9)
    pd.testing.assert_frame_equal(
        table.iloc[:4].drop(columns="dataset").reset_index(drop=True),
        table.iloc[4:].drop(columns="dataset").reset_index(drop=True),
    )


def test_runs_frame_per_image_values(runs_root):
    frame = paper.runs_frame([runs_root / "synthetic" / "baseline" / "seed_0"], source="mine")
    values = frame.set_index(["image_id", "metric"])["value"]
    assert set(frame["source"]) == {"mine"} and set(frame["seed"]) == {0}
    assert values["b", "ace"] == pytest.approx(0.40)  # empty class counted
    assert values["b", "dice"] == pytest.approx(0.90)  # empty class (NaN here) left out
    assert values["c", "ece"] == pytest.approx(0.04)  # NaN class skipped
    assert values["d", "dice"] == 0.0
    soft = paper.runs_frame(runs_root / "synthetic" / "soft").set_index(["image_id", "metric"])
    assert soft.loc[("b", "dice"), "value"] == pytest.approx(0.99)  # empty class's 0.0 left out
    assert soft.loc[("b", "ace"), "value"] == pytest.approx(0.30)  # empty class counted


def test_runs_and_paper_in_one_table(results_root, runs_root):
    frame = pd.concat([paper.paper_frame(results_root), paper.runs_frame(runs_root)])
    table = paper.percentage_change_table(frame=frame)
    pd.testing.assert_frame_equal(
        table[table["source"] == "paper"].reset_index(drop=True),
        paper.percentage_change_table(results_root),
    )
    assert len(table[table["source"] == "calibtut"]) == 8
    markdown = paper.percentage_change_markdown(table)
    assert "| calibtut | synthetic | — | -42.50 ± 10.31 | — |" in markdown


def test_rows_without_a_defined_change_are_kept_empty(runs_root):
    frame = paper.runs_frame(runs_root)
    zero_dice = (frame["loss"] == "baseline") & (frame["metric"] == "dice")
    table = paper.percentage_change_table(
        frame=frame.assign(value=frame["value"].mask(zero_dice, 0.0))
    )
    dice = table[table["metric"] == "dice"]
    assert list(dice["n"]) == [0, 0]
    assert dice[["mean", "std", "p_value"]].isna().all().all()
    lines = paper.percentage_change_markdown(table).splitlines()
    assert lines[0] == "| source | dataset | ACE soft | ECE soft | MCE soft | Dice soft |"
    assert (
        lines[2]
        == "| calibtut | synthetic | -42.50 ± 10.31 | -45.62 ± 13.51 | -42.50 ± 10.31 | — |"
    )


def test_pairing_errors(runs_root, tmp_path):
    frame = paper.runs_frame(runs_root)
    with pytest.raises(ValueError, match="no baseline run for the soft run of source 'calibtut'"):
        paper.percentage_changes(frame[frame["loss"] == "soft"])
    with pytest.raises(ValueError, match="no hard or soft run"):
        paper.percentage_changes(frame[frame["loss"] == "baseline"])
    without_c = frame[~((frame["loss"] == "soft") & (frame["image_id"] == "c"))]
    with pytest.raises(ValueError, match="image 'c' .* is missing from the soft run"):
        paper.percentage_changes(without_c)
    with pytest.raises(ValueError, match="more than one value"):
        paper.percentage_changes(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="unknown metric"):
        paper.percentage_changes(frame.replace({"metric": {"dice": "mean_dice"}}))
    floors = paper.runs_frame(runs_root, metrics=("ace", "ace_floor"))
    assert set(floors["metric"]) == {"ace", "ace_floor"}
    with pytest.raises(TypeError, match="not both"):
        paper.percentage_change_table(tmp_path, frame=frame)


def test_run_directory_errors(runs_root, tmp_path):
    run = RunDir(runs_root / "synthetic" / "soft" / "seed_0")
    config = {"dataset": "synthetic", "loss": "medium", "seed": 0, "class_names": ["left", "right"]}
    with_config(run, config)
    with pytest.raises(ValueError, match="loss 'medium' is not one of"):
        paper.runs_frame(run.path)
    with_config(run, {"dataset": "synthetic", "loss": "soft"})
    with pytest.raises(ValueError, match="config.json lacks seed, class_names"):
        paper.runs_frame(run.path)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(FileNotFoundError, match="no evaluated run directory"):
        paper.runs_frame(nothing)


# --- figure ---------------------------------------------------------------------------------------


def test_distribution_figure_draws_the_frame(results_root, runs_root):
    frame = pd.concat(
        [paper.paper_frame(results_root, datasets=["acdc"]), paper.runs_frame(runs_root)]
    )
    fig = plot_per_image_distributions(frame)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "acdc: ACE",
        "synthetic: ACE",
        "acdc: Dice",
        "synthetic: Dice",
    ]
    panels = [
        ("acdc", "ace"),
        ("synthetic", "ace"),
        ("acdc", "dice"),
        ("synthetic", "dice"),
    ]
    for ax, (dataset, metric) in zip(axes, panels, strict=True):
        source = "paper" if dataset == "acdc" else "calibtut"
        losses = ["baseline", "hard", "soft"] if source == "paper" else ["baseline", "soft"]
        assert [t.get_text() for t in ax.get_xticklabels()] == [
            f"{source}\n{loss}" for loss in losses
        ]
        assert len(ax.patches) == len(losses)
        for box, loss in zip(ax.patches, losses, strict=True):
            selected = (
                (frame["dataset"] == dataset)
                & (frame["metric"] == metric)
                & (frame["loss"] == loss)
            )
            values = frame.loc[selected, "value"]
            x, y = box.get_path().vertices.T
            assert (y.min(), y.max()) == pytest.approx(tuple(np.percentile(values, [25, 75])))
            medians = [
                line.get_ydata()[0]
                for line in ax.lines
                if len(line.get_xdata()) == 2
                and tuple(line.get_xdata()) == pytest.approx((x.min(), x.max()))
                and line.get_ydata()[0] == line.get_ydata()[1]
            ]
            assert medians == pytest.approx([np.median(values)])
    with pytest.raises(ValueError, match="metrics"):
        plot_per_image_distributions(frame, metrics=("micro_ace",))


# --- the paper beside your runs --------------------------------------------------------------------


def fake_acdc_runs(run_root: Path, phantom: bool = False) -> None:
    """Three evaluated ACDC runs: hard has 0.8 times the baseline's calibration errors on every
    image and class, soft 0.5 times, and soft's Dice is 0.95 times."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.4, (3, 3))
    factors = {"baseline": (1.0, 1.0), "hard": (0.8, 1.0), "soft": (0.5, 0.95)}
    for loss, (error, dice) in factors.items():
        values = {"ace": base * error, "ece": base * error / 10, "mce": 2 * base * error}
        values["dice"] = np.full((3, 3), 0.8 * dice)
        evaluated_run(
            run_root, "acdc", loss, classes=("RV", "MYO", "LV"), values=values, floors=False,
            image_ids=["patient101_frame01", "patient101_frame14", "patient102_frame01"],
            config={"phantom": phantom},
        )  # fmt: skip


def test_compare_with_runs_puts_your_runs_beside_the_papers(results_root, tmp_path, capsys):
    fake_acdc_runs(tmp_path / "runs")
    fake_acdc_runs(tmp_path / "runs" / "on-a-phantom", phantom=True)
    comparison = paper.compare_with_runs(results_root, tmp_path / "runs", "acdc")
    out = capsys.readouterr().out
    assert (
        "Your runs on real data: acdc/baseline/seed_0, acdc/hard/seed_0, acdc/soft/seed_0." in out
    )
    assert set(comparison.frame["dataset"]) == set(comparison.changes["dataset"]) == {"acdc"}
    cells = {
        (row["source"], row["metric"], row["loss"]): row
        for row in comparison.changes.to_dict(orient="records")
    }
    published = paper.percentage_change_table(results_root)
    expected = published.query("dataset == 'acdc' and metric == 'ace' and loss == 'hard'")
    assert cells[("paper", "ace", "hard")]["mean"] == pytest.approx(expected["mean"].iloc[0])
    assert cells[("yours", "ace", "hard")]["mean"] == pytest.approx(-20.0)  # 0.8 x baseline
    assert cells[("yours", "dice", "soft")]["mean"] == pytest.approx(-5.0)
    assert cells[("yours", "ace", "soft")]["n"] == 3  # the phantom runs are left out
    table = comparison.markdown()
    assert "| yours | acdc | -20.00 ± 0.00 |" in table and "| all |" not in table


def test_compare_with_runs_says_what_is_missing(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(paper, "paper_frame", offline)
    assert paper.compare_with_runs(None, tmp_path / "nothing", "kits") is None
    message = capsys.readouterr().out
    assert "could not be loaded" in message and "No runs of kits on real data" in message
    assert "Set paper_root (root= in calibtut.paper) to a local copy" in message


def test_if_available_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CALIBTUT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(paper.PAPER_URL_VARIABLE, "http://127.0.0.1:9/")
    assert paper.paper_base_url() == "http://127.0.0.1:9/"
    assert paper.if_available(paper.paper_frame, None, datasets=["acdc"]) is None
    message = capsys.readouterr().out
    first = paper.paper_relative_path("acdc", "baseline", "ace")  # the first file it reads
    assert "could not be loaded" in message and f"http://127.0.0.1:9/{first}" in message
    assert message.count("paper_root") == 1  # the download error's hint, not repeated
    assert paper.if_available(paper.paper_frame, tmp_path / "nothing") is None
    message = capsys.readouterr().out
    assert "not found: root= (the notebooks' paper_root)" in message
    assert "Set paper_root (root= in calibtut.paper) to a local copy" in message
    for section in (paper.missing_classes_report, paper.complete_cases_table):
        assert paper.if_available(section, tmp_path / "nothing") is None
        assert "could not be loaded" in capsys.readouterr().out
    monkeypatch.delenv(paper.PAPER_URL_VARIABLE)
    assert paper.paper_base_url() == paper.PAPER_BASE_URL


def test_paper_url_variable_points_downloads_at_a_mirror(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv(paper.PAPER_URL_VARIABLE, fixture_root.as_uri() + "/")
    frame = paper.paper_frame(datasets=["kits"], cache_dir=tmp_path)
    pd.testing.assert_frame_equal(frame, paper.paper_frame(fixture_root, datasets=["kits"]))
    assert len(_files(tmp_path)) == 3 * 4
