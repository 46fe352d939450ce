"""The course notebooks.

Each notebook is executed with papermill in smoke mode on the CPU, in a fresh folder (its working
directory and ``run_root``), and what it wrote is checked against values computed here another
way: run directories, the result JSON each notebook ends with, key numbers. Each ``.ipynb`` must
match its jupytext percent-format ``.py`` pair and carry no outputs, and every notebook must keep
the course's conventions (Colab badge and install cell, a ``parameters`` cell).
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
from fakes import evaluated_run, write_paper_results
from reference import as_sums, direct_errors, direct_histogram

from calibtut import exercises, paper
from calibtut.data import spec
from calibtut.data.phantoms import MARKER
from calibtut.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PAPER_RESULTS = ROOT.parent / "shared" / "paper-results"
COURSE = (
    "00_start_here",
    "01_what_is_calibration",
    "02_hard_and_soft_binning",
    "03_training_with_calibration_losses",
    "04_acdc",
    "05_amos",
    "06_kits",
    "07_brats",
    "08_exploring_reliability",
    "09_paper_results",
    "10_calibration_toolbox",
)
REPOSITORY = "https://github.com/calibtut/calibtut"
REQUIRED_PARAMETERS = {"smoke", "data_dir", "device", "epochs", "run_root", "overwrite"}
EXERCISE_NOTEBOOKS = {"01", "02", "03", "08"}  # these also take solutions
LOSSES = ("baseline", "hard", "soft")
# Test images of the paper's published results, per dataset (the paper's Table 1 counts).
PUBLISHED_TEST_IMAGES = {"acdc": 100, "amos": 100, "kits": 98, "brats": 200}


def read_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


# --- the committed files ------------------------------------------------------------------------


def test_the_course_is_complete_and_paired():
    assert tuple(sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))) == COURSE
    assert tuple(sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))) == COURSE
    config = (NOTEBOOKS / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config


@pytest.mark.parametrize("name", COURSE)
def test_notebook_and_script_are_in_sync(name):
    """The .ipynb and its .py pair hold the same cells (run `jupytext --sync` after editing)."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    script = jupytext.read(NOTEBOOKS / f"{name}.py")

    def cells(nb):
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]

    assert cells(notebook) == cells(script), f"{name}.ipynb and {name}.py differ: jupytext --sync"


@pytest.mark.parametrize("name", COURSE)
def test_committed_notebook_has_no_outputs(name):
    notebook = read_notebook(name)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert set(notebook.metadata) <= {"kernelspec", "jupytext", "language_info"}
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", COURSE)
def test_notebook_follows_the_course_conventions(name):
    notebook = read_notebook(name)
    badge = f"https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/{name}.ipynb"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("[![Open In Colab]")
    assert f"]({badge})" in first.source.splitlines()[0]
    setup, parameters = code_cells(notebook)[:2]
    assert 'if "google.colab" in sys.modules:' in setup.source
    assert f'"calibtut @ git+{REPOSITORY}"' in setup.source and "enable_colab()" in setup.source
    assert parameters.metadata.get("tags") == ["parameters"]
    assigned = {
        target.id for statement in ast.parse(parameters.source).body for target in statement.targets
    }
    assert REQUIRED_PARAMETERS <= assigned
    if name[:2] in EXERCISE_NOTEBOOKS:
        assert "solutions" in assigned
    assert f'"{name}"' in code_cells(notebook)[-1].source  # ends by saving its result
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "**You will learn to**" in notebook.cells[0].source  # objectives at the top
    assert "## What you learned" in text and "**References**" in text  # a summary at the end
    assert "**Next**" in text or name == COURSE[-1]


def test_glossary_defines_the_terms_the_course_uses():
    glossary = (NOTEBOOKS / "glossary.md").read_text()
    terms = re.findall(r"^\*\*(.+?)\*\*", glossary, flags=re.MULTILINE)
    for term in ("Marginal and top-label calibration", "Per image and per patch",
                 "Macro and micro", "Occupied bins", "Deep supervision",
                 "Sliding-window inference", "Noise floor", "Overconfident, underconfident"):  # fmt: skip
        assert any(t.startswith(term) for t in terms), term
    assert any(t.startswith("Empty classes") for t in terms)
    assert "Nixon" in glossary and "adaptive" in glossary  # the other "ACE", named
    for notebook in COURSE[1:4]:
        assert "notebooks/glossary.md" in (NOTEBOOKS / f"{notebook}.py").read_text()


