"""No run that looks complete may rest on images it silently skipped; every error a user can
cause is one clear line (exit status 2) that names the problem and the file, before anything is
written. Each test here failed before its fix."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from fakes import SMALL_SYNTHETIC
from monai.data import Dataset

from calibtut.cli import main
from calibtut.data import write_phantom
from calibtut.runs import RunDir, RunLockedError
from calibtut.train import TrainConfig, train
from calibtut.train.build import check_count, data_loader, select_device

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--epochs", "1", "--width", "4", "--patch-size", "32", "32", "16", "--val-window", "32", "32", "16"]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_phantom("acdc", tmp_path_factory.mktemp("acdc") / "acdc", seed=0)


@pytest.fixture
def acdc(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "acdc"))


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_a_loading_error_in_the_loader_thread_reaches_the_loop():
    """MONAI 1.6's ThreadDataLoader ends the iteration quietly when a case fails to load."""

    class Broken(Dataset):
        def __getitem__(self, index):
            if index == 2:
                raise ValueError("case 2 is broken")
            return index

    with pytest.raises(ValueError, match="case 2 is broken"):
        list(data_loader(Broken(list(range(6))), batch_size=1))
    assert len(list(data_loader(Dataset(list(range(6))), batch_size=2))) == 3
    with pytest.raises(RuntimeError, match="saw 2 images where the split holds 6"):
        check_count(2, 6, "evaluation")


def set_label_value(path: Path, value: int) -> None:
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    data[24, 24, :] = value
    nib.save(nib.Nifti1Image(data, image.affine, image.header), path)


@pytest.mark.slow
def test_a_bad_test_label_stops_the_run_naming_the_file(acdc, tmp_path, capsys):
    label = acdc / "testing/patient102/patient102_frame01_gt.nii.gz"
    set_label_value(label, 7)
    runs = tmp_path / "runs"
    argv = ["train", "--dataset", "acdc", "--data-dir", str(acdc), "--run-root", str(runs), *TINY]
    assert main(argv) == 2
    message = error_line(capsys)
    assert str(label) in message and "value(s) 7" in message
    run = RunDir(runs / "acdc" / "baseline" / "seed_0")
    assert not run.is_evaluated and not run.is_finished  # never presented as complete


@pytest.mark.slow
@pytest.mark.parametrize("split", ["training", "testing"])
def test_a_truncated_volume_is_named_not_skipped(acdc, tmp_path, capsys, split):
    patient = "patient001" if split == "training" else "patient101"
    image = acdc / split / patient / f"{patient}_frame04.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 3])  # its header still reads: only loading fails
    assert gzip.decompress(data)[:4]  # (it was a valid file)
    runs = tmp_path / "runs"
    argv = ["train", "--dataset", "acdc", "--data-dir", str(acdc), "--run-root", str(runs), *TINY]
    assert main(argv) == 2
    message = error_line(capsys)
    assert f"cannot load case '{patient}_frame04'" in message and str(image) in message
    assert not RunDir(runs / "acdc" / "baseline" / "seed_0").is_evaluated


def test_a_missing_test_split_is_found_before_training(acdc, tmp_path, capsys):
    shutil.rmtree(acdc / "testing")
    runs = tmp_path / "runs"
    argv = ["train", "--dataset", "acdc", "--data-dir", str(acdc), "--run-root", str(runs), *TINY]
    assert main(argv) == 2
    assert (
        "missing folder" in error_line(capsys) and "testing" in capsys.readouterr().err + "testing"
    )
    assert not runs.exists()  # refused before a single step or file


@pytest.mark.parametrize(
    "sizes, message",
    [
        (["--patch-size", "30", "30", "16"], "patch_size 30 30 16 does not fit the segresnetds"),
        (["--val-window", "7", "7", "7"], "val_window 7 7 7 does not fit"),
    ],
)
def test_sizes_the_network_cannot_take_are_refused_first(acdc, tmp_path, capsys, sizes, message):
    runs = tmp_path / "runs"
    argv = ["train", "--dataset", "acdc", "--data-dir", str(acdc), "--run-root", str(runs)]
    assert main([*argv, "--epochs", "1", *sizes]) == 2
    line = error_line(capsys)
    assert message in line and "multiple of 16" in line and "(e.g. --" in line
    assert not runs.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "tpu"], "device must be cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["--device", "CPU"], "(did you mean 'cpu'?)"),
        (["--device", ""], "device must be cpu, cuda, cuda:N or mps, got ''"),
        (["--seed", "99999999999999999999999"], "seed must be an integer in [0, 2**32)"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    runs = tmp_path / "runs"
    assert main(["train", "--dataset", "synthetic", "--run-root", str(runs), *argv]) == 2
    assert message in error_line(capsys)
    assert not runs.exists()


def test_a_missing_data_folder_says_which_option_gives_it(tmp_path, capsys):
    assert main(["train", "--dataset", "acdc", "--run-root", str(tmp_path / "r")]) == 2
    assert "no data folder given: pass the dataset's folder (--data-dir" in error_line(capsys)


def test_select_device_names_the_choices():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="got 'gpu'"):
        select_device("gpu")


