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
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

import calibtut.train as train_module
from calibtut import course, paper, plots
from calibtut.binning import BinStats
from calibtut.data import spec, write_phantom
from calibtut.data.phantoms import MARKER
from calibtut.metrics import dataset_reliability_histogram
from calibtut.runs import RunDir, run_path

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
)
REPOSITORY = "https://github.com/calibtut/calibtut"
REQUIRED_PARAMETERS = {"smoke", "data_dir", "device", "epochs", "run_root"}
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
    assert f'"{name}"' in code_cells(notebook)[-1].source  # ends by saving its result


# --- the helpers they share (calibtut.course) -----------------------------------------------------


@pytest.fixture
def one_thread(monkeypatch):
    """With OMP_NUM_THREADS set, resolve_settings leaves torch's thread count alone."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_resolve_settings(one_thread, capsys):
    small = course.resolve_settings("acdc", smoke=True, device="cpu", run_root="elsewhere")
    config = small.config("soft", 3)
    assert (config.loss, config.seed, config.epochs, config.max_steps, config.width) == (
        "soft",
        3,
        1,
        2,
        4,
    )
    assert config.patch_size == config.val_window == (32, 32, 16) and small.run_root == Path(
        "elsewhere"
    )
    assert (
        "acdc: small (smoke) settings, 1 epoch, at most 2 steps, on cpu" in capsys.readouterr().out
    )
    full = course.resolve_settings(
        "acdc", smoke=False, device="cpu", epochs=7, patch_size=(64, 64, 16)
    )
    config = full.config("baseline")
    assert (config.epochs, config.lr, config.width, config.max_steps) == (7, 2e-4, 32, None)
    assert config.patch_size == (64, 64, 16) and config.dataset_spec().val_window == (256, 256, 16)
    assert (
        course.resolve_settings("synthetic", smoke=True, device="cpu", epochs=3)
        .config("hard")
        .epochs
        == 3
    )
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        course.resolve_settings("mnist", smoke=True)
    with pytest.raises(ValueError, match="epochs must be a positive"):
        course.resolve_settings("acdc", smoke=False, epochs=0)


def test_locate_dataset_uses_the_data_or_says_why_not(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = course.locate_dataset("kits", tmp_path / "nowhere")
    message = capsys.readouterr().out
    assert missing.phantom and missing.root == Path("phantoms") / "kits"
    assert (tmp_path / "phantoms" / "kits" / MARKER).is_file()
    assert "was not found" in message and "nowhere does not exist" in message
    assert course.DATA_README_URL in message and "(section 'kits')" in message
    data = write_phantom("kits", tmp_path / "data")  # stands in for the real data once unmarked
    assert course.locate_dataset("kits", data).phantom  # a phantom is used, and said to be one
    (data / MARKER).unlink()
    found = course.locate_dataset("kits", data)
    assert not found.phantom and found.root == data
    (data / "case_00001" / "imaging.nii.gz").unlink()
    broken = course.locate_dataset("kits", data, phantom_root=tmp_path / "instead")
    assert broken.phantom and broken.root == tmp_path / "instead" / "kits"
    assert "label without its image" in capsys.readouterr().out


def test_train_losses_reuses_finished_runs_and_refuses_to_replace_them(
    one_thread, tmp_path, monkeypatch, capsys
):
    small = spec("synthetic").replace(
        image_size=(32, 32), patch_size=(32, 32), val_window=(32, 32), n_train=4, n_val=2, n_test=2
    )
    monkeypatch.setattr(
        train_module, "spec", lambda name: small if name == "synthetic" else spec(name)
    )
    settings = course.resolve_settings("synthetic", smoke=True, device="cpu", run_root=tmp_path)
    run = course.train_losses(settings, losses=("baseline",))["baseline"]
    assert run.path == tmp_path / "synthetic" / "baseline" / "seed_0" and run.is_evaluated

    def stamps():
        return {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()}

    before = stamps()
    assert course.train_losses(settings, losses=("baseline",))["baseline"].path == run.path
    assert "reusing the finished run" in capsys.readouterr().out and stamps() == before
    longer = course.resolve_settings(
        "synthetic", smoke=True, device="cpu", epochs=2, run_root=tmp_path
    )
    with pytest.raises(FileExistsError, match="different config"):
        course.train_losses(longer, losses=("baseline",))
    assert stamps() == before
    course.train_losses(longer, losses=("baseline",), overwrite=True)
    assert run.config["epochs"] == 2 and run.is_evaluated


def test_save_result_writes_plain_json(tmp_path, capsys):
    frame = pd.DataFrame({"ace": [0.1, float("nan")]}, index=["hard", "soft"])
    course.save_result(
        tmp_path, "99_test", {"value": np.float32(0.5), "tensor": torch.tensor([1.0, float("nan")]),
                              "frame": frame, "path": tmp_path, "series": frame["ace"]},
    )  # fmt: skip
    path = tmp_path / "course" / "99_test.json"
    assert str(path) in capsys.readouterr().out
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {
        "value": 0.5, "tensor": [1.0, None], "frame": {"hard": {"ace": 0.1}, "soft": {"ace": None}},
        "path": str(tmp_path), "series": {"hard": 0.1, "soft": None},
    }  # fmt: skip


def test_resolve_settings_trains_a_phantom_small(one_thread, tmp_path, capsys):
    phantom = course.DataSource("acdc", tmp_path, phantom=True)
    settings = course.resolve_settings(phantom, smoke=False, device="cpu", epochs=3)
    assert settings.small and settings.dataset == "acdc"
    assert (settings.config("hard").max_steps, settings.config("hard").epochs) == (2, 3)
    real = course.DataSource("acdc", tmp_path, phantom=False)
    assert course.resolve_settings(real, smoke=False, device="cpu").config("hard").epochs == 600


def write_binned_runs(run_root: Path) -> dict[str, RunDir]:
    """Two evaluated runs of three scored classes with random bins (3 images, 5 bins)."""
    generator = torch.Generator().manual_seed(0)
    runs = {}
    for loss in ("baseline", "soft"):
        count = torch.randint(0, 4, (3, 3, 5), generator=generator).double()
        target = count * torch.rand(count.shape, generator=generator, dtype=torch.float64)
        pred = count * torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
        run = RunDir(run_path(run_root, "acdc", loss, 0))
        run.write_config({"dataset": "acdc", "loss": loss, "seed": 0,
                          "class_names": ["background", "RV", "MYO", "LV"]})  # fmt: skip
        images = ["patient101_frame01", "patient101_frame14", "patient102_frame01"]
        rows = [
            {"image_id": image, "class_index": c + 1, "class_name": name, "dice": 0.5,
             "ece": 0.1, "ace": 0.1, "mce": 0.1, "empty": False}
            for image in images
            for c, name in enumerate(["RV", "MYO", "LV"])
        ]  # fmt: skip
        run.write_results(rows, BinStats(pred, target, count), images, ["RV", "MYO", "LV"])
        runs[loss] = run
    return runs


def panels(fig) -> dict[str, Any]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def test_compare_run_reliability_histograms_reads_the_runs_bins(tmp_path):
    runs = write_binned_runs(tmp_path)
    fig = plots.compare_run_reliability_histograms(runs, classes=["LV", "RV"])
    shown = panels(fig)
    assert set(shown) == {f"{loss} · {name}" for loss in runs for name in ("LV", "RV", "average")}
    for loss, run in runs.items():
        bins, _, names = run.bins()
        expected = dataset_reliability_histogram(bins).numpy()
        for name in ("LV", "RV"):
            (mesh,) = [
                c for c in shown[f"{loss} · {name}"].collections if c.get_gid() == "histogram"
            ]
            drawn = np.ma.filled(mesh.get_array(), 0).reshape(5, 5)
            np.testing.assert_allclose(drawn, expected[names.index(name)])
    everything = panels(plots.compare_run_reliability_histograms(runs))
    assert {"baseline · MYO", "soft · average"} <= set(everything) and len(everything) == 8
    with pytest.raises(ValueError, match="'aorta' is not one of the classes"):
        plots.compare_run_reliability_histograms(runs, classes=["aorta"])
    with pytest.raises(ValueError, match="non-empty mapping"):
        plots.compare_run_reliability_histograms({})
    brats = RunDir(run_path(tmp_path / "brats", "brats", "soft", 0))
    brats.write_config({"dataset": "brats", "loss": "soft", "seed": 0})
    zeros = torch.zeros(3, 3, 5, dtype=torch.float64)
    brats.write_results(
        [], BinStats(zeros, zeros, zeros), ["a", "b", "c"], ["WT", "TC", "ET"], [0, 1, 2]
    )
    with pytest.raises(ValueError, match="must score the same classes"):
        plots.compare_run_reliability_histograms({"acdc": runs["soft"], "brats": brats})


def write_overlay_runs(run_root: Path) -> dict[str, RunDir]:
    """Two multi-label runs: regions WT and TC with constant confidences 0.25 and 0.75."""
    runs = {}
    image = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    label = np.zeros((2, 8, 8, 4), dtype=np.uint8)
    label[:, 2:6, 2:6, 1:3] = 1
    confidence = np.stack([np.full((8, 8, 4), 0.25), np.full((8, 8, 4), 0.75)])
    for loss, ids in (("baseline", ["case_b", "case_c"]), ("soft", ["case_a", "case_b", "case_c"])):
        run = RunDir(run_path(run_root, "brats", loss, 0))
        run.write_config({"dataset": "brats", "loss": loss, "class_names": ["WT", "TC"]})
        for image_id in ids:
            run.write_prediction(image_id, image, label, label, confidence)
        runs[loss] = run
    return runs


def test_compare_run_overlays_shows_an_image_every_run_saved(tmp_path):
    runs = write_overlay_runs(tmp_path)
    fig = plots.compare_run_overlays(runs, channel="TC")
    assert fig._suptitle.get_text() == "case_b"  # case_a is saved by one run only
    shown = panels(fig)
    assert "P(TC)" in shown and "errors of TC" in shown
    confidences = [im for ax in fig.axes for im in ax.images if im.get_gid() == "confidence"]
    assert len(confidences) == 2 and all(np.all(im.get_array() == 0.75) for im in confidences)
    first = plots.compare_run_overlays(runs, image_id="case_c")
    assert first._suptitle.get_text() == "case_c" and "P(WT)" in panels(first)
    with pytest.raises(ValueError, match="'ET' is not one of the classes"):
        plots.compare_run_overlays(runs, channel="ET")
    with pytest.raises(FileNotFoundError, match="case_a"):
        plots.compare_run_overlays(runs, image_id="case_a")
    for path in runs["soft"].predictions_dir.glob("case_[bc].npz"):
        path.unlink()
    with pytest.raises(ValueError, match="no test image has a saved prediction in every run"):
        plots.compare_run_overlays(runs)


def test_paper_comparison_puts_your_runs_beside_the_papers(tmp_path, capsys):
    if not PAPER_RESULTS.is_dir():
        pytest.skip(f"the paper's published results are not at {PAPER_RESULTS}")
    write_fake_runs(tmp_path / "runs")
    comparison = course.paper_comparison(PAPER_RESULTS, tmp_path / "runs", "acdc")
    assert "Your runs on real data: acdc/baseline/seed_0" in capsys.readouterr().out
    assert set(comparison.frame["dataset"]) == set(comparison.changes["dataset"]) == {"acdc"}
    cells = {
        (row["source"], row["metric"], row["loss"]): row
        for row in comparison.changes.to_dict(orient="records")
    }
    assert round(cells[("paper", "macro_ace", "hard")]["mean"], 2) == -22.36
    assert cells[("yours", "macro_ace", "hard")]["mean"] == pytest.approx(-20.0)  # 0.8 x baseline
    assert cells[("yours", "dice", "soft")]["mean"] == pytest.approx(-5.0)
    assert cells[("yours", "macro_ace", "soft")]["n"] == 3
    table = comparison.markdown()
    assert (
        "| paper | acdc | -22.36 ± 15.05 |" in table and "| yours | acdc | -20.00 ± 0.00 |" in table
    )
    assert "| all |" not in table
    titles = set(panels(comparison.figure(metrics=("dice",))))
    assert titles == {"acdc: " + plots.METRIC_LABELS["dice"]}


def test_paper_comparison_is_none_without_paper_or_runs(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(paper, "paper_frame", offline)
    assert course.paper_comparison(None, tmp_path / "nothing", "kits") is None
    message = capsys.readouterr().out
    assert "could not be loaded" in message and "No runs of kits on real data" in message


def test_dataset_result_is_what_the_dataset_notebooks_save(one_thread, tmp_path):
    tables = write_fake_runs(tmp_path / "runs")
    runs = {loss: RunDir(run_path(tmp_path / "runs", "acdc", loss, 0)) for loss in tables}
    source = course.DataSource("acdc", tmp_path / "acdc", phantom=False)
    settings = course.resolve_settings(source, smoke=True, device="cpu", run_root=tmp_path)
    changes = pd.DataFrame({"source": ["yours"], "mean": [-20.0]})
    comparison = course.PaperComparison(pd.DataFrame(), changes)
    result = course.dataset_result(source, settings, runs, comparison)
    assert {k: result[k] for k in ("dataset", "phantom", "data_root", "device", "paper")} == {
        "dataset": "acdc", "phantom": False, "data_root": tmp_path / "acdc", "device": "cpu",
        "paper": [{"source": "yours", "mean": -20.0}],
    }  # fmt: skip
    assert result["runs"] == {loss: run.path for loss, run in runs.items()}
    for loss, table in tables.items():
        for metric in ("dice", "ece", "ace", "mce"):  # every class present: plain means
            by_image = table.groupby("image_id")[metric].mean().mean()
            assert result["summary"].loc[loss, metric] == pytest.approx(by_image)
    assert course.dataset_result(source, settings, runs, None)["paper"] is None
    other = course.resolve_settings("kits", smoke=True, device="cpu")
    with pytest.raises(ValueError, match="settings are for 'kits' but the data source is 'acdc'"):
        course.dataset_result(source, other, runs, None)


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


def macro_from_per_image(run: RunDir) -> dict[str, float]:
    """The paper's per-image means, averaged over images, straight from per_image.csv: ECE, ACE
    and MCE over every class, Dice over the classes present in the image."""
    table = pd.read_csv(run.per_image_path)
    assert not table.empty
    by_image = table.groupby("image_id")
    means = {metric: by_image[metric].mean().mean() for metric in ("ece", "ace", "mce")}
    present = table[~table["empty"].astype(bool)]
    means["dice"] = present.groupby("image_id")["dice"].mean().mean()
    return means


def assert_summary_matches_runs(summary: dict, runs: dict[str, RunDir]) -> None:
    assert set(summary) == set(runs)
    for loss, run in runs.items():
        expected = macro_from_per_image(run)
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


@pytest.mark.notebook
def test_00_start_here(execute, tmp_path):
    result = execute("00_start_here")
    assert result["device"] == "cpu"
    runs = evaluated_runs(result, ("baseline", "soft"))
    for run in runs.values():
        assert run.path.parent.parent == tmp_path / "runs" / "tour" / "synthetic"
        assert run.config["max_steps"] == 4 and run.prediction_ids()
    assert_summary_matches_runs(result["summary"], runs)


@pytest.mark.notebook
def test_01_what_is_calibration(execute):
    result = execute("01_what_is_calibration")
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
    per_image = np.array(result["ace_per_image"])  # (2 images, 4 classes)
    np.testing.assert_allclose(result["ace_macro"], per_image.mean(0), rtol=1e-6)
    assert not np.allclose(result["ace_micro"], result["ace_macro"])


@pytest.mark.notebook
def test_02_hard_and_soft_binning(execute):
    result = execute("02_hard_and_soft_binning")
    assert result["loss"] == pytest.approx(result["mean_ace"], abs=1e-6)
    assert result["hard_gradient_formula_vs_autograd"] < 1e-9
    weights = result["soft_weights_by_hand"]  # {p: {bin: weight}}, five bins
    assert {p: sum(w.values()) for p, w in weights.items()} == pytest.approx(
        dict.fromkeys(weights, 1.0)
    )
    assert weights["0.37"]["bin 1"] == pytest.approx(0.65) and weights["0.37"][
        "bin 2"
    ] == pytest.approx(0.35)
    assert weights["0.12"]["bin 0"] == pytest.approx(0.9) and weights["0.01"]["bin 0"] == 1.0
    assert result["lonely_value_occupied"] == [False, True, False, False, False]
    noise_floor = [
        result["ace_by_bins"]["calibrated toy (hard)"][str(n)] for n in (5, 10, 20, 40, 80)
    ]
    assert noise_floor == sorted(noise_floor)  # more bins, more sampling noise
    playground = result["playground"]
    assert playground["soft_weights"] == pytest.approx([0, 0.65, 0.35, 0, 0], abs=1e-6)
    assert playground["hard_weights"] == [0, 1, 0, 0, 0]
    assert math.isfinite(playground["hard_loss"]) and playground["hard_loss"] > 0
    concentration = result["voxels_carrying_90_percent"]
    assert concentration["hard mL1-ACE"] < concentration["Dice + CE"]
    assert concentration["soft mL1-ACE"] < concentration["Dice + CE"]


@pytest.mark.notebook
def test_03_training_with_calibration_losses(execute):
    result = execute("03_training_with_calibration_losses")
    runs = evaluated_runs(result)
    for loss, run in runs.items():
        assert (run.config["max_steps"], run.config["width"], run.config["device"]) == (4, 8, "cpu")
        assert result["epochs_trained"][loss] == len(run.history()) == 1
        assert result["training_seconds"][loss] > 0
        per_image = run.per_image()
        assert len(per_image) == 60 * 3  # the test images x organ, ring, lesion
    assert_summary_matches_runs(result["summary"], runs)
    assert result["typical_image"] in set(runs["baseline"].per_image()["image_id"])


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
def test_dataset_notebook_falls_back_to_a_phantom(execute, tmp_path, name, dataset):
    if not PAPER_RESULTS.is_dir():
        pytest.skip(f"the paper's published results are not at {PAPER_RESULTS}")
    result = execute(name, paper_root=str(PAPER_RESULTS))
    data = spec(dataset)
    assert result["dataset"] == dataset and result["phantom"] is True
    phantom = Path(result["data_root"])
    assert phantom == Path("phantoms") / dataset and (tmp_path / phantom / MARKER).is_file()
    runs = evaluated_runs(result)
    scored = [name for i, name in enumerate(data.class_names) if data.include_background or i > 0]
    test_cases = len(data.cases(tmp_path / phantom, "test"))
    for run in runs.values():
        assert run.config["dataset"] == dataset and run.config["activation"] == data.activation
        assert run.config["patch_size"] == [32, 32, 16] and run.config["max_steps"] == 2
        per_image = run.per_image()
        assert list(dict.fromkeys(per_image["class_name"])) == scored
        assert per_image["image_id"].nunique() == test_cases
        assert len(per_image) == test_cases * len(scored)
    assert_summary_matches_runs(result["summary"], runs)
    cells = published_cells(result["paper"], "paper", dataset)  # phantom runs are never compared
    assert {row["source"] for row in result["paper"]} == {"paper"}
    assert {(m, loss) for m, loss in cells} == {
        (m, loss)
        for m in ("macro_ace", "macro_ece", "macro_mce", "dice")
        for loss in ("hard", "soft")
    }
    assert all(row["n"] == PUBLISHED_TEST_IMAGES[dataset] for row in cells.values())
    if dataset == "acdc":  # as printed in the paper
        assert round(cells[("macro_ace", "hard")]["mean"], 2) == -22.36
        assert round(cells[("macro_ace", "soft")]["std"], 2) == 16.09
        assert round(cells[("dice", "soft")]["mean"], 2) == -1.09


def ace_by_hand(bins: BinStats) -> np.ndarray:
    """Per image and class: the mean over occupied bins of |mean prediction - mean truth|."""
    count = bins.count.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(bins.pred_sum.numpy() / count - bins.target_sum.numpy() / count)
    return np.nanmean(np.where(count > 0, gap, np.nan), axis=-1)


@pytest.mark.notebook
def test_08_exploring_reliability(execute):
    result = execute("08_exploring_reliability")
    runs = {name: RunDir(path) for name, path in result["runs"].items()}
    assert sorted(runs) == [f"synthetic/{loss}/seed_0" for loss in LOSSES]
    table = {(row["run"], row["class"]): row for row in result["dataset_table"]}
    for run in runs.values():
        bins, ids, class_names = run.bins()
        assert result["most_changed_image"] in ids
        macro_ace = np.nanmean(ace_by_hand(bins), axis=0)
        dice = run.per_image().groupby("class_name")["dice"].mean()
        for c, name in enumerate(class_names):
            row = table[(run.config["loss"], name)]
            assert row["macro_ace"] == pytest.approx(macro_ace[c])
            assert row["dice"] == pytest.approx(dice[name], nan_ok=True)
    for row in result["direction"]:
        shares = row["overconfident"] + row["on the diagonal"] + row["underconfident"]
        assert shares == pytest.approx(1.0)


def write_fake_runs(run_root: Path) -> dict[str, pd.DataFrame]:
    """Three evaluated ACDC runs with chosen per-image values: hard has 0.8 times the baseline's
    calibration errors on every image and class, soft 0.5 times, and soft's Dice is 0.95 times."""
    images, classes = (
        ["patient101_frame01", "patient101_frame14", "patient102_frame01"],
        ["RV", "MYO", "LV"],
    )
    base = np.array([[0.10, 0.20, 0.30], [0.15, 0.25, 0.05], [0.12, 0.08, 0.40]])
    factors = {"baseline": (1.0, 1.0), "hard": (0.8, 1.0), "soft": (0.5, 0.95)}
    tables = {}
    for loss, (error_factor, dice_factor) in factors.items():
        run = RunDir(run_path(run_root, "acdc", loss, 0))
        run.write_config(
            {"dataset": "acdc", "loss": loss, "seed": 0, "class_names": ["background", *classes]}
        )
        rows = [
            {
                "image_id": image, "class_index": c + 1, "class_name": name,
                "dice": 0.8 * dice_factor, "ece": base[i, c] / 10 * error_factor,
                "ace": base[i, c] * error_factor, "mce": 2 * base[i, c] * error_factor, "empty": False,
            }
            for i, image in enumerate(images)
            for c, name in enumerate(classes)
        ]  # fmt: skip
        zeros = np.zeros((len(images), len(classes), 20))
        bins = BinStats(*(torch.from_numpy(zeros) for _ in range(3)))
        run.write_results(rows, bins, images, classes)
        tables[loss] = pd.DataFrame(rows)
    return tables