# --- running them -------------------------------------------------------------------------------


@pytest.fixture
def execute(tmp_path, monkeypatch):
    """Run a notebook in smoke mode on the CPU in ``tmp_path``; return its result JSON."""
    papermill = pytest.importorskip("papermill")
    # The kernel inherits this environment: Jupyter's inline figures (as users see them, even
    # where the suite runs with MPLBACKEND=Agg) and one thread per small network.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(name: str, **parameters: Any) -> dict[str, Any]:
        start = time.perf_counter()
        executed = papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"),
            str(tmp_path / f"{name}.executed.ipynb"),
            parameters={
                "smoke": True,
                "device": "cpu",
                "run_root": str(tmp_path / "runs"),
                **parameters,
            },
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=300,
        )
        print(f"{name}: {time.perf_counter() - start:.1f} s")
        figures = [
            output
            for cell in executed.cells
            for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})
        ]
        assert figures, f"{name} showed no figure"
        return json.loads((tmp_path / "runs" / "course" / f"{name}.json").read_text())

    return run


def assert_exercises(result: dict, number: str, solutions: bool) -> None:
    """Every exercise of the notebook was checked: left for the student, each reads
    "unanswered" (not a failure); with the model answers filled in, each is correct."""
    expected = {exercise.key for exercise in exercises.notebook(number)}
    statuses = result["exercises"]
    assert set(statuses) == expected and len(expected) >= 4
    assert set(statuses.values()) == {"correct" if solutions else "unanswered"}, statuses


def macro_from_per_image(run: RunDir) -> dict[str, float]:
    """The paper's per-image means, averaged over images, straight from per_image.csv: ECE, ACE
    and MCE (and their floors) over every class, Dice over the classes present in the image."""
    table = pd.read_csv(run.per_image_path)
    assert not table.empty
    by_image = table.groupby("image_id")
    metrics = ("ece", "ace", "mce", "ace_floor", "mce_floor")
    means = {metric: by_image[metric].mean().mean() for metric in metrics}
    present = table[~table["empty"].astype(bool)]
    means["dice"] = present.groupby("image_id")["dice"].mean().mean()
    return means


def assert_summary_matches_runs(summary: dict, runs: dict[str, RunDir]) -> None:
    assert set(summary) == set(runs)
    for loss, run in runs.items():
        expected = macro_from_per_image(run)
        assert set(summary[loss]) == set(expected)
        for metric, value in expected.items():
            assert summary[loss][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                loss,
                metric,
            )


def evaluated_runs(result: dict, losses=LOSSES) -> dict[str, RunDir]:
    runs = {loss: RunDir(result["runs"][loss]) for loss in losses}
    for loss, run in runs.items():
        assert run.is_evaluated and run.config["loss"] == loss
    return runs


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> tuple[Path, bool]:
    """The authors' published files when they are beside the repository, else a copy of their
    layout with hand-known numbers (tests/fakes.py); and whether they are the published ones."""
    if PAPER_RESULTS.is_dir():
        return PAPER_RESULTS, True
    return write_paper_results(tmp_path_factory.mktemp("paper-results")), False


@pytest.mark.notebook
def test_00_start_here(execute, tmp_path):
    result = execute("00_start_here")
    assert result["device"] == "cpu"
    runs = evaluated_runs(result, ("baseline", "soft"))
    for run in runs.values():
        assert run.path.parent.parent == tmp_path / "runs" / "tour" / "synthetic"
        assert run.config["max_steps"] == 4 and run.prediction_ids()
    assert_summary_matches_runs(result["summary"], runs)


SOLUTIONS = pytest.mark.parametrize("solutions", [False, True], ids=["student", "solutions"])