@pytest.mark.slow
def test_the_thread_count_is_recorded_and_reused_on_resume(small_synthetic, tmp_path, monkeypatch):
    config = TrainConfig.for_dataset("synthetic", epochs=2, width=4, val_every=1)
    torch.set_num_threads(1)
    run = train(config, None, tmp_path, progress=False)
    assert run.config["threads"] == 1
    assert run.history()["train_patches"].tolist() == [6, 6]
    assert run.history()["val_images"].tolist() == [2, 2]
    run.per_image_path.unlink()  # interrupted during evaluation: resumed
    torch.set_num_threads(2)
    train(config, None, tmp_path, progress=False)
    assert torch.get_num_threads() == 1 and run.is_evaluated


# --- one run directory, one run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunDir:
    """A tiny finished synthetic run (2 epochs at 32 x 32), trained once for this module."""
    from calibtut.data import catalog

    small = _small_synthetic(catalog.spec("synthetic"))
    with pytest.MonkeyPatch.context() as patch:
        real = catalog.spec
        patch.setattr(catalog, "spec", lambda name: small if name == "synthetic" else real(name))
        config = TrainConfig.for_dataset("synthetic", epochs=2, width=4, val_every=1)
        return train(config, None, tmp_path_factory.mktemp("trained"), progress=False)


def _small_synthetic(spec):
    return spec.replace(**SMALL_SYNTHETIC)


