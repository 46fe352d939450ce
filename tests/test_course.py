"""calibtut.course: notebook settings (resolve_settings, Settings.train, locate_dataset) and the
results each notebook records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import evaluated_run

from calibtut import course
from calibtut.data import write_phantom
from calibtut.data.phantoms import MARKER
from calibtut.paper import PaperComparison
from calibtut.runs import RunDir


@pytest.fixture
def threads_set_by_the_user(monkeypatch):
    """With OMP_NUM_THREADS set, resolve_settings leaves torch's thread count alone (so these tests
    do not change the thread count of the process running them)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_resolve_settings(threads_set_by_the_user, capsys):
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


@pytest.mark.slow
def test_settings_train_reuses_finished_runs_and_refuses_to_replace_them(
    threads_set_by_the_user, one_thread, small_synthetic, tmp_path, capsys
):
    settings = course.resolve_settings("synthetic", smoke=True, device="cpu", run_root=tmp_path)
    run = settings.train(losses=("baseline",))["baseline"]
    assert run.path == tmp_path / "synthetic" / "baseline" / "seed_0" and run.is_evaluated

    def stamps():
        return {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()}

    before = stamps()
    assert settings.train(losses=("baseline",))["baseline"].path == run.path
    assert "reusing the finished run" in capsys.readouterr().out and stamps() == before
    longer = course.resolve_settings(
        "synthetic", smoke=True, device="cpu", epochs=2, run_root=tmp_path
    )
    with pytest.raises(FileExistsError, match="different config"):
        longer.train(losses=("baseline",))
    assert stamps() == before
    again = course.resolve_settings(
        "synthetic", smoke=True, device="cpu", epochs=2, run_root=tmp_path, overwrite=True
    )
    again.train(losses=("baseline",))
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


def test_resolve_settings_trains_a_phantom_small(threads_set_by_the_user, tmp_path, capsys):
    phantom = course.DataSource("acdc", tmp_path, phantom=True)
    settings = course.resolve_settings(phantom, smoke=False, device="cpu", epochs=3)
    assert settings.small and settings.dataset == "acdc"
    assert (settings.config("hard").max_steps, settings.config("hard").epochs) == (2, 3)
    real = course.DataSource("acdc", tmp_path, phantom=False)
    assert course.resolve_settings(real, smoke=False, device="cpu").config("hard").epochs == 600


def test_dataset_result_is_what_the_dataset_notebooks_save(threads_set_by_the_user, tmp_path):
    classes = ["RV", "MYO", "LV"]
    rng = np.random.default_rng(0)
    tables = {}
    runs = {}
    for loss in ("baseline", "hard", "soft"):
        values = {m: rng.uniform(0.05, 0.9, (3, 3)) for m in ("dice", "ece", "ace", "mce")}
        runs[loss] = evaluated_run(
            tmp_path / "runs", "acdc", loss, classes=classes, values=values, floors=False
        )
        tables[loss] = runs[loss].results().per_image
    source = course.DataSource("acdc", tmp_path / "acdc", phantom=False)
    settings = course.resolve_settings(source, smoke=True, device="cpu", run_root=tmp_path)
    changes = pd.DataFrame({"source": ["yours"], "mean": [-20.0]})
    comparison = PaperComparison(pd.DataFrame(), changes)
    result = course.dataset_result(source, settings, runs, comparison)
    assert {k: result[k] for k in ("dataset", "phantom", "data_root", "device", "paper")} == {
        "dataset": "acdc", "phantom": False, "data_root": tmp_path / "acdc", "device": "cpu",
        "paper": [{"source": "yours", "mean": -20.0}],
    }  # fmt: skip
    assert result["runs"] == {loss: run.path for loss, run in runs.items()}
    assert all(isinstance(run, RunDir) for run in runs.values())
    for loss, table in tables.items():
        for metric in ("dice", "ece", "ace", "mce"):  # every class present: plain means
            by_image = table.groupby("image_id")[metric].mean().mean()
            assert result["summary"].loc[loss, metric] == pytest.approx(by_image)
    assert course.dataset_result(source, settings, runs, None)["paper"] is None
    other = course.resolve_settings("kits", smoke=True, device="cpu")
    with pytest.raises(ValueError, match="settings are for 'kits' but the data source is 'acdc'"):
        course.dataset_result(source, other, runs, None)


def test_settings_table_puts_the_preset_beside_this_run(threads_set_by_the_user):
    settings = course.resolve_settings("acdc", smoke=True, device="cpu")
    table = settings.table()
    assert list(table.columns) == ["preset", "this run"]
    assert table.loc["epochs", "preset"] == "600" and table.loc["epochs", "this run"] == "1"
    assert table.loc["training patch"].tolist() == ["256 x 256 x 16", "32 x 32 x 16"]