@pytest.mark.notebook
@SOLUTIONS
def test_01_what_is_calibration(execute, solutions):
    result = execute("01_what_is_calibration", solutions=solutions)
    assert_exercises(result, "01", solutions)
    by_hand, calibtut = result["toy_by_hand"], result["toy_calibtut"]
    assert set(by_hand) == {"calibrated", "overconfident (T = 0.5)", "underconfident (T = 2)"}
    for model in by_hand:
        for metric in ("ECE", "ACE", "MCE"):
            assert by_hand[model][metric] == pytest.approx(calibtut[model][metric], abs=1e-6)
    calibrated = by_hand["calibrated"]["ECE"]
    assert by_hand["overconfident (T = 0.5)"]["ECE"] > 2 * calibrated
    assert by_hand["underconfident (T = 2)"]["ECE"] > 2 * calibrated
    for name, errors in result["segmentation"].items():  # the crowd of easy voxels hides the ECE
        assert errors["ACE"] > 5 * errors["ECE"], name
        assert errors["ECE"] <= errors["ACE"] <= errors["MCE"] <= 1
    floors = result["floor_64"]  # about half of the toy's ACE is sampling noise
    for name, row in floors.items():
        assert row["floor"] < row["ACE"] < 3 * row["floor"], name
        assert row["floor se"] < 0.1 * row["floor"] and row["voxels per middle bin"] < 20
    assert floors["organ"]["ACE"] == pytest.approx(result["segmentation"]["organ"]["ACE"])
    per_image = np.array(result["ace_per_image"])  # (2 images, 4 classes)
    np.testing.assert_allclose(result["ace_macro"], per_image.mean(0), rtol=1e-6)
    assert not np.allclose(result["ace_micro"], result["ace_macro"])


@pytest.mark.notebook
@SOLUTIONS
def test_02_hard_and_soft_binning(execute, solutions):
    result = execute("02_hard_and_soft_binning", solutions=solutions)
    assert_exercises(result, "02", solutions)
    assert result["loss"] == pytest.approx(result["mean_ace"], abs=1e-6)
    assert result["hard_gradient_formula_vs_autograd"] < 1e-9
    weights = result["soft_weights_by_hand"]  # {p: {bin: weight}}, five bins
    assert {p: sum(w.values()) for p, w in weights.items()} == pytest.approx(
        dict.fromkeys(weights, 1.0)
    )
    assert weights["0.37"]["bin 1"] == pytest.approx(0.65)
    assert weights["0.37"]["bin 2"] == pytest.approx(0.35)
    assert weights["0.12"]["bin 0"] == pytest.approx(0.9) and weights["0.01"]["bin 0"] == 1.0
    assert result["lonely_value_occupied"] == [False, True, False, False, False]
    floor, ace = (
        result["ace_by_bins"][row] for row in ("organ's noise floor (hard)", "organ (hard)")
    )
    assert floor["80"] > floor["5"]  # more bins, fewer voxels each, more sampling noise
    for n in ("5", "10", "20", "40", "80"):  # the overconfident organ stays above its floor
        assert ace[n] > 1.5 * floor[n], n
    playground = result["playground"]
    assert playground["soft_weights"] == pytest.approx([0, 0.65, 0.35, 0, 0], abs=1e-6)
    assert playground["hard_weights"] == [0, 1, 0, 0, 0]
    assert math.isfinite(playground["hard_loss"]) and playground["hard_loss"] > 0
    assert playground["widget_binning"] == "soft"  # the live playground keeps the text's setting
    concentration = result["voxels_carrying_90_percent"]
    assert concentration["hard mL1-ACE"] < concentration["Dice + CE"]
    assert concentration["soft mL1-ACE"] < concentration["Dice + CE"]


@pytest.mark.notebook
@SOLUTIONS
def test_03_training_with_calibration_losses(execute, solutions):
    result = execute("03_training_with_calibration_losses", solutions=solutions)
    assert_exercises(result, "03", solutions)
    runs = evaluated_runs(result)
    for loss, run in runs.items():
        assert (run.config["max_steps"], run.config["width"], run.config["device"]) == (4, 8, "cpu")
        assert result["epochs_trained"][loss] == len(run.history()) == 1
        assert result["training_seconds"][loss] > 0
        per_image = run.results().per_image
        assert len(per_image) == 20 * 3  # the test scans x organ, ring, lesion
    assert_summary_matches_runs(result["summary"], runs)
    assert result["typical_image"] in set(runs["baseline"].results().image_ids)


def table_row(table: pd.DataFrame, dataset: str, metric: str, loss: str) -> pd.Series:
    chosen = (table["dataset"] == dataset) & (table["metric"] == metric) & (table["loss"] == loss)
    (index,) = table.index[chosen]
    return table.loc[index]


def published_cells(rows: list[dict], source: str, dataset: str) -> dict[tuple[str, str], dict]:
    return {
        (row["metric"], row["loss"]): row
        for row in rows
        if row["source"] == source and row["dataset"] == dataset
    }