@pytest.fixture
def run_copy(trained, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(trained.path, tmp_path / "synthetic" / "baseline" / "seed_0"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_live_lock_is_refused_naming_its_owner(run_copy, capsys):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": owner.pid, "host": socket.gethostname(), "since": "today"}
        run_copy.lock_path.write_text(json.dumps(lock))
        before = snapshot(run_copy.path)
        with pytest.raises(RunLockedError, match=f"in use by process {owner.pid} on"):
            with run_copy.lock():
                pass
        assert main(["evaluate", str(run_copy.path)]) == 2
        assert f"in use by process {owner.pid}" in error_line(capsys)
        assert snapshot(run_copy.path) == before
    finally:
        owner.kill()
        owner.wait()


def test_a_lock_of_another_host_is_never_taken_over(run_copy):
    lock = {"pid": 1, "host": "elsewhere.example", "since": "today"}
    run_copy.lock_path.write_text(json.dumps(lock))
    with pytest.raises(RunLockedError, match=r"process 1 on elsewhere.example .*delete .*\.lock"):
        with run_copy.lock():
            pass


@pytest.mark.parametrize("reaped", [True, False])
def test_a_stale_lock_is_taken_over_and_the_lock_is_re_entrant(run_copy, reaped):
    """The owner is gone: reaped, or killed and not yet reaped by its parent (a zombie)."""
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone.kill()
    if reaped:
        gone.wait()
    else:
        time.sleep(0.5)
    lock = {"pid": gone.pid, "host": socket.gethostname(), "since": "yesterday"}
    run_copy.lock_path.write_text(json.dumps(lock))
    with run_copy.lock():
        assert json.loads(run_copy.lock_path.read_text())["pid"] == os.getpid()
        with run_copy.lock():  # evaluation inside training
            assert run_copy.lock_path.is_file()
        assert run_copy.lock_path.is_file()
    assert not run_copy.lock_path.exists()
    gone.wait()


def test_two_processes_on_one_run_directory(run_copy):
    """A second process is refused while the first holds the run; once it ends, it may go on."""
    script = (
        "import sys, time\nfrom calibtut.runs import RunDir\n"
        "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", script, str(run_copy.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {first.pid}"):
            with run_copy.lock():
                pass
    finally:
        first.kill()
        first.wait()
    with run_copy.lock():  # killed: its lock is stale
        pass


def test_a_best_checkpoint_of_another_run_is_refused(trained, run_copy, tmp_path, capsys):
    other = RunDir(shutil.copytree(trained.path, tmp_path / "other"))
    config = {k: v for k, v in other.config.items() if k != "run_id"}
    other.write_config({**config, "lr": 0.5})  # another run, its own identity
    shutil.copy(other.config_path, tmp_path / "other.json")
    shutil.copy(run_copy.best_path, other.best_path)  # a best.pt from elsewhere
    before = snapshot(other.path)
    assert main(["evaluate", str(other.path)]) == 2
    assert f"{other.checkpoint_path} belongs to another run" in error_line(capsys)
    assert snapshot(other.path) == before


def test_an_edited_config_is_refused(run_copy, capsys, tmp_path):
    config = json.loads(run_copy.config_path.read_text())
    run_copy.config_path.write_text(json.dumps({**config, "loss": "soft"}))  # relabelled
    assert main(["report", str(run_copy.path), "--out", str(tmp_path / "report")]) == 2
    assert "was changed after the run was made" in error_line(capsys)
    assert not (tmp_path / "report").exists()


def test_report_refuses_two_runs_of_one_name_and_warns_of_skipped_runs(run_copy, tmp_path, capsys):
    twin = RunDir(shutil.copytree(run_copy.path, tmp_path / "again" / "baseline"))
    out = tmp_path / "report"
    assert main(["report", str(run_copy.path), str(twin.path), "--out", str(out)]) == 2
    assert "copies of one run of synthetic/baseline/seed_0" in error_line(capsys)
    unfinished = RunDir(tmp_path / "synthetic" / "hard" / "seed_0")
    unfinished.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0})
    assert main(["report", str(tmp_path / "synthetic"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "left out 1 run(s)" in err and "hard/seed_0" in err


def test_history_is_rebuilt_and_orphans_removed_on_resume(trained, run_copy, monkeypatch):
    """Killed after the last checkpoint but before history.csv: the resumed run has it all."""
    from calibtut.data import catalog

    small = _small_synthetic(catalog.spec("synthetic"))
    real = catalog.spec
    monkeypatch.setattr(catalog, "spec", lambda name: small if name == "synthetic" else real(name))
    full = run_copy.history()
    run_copy.write_history(full.iloc[:1].to_dict("records"))
    for path in (run_copy.per_image_path, run_copy.bins_path):
        path.unlink()
    orphans = [run_copy.path / ".checkpoint.pt.x1.tmp", run_copy.predictions_dir / ".a.npz.x2.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    config = TrainConfig.from_dict(run_copy.config)
    train(config, None, run_dir=run_copy.path, progress=False)
    pd.testing.assert_frame_equal(run_copy.history(), full)
    assert not any(orphan.exists() for orphan in orphans)
    assert run_copy.is_finished


def test_overwrite_removes_orphans(run_copy):
    orphan = run_copy.path / ".best.pt.x3.tmp"
    orphan.write_bytes(b"half")
    run_copy.clear()
    assert not orphan.exists() and list(run_copy.path.iterdir()) == []


# --- damaged result files are named --------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_bins(path: Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["pred_sum"][0, 0, 0] = np.nan
    np.savez_compressed(path, **arrays)


def _text_in_numbers(path: Path) -> None:
    table = pd.read_csv(path)
    table["ace"] = table["ace"].astype(object)
    table.loc[3, "ace"] = "n/a?"
    table.to_csv(path, index=False)


def _drop_a_row(path: Path) -> None:
    pd.read_csv(path).iloc[1:].to_csv(path, index=False)


@pytest.mark.parametrize(
    "damage, file, message",
    [
        (_truncate, "bins.npz", "is not a readable bins file"),
        (lambda p: p.write_bytes(b"garbage"), "bins.npz", "is not a readable bins file"),
        (_nan_bins, "bins.npz", "pred_sum holds values outside [0, count] (or NaN)"),
        (lambda p: p.write_text(""), "per_image.csv", "is not a readable table"),
        (_text_in_numbers, "per_image.csv", "column 'ace' holds text (line 5)"),
        (_drop_a_row, "per_image.csv", "does not hold one row per image and class"),
    ],
)
def test_damaged_results_are_one_line_naming_the_file(
    run_copy, tmp_path, capsys, damage, file, message
):
    damage(run_copy.path / file)
    out = tmp_path / "report"
    assert main(["report", str(run_copy.path), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert str(run_copy.path / file) in line and message in line
    assert not out.exists()


def test_a_truncated_prediction_is_named(run_copy, tmp_path, capsys):
    from calibtut import views

    path = run_copy.predictions_dir / f"{run_copy.prediction_ids()[0]}.npz"
    _truncate(path)
    with pytest.raises(ValueError, match=f"{path} is not a readable prediction"):
        views.overlays([run_copy], run_copy.prediction_ids()[0])


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_run_and_report_folders_that_cannot_be_written(tmp_path, capsys, monkeypatch, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    folder = {"a file": blocker, "under a file": blocker / "runs"}.get(where, tmp_path / "ro")
    if where == "read-only":  # as root every folder is writable: make it say no
        folder.mkdir()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == folder else real(p, m))
    expected = "is a file" if where != "read-only" else "is not writable"
    assert (
        main(["train", "--dataset", "synthetic", "--run-root", str(folder), "--epochs", "1"]) == 2
    )
    assert "the run folder" in (line := error_line(capsys)) and expected in line
    assert main(["report", str(tmp_path), "--out", str(folder / "report")]) == 2
    assert "the report folder" in (line := error_line(capsys)) and expected in line
    assert blocker.read_text() == "x"