@pytest.mark.notebook
def test_09_paper_results(execute, tmp_path):
    if not PAPER_RESULTS.is_dir():
        pytest.skip(f"the paper's published results are not at {PAPER_RESULTS}")
    write_fake_runs(tmp_path / "runs")
    result = execute("09_paper_results", paper_root=str(PAPER_RESULTS))
    assert {
        d: counts["baseline"] for d, counts in result["test_images"].items()
    } == PUBLISHED_TEST_IMAGES
    acdc = published_cells(result["table"], "paper", "acdc")
    assert (
        round(acdc[("macro_ace", "hard")]["mean"], 2),
        round(acdc[("macro_ace", "hard")]["std"], 2),
    ) == (-22.36, 15.05)
    assert (
        round(acdc[("macro_ace", "soft")]["mean"], 2),
        round(acdc[("macro_ace", "soft")]["std"], 2),
    ) == (-41.18, 16.09)
    assert (round(acdc[("dice", "hard")]["mean"], 2), round(acdc[("dice", "hard")]["std"], 2)) == (
        0.07,
        2.42,
    )
    everything = published_cells(result["table"], "paper", "all")
    assert everything[("macro_ace", "soft")]["n"] == sum(PUBLISHED_TEST_IMAGES.values())
    yours = published_cells(result["with_yours"], "yours", "acdc")  # the fake runs' chosen changes
    for metric in ("macro_ace", "macro_ece", "macro_mce"):
        assert yours[(metric, "hard")]["mean"] == pytest.approx(-20.0)
        assert yours[(metric, "soft")]["mean"] == pytest.approx(-50.0)
        assert yours[(metric, "soft")]["std"] == pytest.approx(0.0, abs=1e-9)
    assert yours[("dice", "soft")]["mean"] == pytest.approx(-5.0)
    assert yours[("dice", "hard")]["mean"] == pytest.approx(0.0)
    beside = published_cells(result["with_yours"], "paper", "acdc")
    assert beside[("macro_ace", "soft")]["mean"] == pytest.approx(
        acdc[("macro_ace", "soft")]["mean"]
    )