@pytest.mark.notebook
@pytest.mark.parametrize(
    ("name", "dataset"),
    [("04_acdc", "acdc"), ("05_amos", "amos"), ("06_kits", "kits"), ("07_brats", "brats")],
)
def test_dataset_notebook_falls_back_to_a_phantom(execute, tmp_path, paper_root, name, dataset):
    root, published = paper_root
    result = execute(name, paper_root=str(root))
    data = spec(dataset)
    assert result["dataset"] == dataset and result["phantom"] is True
    phantom = Path(result["data_root"])
    assert phantom == Path("phantoms") / dataset and (tmp_path / phantom / MARKER).is_file()
    runs = evaluated_runs(result)
    scored = [name for _, name in data.scored_classes]
    test_cases = len(data.cases(tmp_path / phantom, "test"))
    for run in runs.values():
        assert run.config["dataset"] == dataset and run.config["activation"] == data.activation
        assert run.config["patch_size"] == [32, 32, 16] and run.config["max_steps"] == 2
        assert run.config["phantom"] is True
        per_image = run.results().per_image
        assert list(dict.fromkeys(per_image["class_name"])) == scored
        assert per_image["image_id"].nunique() == test_cases
        assert len(per_image) == test_cases * len(scored)
    assert_summary_matches_runs(result["summary"], runs)
    cells = published_cells(result["paper"], "paper", dataset)  # phantom runs are never compared
    assert {row["source"] for row in result["paper"]} == {"paper"}
    assert set(cells) == {
        (m, loss) for m in ("ace", "ece", "mce", "dice") for loss in ("hard", "soft")
    }
    expected = paper.percentage_change_table(root)
    for (metric, loss), row in cells.items():
        want = table_row(expected, dataset, metric, loss)
        assert row["mean"] == pytest.approx(want["mean"]) and row["n"] == want["n"]
    if published:
        assert all(row["n"] == PUBLISHED_TEST_IMAGES[dataset] for row in cells.values())
        if dataset == "acdc":  # as printed in the paper
            assert round(cells[("ace", "hard")]["mean"], 2) == -22.36
            assert round(cells[("ace", "soft")]["std"], 2) == 16.09
            assert round(cells[("dice", "soft")]["mean"], 2) == -1.09


