"""No run that looks complete may rest on images it silently skipped; every error a user can
cause is one clear line (exit status 2) that names the problem and the file, before anything is
written. Each test here failed before its fix."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import Dataset

from calibtut.cli import main
from calibtut.data import write_phantom
from calibtut.runs import RunDir
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
