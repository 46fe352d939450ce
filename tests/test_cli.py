"""The command line: train/evaluate/report on a phantom in its real layout, the demo (on a small
synthetic set), phantoms, and bad input: one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calibtut.cli import main
from calibtut.data import spec as real_spec
from calibtut.data import write_phantom
from calibtut.runs import RunDir

TINY_ACDC = [
    "--epochs", "1", "--max-steps", "2", "--width", "4",
    "--patch-size", "32", "32", "16", "--val-window", "32", "32", "16",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    base = tmp_path_factory.mktemp("phantoms")
    return {name: write_phantom(name, base / name, seed=0) for name in ("acdc", "amos")}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["--help"], ["demo", "train", "evaluate", "report", "phantom"]),
        (["train", "--help"], ["baseline", "soft", "acdc", "brats"]),
    ],
)
def test_help_loads_neither_torch_nor_monai(argv, shown):
    probe = (
        f"import sys, runpy; sys.argv = ['calibtut', *{argv!r}]\n"
        "try:\n    runpy.run_module('calibtut', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'monai', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for word in shown:  # commands, and the choices of losses and datasets without loading them
        assert word in done.stdout
    assert "loaded: []" in done.stdout


def test_import_calibtut_is_lazy():
    probe = (
        "import sys, calibtut\n"
        "assert calibtut.__version__\n"
        "assert 'torch' not in sys.modules and 'monai' not in sys.modules\n"
        "calibtut.BinStats\n"
        "assert 'torch' in sys.modules and 'monai' not in sys.modules\n"
        "from calibtut.train import TrainConfig\n"
        "TrainConfig.for_dataset('synthetic')\n"
        "assert 'monai' not in sys.modules\n"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "mnist"], "calibtut train: error: unknown dataset 'mnist'"),
        (["train", "--dataset", "synthetic", "--data-dir", "x"], "is generated in memory"),
        (["train", "--dataset", "acdc", "--epochs", "0"], "epochs must be a positive integer"),
        (["demo", "--seeds", "0"], "--seeds must be a positive integer"),
        (["phantom", "mnist", "p"], "unknown dataset 'mnist'"),
        (["phantom", "synthetic", "p"], "generated in memory"),
        (["evaluate", "nowhere"], "nowhere is not a run directory"),
        (["report", "nowhere", "--out", "r"], "neither a run directory nor a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "acdc", "--loss", "medium"], "invalid choice: 'medium'"),
        (["train", "--loss", "hard"], "the following arguments are required: --dataset"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in error_line(capsys)


def test_data_dir_of_another_dataset_writes_nothing(phantoms, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [
        "train",
        "--dataset",
        "acdc",
        "--data-dir",
        str(phantoms["amos"]),
        "--run-root",
        str(runs),
    ]
    assert main(argv + TINY_ACDC) == 2
    assert "acdc: missing folder" in error_line(capsys)
    assert not runs.exists()


@pytest.mark.slow
def test_train_evaluate_report_on_a_phantom(phantoms, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [
        "train",
        "--dataset",
        "acdc",
        "--data-dir",
        str(phantoms["acdc"]),
        "--run-root",
        str(runs),
    ]
    assert main(argv + ["--loss", "soft"] + TINY_ACDC) == 0
    run = RunDir(runs / "acdc" / "soft" / "seed_0")
    assert run.is_evaluated and "## acdc" in capsys.readouterr().out
    assert run.config["data_dir"] == str(phantoms["acdc"].resolve())
    classes = set(run.results().per_image["class_name"])
    assert classes == {"right ventricle", "myocardium", "left ventricle"}
    before = snapshot(run.path)

    assert main(argv + ["--loss", "soft"] + TINY_ACDC) == 2  # finished: refused
    assert "is a finished run; pass overwrite=True (--overwrite)" in error_line(capsys)

    assert main(["evaluate", str(run.path), "--data-dir", str(phantoms["amos"])]) == 2
    assert "acdc: missing folder" in error_line(capsys)
    assert snapshot(run.path) == before

    assert main(["evaluate", str(run.path)]) == 0  # the recorded data dir
    capsys.readouterr()
    assert run.results().per_image.equals(RunDir(run.path).results().per_image)
    assert run.config["phantom"] is True

    assert main(["report", str(runs), "--out", str(tmp_path / "report")]) == 0
    assert "right ventricle" in capsys.readouterr().out
    assert (tmp_path / "report" / "report.md").is_file()

    run.checkpoint_path.write_bytes(b"\x00garbage")
    before = snapshot(run.path)
    assert main(["evaluate", str(run.path)]) == 2
    assert "not a readable checkpoint" in error_line(capsys)
    assert snapshot(run.path) == before


def test_phantom_command(tmp_path, capsys):
    assert main(["phantom", "kits", str(tmp_path / "kits")]) == 0
    assert "kits phantom written" in capsys.readouterr().out
    assert real_spec("kits").cases(tmp_path / "kits", "train")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["phantom", "acdc", str(tmp_path / "mine")]) == 2
    assert "is not a calibtut phantom" in error_line(capsys)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_demo_trains_three_losses_reports_and_reuses(tmp_path, capsys, small_synthetic):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--jobs", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| organ |" in printed and "Δ% soft" in printed and "report written to" in printed
    for loss in ("baseline", "hard", "soft"):
        assert RunDir(out / "synthetic" / loss / "seed_0").is_evaluated
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()
    checkpoints = snapshot(out / "synthetic")
    assert main(["demo", "--out", str(out), "--epochs", "1", "--jobs", "1"]) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 3
    assert snapshot(out / "synthetic") == checkpoints
    assert main(["demo", "--out", str(out), "--epochs", "2", "--jobs", "1"]) == 2
    # refused before any run trains: the first run decided names what differs
    assert "different config (epochs: 1 in the run, 2 now)" in error_line(capsys)
    assert snapshot(out / "synthetic") == checkpoints
