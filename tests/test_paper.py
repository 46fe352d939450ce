"""calibtut.paper and its figure: the paper's table reproduced from its published per-image files,
every cell checked against an independent computation, the loader's cache and errors, and the same
statistics on calibtut run directories checked by hand."""

from __future__ import annotations

import contextlib
import csv
import functools
import http.server
import math
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import (
    DICE_FACTORS,
    HARD_FACTORS,
    PAPER_BUNDLES,
    PAPER_LOSS_DIRS,
    PAPER_METRIC_FILES,
    SOFT_FACTOR,
    evaluated_run,
    write_paper_results,
)

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


def _reference_means(root: Path, dataset: str, loss: str, metric: str) -> list[tuple[str, float]]:
    """(filename, mean column) per row, read with the csv module alone."""
    bundle = PAPER_BUNDLES[dataset][0].format(PAPER_LOSS_DIRS[loss])
    path = (
        root
        / "bundles"
        / bundle
        / "seed_12345"
        / "inference_results"
        / f"{PAPER_METRIC_FILES[metric]}_raw.csv"
    )
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    n_classes = sum(name.startswith("class") for name in header)
    return [(row[0], float(row[n_classes + 1])) for row in rows]


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


def _reference_table(root: Path) -> dict[tuple[str, str, str], tuple[float, float, int, float]]:
    cells = {}
    for metric in PAPER_METRIC_FILES:
        for loss in ("hard", "soft"):
            pooled_pct, pooled_values, pooled_baselines = [], [], []
            for dataset in PAPER_BUNDLES:
                base = dict(_reference_means(root, dataset, "baseline", metric))
                pairs = [
                    (value, base[name])
                    for name, value in _reference_means(root, dataset, loss, metric)
                ]
                assert len(pairs) == len(base)
                pct = [(v - b) / b * 100 for v, b in pairs]
                values, baselines = [v for v, _ in pairs], [b for _, b in pairs]
                cells[dataset, metric, loss] = (
                    statistics.fmean(pct),
                    statistics.pstdev(pct),
                    len(pct),
                    _reference_wilcoxon_p(values, baselines),
                )
                pooled_pct += pct
                pooled_values += values
                pooled_baselines += baselines
            cells["all", metric, loss] = (
                statistics.fmean(pooled_pct),
                statistics.pstdev(pooled_pct),
                len(pooled_pct),
                _reference_wilcoxon_p(pooled_values, pooled_baselines),
            )
    return cells


def test_every_cell_matches_a_direct_computation(results_root):
    table = paper.percentage_change_table(results_root)
    reference = _reference_table(results_root)
    assert len(table) == len(reference) == 5 * 4 * 2
    assert list(table.columns) == list(paper.TABLE_COLUMNS)
    assert (table["source"] == "paper").all()
    for row in table.itertuples(index=False):
        mean, std, n, p_value = reference[row.dataset, row.metric, row.loss]
        assert row.n == n
        assert row.mean == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert row.std == pytest.approx(std, rel=1e-9, abs=1e-9)
        assert row.p_value == pytest.approx(p_value, rel=1e-6)


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
    assert "pass root=" in str(error.value)
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
    assert ace["p_value"] == pytest.approx(0.125)
    assert table.iloc[3]["metric"] == "dice" and table.iloc[3]["p_value"] == pytest.approx(1.0)
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
    run.write_config(
        {"dataset": "synthetic", "loss": "medium", "seed": 0, "class_names": ["left", "right"]}
    )
    with pytest.raises(ValueError, match="loss 'medium' is not one of"):
        paper.runs_frame(run.path)
    run.write_config({"dataset": "synthetic", "loss": "soft"})
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
    assert "Set paper_root to a local copy" in message