def direction_by_hand(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, the shares of the dataset histogram's counts by direction, one count at a time:
    at confidence 0.5 or above a truth below the confidence is overconfident, below 0.5 a truth
    above it; the reverse is underconfident."""
    histogram = direct_histogram(sums)
    n = histogram.shape[-1]
    shares = {key: np.zeros(histogram.shape[0]) for key in ("over", "on", "under")}
    for c, matrix in enumerate(histogram):
        for truth in range(n):
            for confidence in range(n):
                if truth == confidence:
                    key = "on"
                elif (truth < confidence) == (confidence >= n // 2):
                    key = "over"
                else:
                    key = "under"
                shares[key][c] += matrix[truth, confidence]
        total = matrix.sum()
        for key in shares:
            shares[key][c] /= total
    return shares


@pytest.mark.notebook
@SOLUTIONS
def test_08_exploring_reliability(execute, solutions):
    result = execute("08_exploring_reliability", solutions=solutions)
    assert_exercises(result, "08", solutions)
    runs = {name: RunDir(path) for name, path in result["runs"].items()}
    assert sorted(runs) == [f"synthetic/{loss}/seed_0" for loss in LOSSES]
    table = {(row["run"], row["class"]): row for row in result["dataset_table"]}
    directions = {(row["run"], row["class"]): row for row in result["direction"]}
    for run in runs.values():
        results = run.results()
        assert result["most_changed_image"] in results.image_ids
        sums = as_sums(results.bins)
        macro_ace = np.nanmean(direct_errors(sums)["ace"], axis=0)
        dice = results.per_image.groupby("class_name")["dice"].mean()
        by_hand = direction_by_hand(sums)
        for c, name in enumerate(results.class_names):
            loss = run.config["loss"]
            row = table[(loss, name)]
            assert row["macro_ace"] == pytest.approx(macro_ace[c])
            assert row["dice"] == pytest.approx(dice[name], nan_ok=True)
            direction = directions[(loss, name)]
            assert direction["overconfident"] == pytest.approx(by_hand["over"][c])
            assert direction["underconfident"] == pytest.approx(by_hand["under"][c])


def fake_acdc_runs(run_root: Path) -> None:
    """Three evaluated ACDC runs with chosen per-image values: hard has 0.8 times the baseline's
    calibration errors on every image and class, soft 0.5 times, and soft's Dice is 0.95 times."""
    base = np.array([[0.10, 0.20, 0.30], [0.15, 0.25, 0.05], [0.12, 0.08, 0.40]])
    factors = {"baseline": (1.0, 1.0), "hard": (0.8, 1.0), "soft": (0.5, 0.95)}
    for loss, (error, dice) in factors.items():
        values = {"ace": base * error, "ece": base * error / 10, "mce": 2 * base * error}
        values["dice"] = np.full((3, 3), 0.8 * dice)
        evaluated_run(
            run_root, "acdc", loss, classes=("RV", "MYO", "LV"), values=values, floors=False,
            image_ids=["patient101_frame01", "patient101_frame14", "patient102_frame01"],
        )  # fmt: skip


@pytest.mark.notebook
def test_09_paper_results(execute, tmp_path, paper_root):
    root, published = paper_root
    fake_acdc_runs(tmp_path / "runs")
    result = execute("09_paper_results", paper_root=str(root))
    expected = paper.percentage_change_table(root)
    counts = expected.drop_duplicates("dataset").set_index("dataset")["n"].to_dict()
    assert {d: n["baseline"] for d, n in result["test_images"].items()} == {
        d: counts[d] for d in ("acdc", "amos", "kits", "brats")
    }
    assert result["paper_available"] is True
    for row in result["table"]:
        want = table_row(expected, row["dataset"], row["metric"], row["loss"])
        assert row["mean"] == pytest.approx(want["mean"]) and row["std"] == pytest.approx(
            want["std"]
        )
        assert row["p_value"] == pytest.approx(want["p_value"])  # the paper's t-test
        assert row["p_wilcoxon"] == pytest.approx(want["p_wilcoxon"])
    complete = paper.complete_cases_table(root)
    assert len(result["complete_cases"]) == len(complete)
    for row in result["complete_cases"]:
        want = table_row(complete, row["dataset"], row["metric"], row["loss"])
        assert row["mean"] == pytest.approx(want["mean"]) and row["n"] == want["n"]
    missing = paper.missing_classes_report(root).cases
    assert result["missing_classes"] == missing.to_dict(orient="records")
    acdc = published_cells(result["table"], "paper", "acdc")
    if published:
        assert (
            round(acdc[("ace", "hard")]["mean"], 2),
            round(acdc[("ace", "hard")]["std"], 2),
        ) == (
            -22.36,
            15.05,
        )
        assert (
            round(acdc[("ace", "soft")]["mean"], 2),
            round(acdc[("ace", "soft")]["std"], 2),
        ) == (
            -41.18,
            16.09,
        )
        assert (
            round(acdc[("dice", "hard")]["mean"], 2),
            round(acdc[("dice", "hard")]["std"], 2),
        ) == (
            0.07,
            2.42,
        )
        everything = published_cells(result["table"], "paper", "all")
        assert everything[("ace", "soft")]["n"] == sum(PUBLISHED_TEST_IMAGES.values())
        # the authors' p-val_results.md (paired t-test), and the rank test that disagrees
        assert float(f"{acdc[('ace', 'hard')]['p_value']:.3e}") == 6.991e-26
        kits = published_cells(result["table"], "paper", "kits")
        assert float(f"{kits[('dice', 'hard')]['p_value']:.3e}") == 0.6471
        assert round(kits[("dice", "hard")]["p_wilcoxon"], 3) == 0.027
        complete_kits = published_cells(result["complete_cases"], "paper", "kits")
        assert round(complete_kits[("ace", "hard")]["mean"], 2) == -15.50
        assert complete_kits[("ace", "hard")]["n"] == 43
        cases = {
            row["dataset"]: (row["incomplete"], row["images"]) for row in result["missing_classes"]
        }
        assert cases == {"acdc": (0, 100), "amos": (13, 100), "kits": (55, 98), "brats": (8, 200)}
    yours = published_cells(result["with_yours"], "yours", "acdc")  # the fake runs' chosen changes
    for metric in ("ace", "ece", "mce"):
        assert yours[(metric, "hard")]["mean"] == pytest.approx(-20.0)
        assert yours[(metric, "soft")]["mean"] == pytest.approx(-50.0)
        assert yours[(metric, "soft")]["std"] == pytest.approx(0.0, abs=1e-9)
    assert yours[("dice", "soft")]["mean"] == pytest.approx(-5.0)
    assert yours[("dice", "hard")]["mean"] == pytest.approx(0.0)
    beside = published_cells(result["with_yours"], "paper", "acdc")
    assert beside[("ace", "soft")]["mean"] == pytest.approx(acdc[("ace", "soft")]["mean"])


@pytest.mark.notebook
def test_09_paper_results_offline(execute, tmp_path, monkeypatch):
    """Offline and without a local copy, 09 says what is missing and how to point it at a copy
    (its paper_root parameter), and goes on with your runs."""
    monkeypatch.setenv("CALIBTUT_CACHE", str(tmp_path / "cache"))  # no file cached before
    monkeypatch.setenv(paper.PAPER_URL_VARIABLE, "http://127.0.0.1:9/")  # a closed port
    fake_acdc_runs(tmp_path / "runs")
    result = execute("09_paper_results", paper_root=None)
    assert result["paper_available"] is False
    assert result["table"] is None and result["complete_cases"] is None
    assert result["test_images"] is None and result["missing_classes"] is None
    yours = published_cells(result["with_yours"], "yours", "acdc")
    assert yours[("ace", "soft")]["mean"] == pytest.approx(-50.0)
    assert {row["source"] for row in result["with_yours"]} == {"yours"}
    executed = nbformat.read(tmp_path / "09_paper_results.executed.ipynb", as_version=4)
    printed = "".join(
        output.get("text", "")
        for cell in executed.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )
    assert "The paper's results could not be loaded" in printed
    assert "http://127.0.0.1:9/" in printed and "paper_root" in printed
    assert "your runs (if any) are shown at the end" in printed
    assert "Your runs on real data: acdc/baseline/seed_0" in printed


def image_values_by_hand(run: RunDir, metric: str) -> pd.Series:
    """Per test image, straight from per_image.csv: the class mean (Dice over the classes
    present), or the ACE minus its noise floor."""
    table = pd.read_csv(run.per_image_path)
    if metric == "ace_above_floor":
        return (
            table.groupby("image_id")["ace"].mean() - table.groupby("image_id")["ace_floor"].mean()
        )
    if metric == "dice":
        table = table[~table["empty"].astype(bool)]
    return table.groupby("image_id")[metric].mean()


@pytest.mark.notebook
def test_10_calibration_toolbox(execute):
    from calibtut.methods import TRAINING_LOSSES

    result = execute("10_calibration_toolbox")
    runs = {name: RunDir(path) for name, path in result["runs"].items()}
    posthoc = ("baseline+temperature", "baseline+vector_temperature", "baseline+ensemble")
    assert list(runs) == [*TRAINING_LOSSES, *posthoc]
    for name, run in runs.items():
        assert run.is_evaluated and run.config["loss"] == name and run.config["seed"] == 0
        assert {"brier", "nll", "equal_mass_ece"} <= set(run.results().per_image)
    members = [RunDir(path) for path in result["ensemble_members"]]
    assert [m.config["seed"] for m in members] == [0, 1] and members[0] == runs["baseline"]
    sources = [s["run_id"] for s in runs["baseline+ensemble"].config["source_runs"]]
    assert sources == [m.run_id for m in members]
    for name, t in result["temperatures"].items():
        assert t == runs[name].config["temperature"] and min(t) > 0
        assert len(t) == (4 if name == "baseline+vector_temperature" else 1)
    baseline_dice = image_values_by_hand(runs["baseline"], "dice")
    scaled_dice = image_values_by_hand(runs["baseline+temperature"], "dice")
    pd.testing.assert_series_equal(scaled_dice, baseline_dice)  # one T keeps the segmentation
    rows = {(row["metric"], row["loss"]): row for row in result["table"]}
    metrics = ("dice", "ece", "ace", "ace_above_floor", "mce", "brier", "nll", "equal_mass_ece")
    assert set(rows) == {(m, name) for m in metrics for name in runs}
    for (metric, name), row in rows.items():
        values = image_values_by_hand(runs[name], metric)
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-9), (metric, name)
        assert row["n_images"] == values.notna().sum() == 20
        assert values.min() <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= values.max()
        if name == "baseline" or metric == "ace_above_floor":
            assert row["pct_change"] is None  # NaN in the JSON
            continue
        base = image_values_by_hand(runs["baseline"], metric)
        change = ((values - base) / base.where(base != 0) * 100).dropna()
        assert row["pct_change"] == pytest.approx(change.mean(), rel=1e-9, abs=1e-9), (metric, name)
        assert row["pct_low"] <= row["pct_change"] <= row["pct_high"]
    assert set(result["training_seconds"]) == set(TRAINING_LOSSES)
    assert all(s > 0 for s in result["training_seconds"].values())
