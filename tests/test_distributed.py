"""Training and evaluation under torchrun (two CPU processes, gloo): the same files as one
process where the maths says they must be, resumable after a kill, and a loss that decreases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import SMALL_SYNTHETIC

from calibtut.runs import RunDir
from calibtut.train import evaluate
from calibtut.train.distributed import SINGLE, World, in_order, shard

TORCHRUN = Path(sys.executable).with_name("torchrun")
SCRIPT = """
import sys, torch
from calibtut.data import catalog
from calibtut.train import TrainConfig, train
small = catalog.spec("synthetic").replace(**{small!r})
real = catalog.spec
catalog.spec = lambda name: small if name == "synthetic" else real(name)
torch.set_num_threads(1)
epochs = int(sys.argv[2])
config = TrainConfig.for_dataset("synthetic", "hard", epochs=epochs, width=4, val_every=1, batch_size=1)
train(config, None, sys.argv[1], progress=False)
"""


def test_shards_cover_every_image_once_and_merge_back_in_order():
    dataset = list(range(7))
    parts = []
    for rank in range(3):
        part, indices = shard(dataset, World(rank, 3, rank))
        assert [part[i] for i in range(len(part))] == [dataset[i] for i in indices]
        parts.append([(i, f"image {i}") for i in indices])
    assert sorted(i for part in parts for i, _ in part) == dataset
    assert in_order(parts) == [f"image {i}" for i in dataset]
    assert shard(dataset, SINGLE) == (dataset, dataset)


def torchrun(tmp_path: Path, run_root: Path, epochs: int, wait: bool = True):
    script = tmp_path / "train_small.py"
    script.write_text(SCRIPT.format(small=SMALL_SYNTHETIC))
    argv = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(run_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    process = subprocess.Popen(
        [*argv, str(epochs)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if wait:
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0, out[-3000:]
    return process


@pytest.mark.slow
def test_two_processes_train_evaluate_as_one_and_resume_after_a_kill(tmp_path, small_synthetic):
    run = RunDir(tmp_path / "whole" / "synthetic" / "hard" / "seed_0")
    torchrun(tmp_path, tmp_path / "whole", epochs=3)
    config = run.config
    assert (config["world_size"], config["global_batch_size"], config["backend"]) == (2, 2, "gloo")
    history = run.history()
    assert history["train_patches"].tolist() == [6, 6, 6]  # every case once per epoch, in all
    assert history["val_images"].tolist() == [2, 2, 2]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert run.is_finished and len(run.results().image_ids) == 3

    # the distributed evaluation wrote what one process writes from the same weights
    two_processes = pd.read_csv(run.per_image_path)
    bins = dict(np.load(run.bins_path))
    torch.set_num_threads(1)
    evaluate(run, progress=False)
    one_process = pd.read_csv(run.per_image_path)
    pd.testing.assert_frame_equal(one_process, two_processes, rtol=1e-5, atol=1e-6)
    again = dict(np.load(run.bins_path))
    np.testing.assert_array_equal(again["image_ids"], bins["image_ids"])
    for key in ("pred_sum", "target_sum", "count", "floor_target_sums"):
        np.testing.assert_allclose(again[key], bins[key], rtol=1e-5, atol=1e-5)

    # killed after its first checkpoint, then resumed with torchrun: the uninterrupted run's files
    killed = RunDir(tmp_path / "killed" / "synthetic" / "hard" / "seed_0")
    process = torchrun(tmp_path, tmp_path / "killed", epochs=3, wait=False)
    deadline = time.time() + 300
    while not killed.history_path.is_file() and time.time() < deadline:
        time.sleep(0.05)
    subprocess.run(["pkill", "-9", "-f", str(tmp_path / "train_small.py")], check=False)
    process.wait()
    assert not killed.is_finished
    torchrun(tmp_path, tmp_path / "killed", epochs=3)
    pd.testing.assert_frame_equal(
        killed.history().drop(columns="epoch_time_s"), run.history().drop(columns="epoch_time_s")
    )
    a, b = killed.best()["model"], run.best()["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_of_the_command_line_trains_one_run_on_a_phantom(tmp_path):
    """What the README and notebooks 04-07 tell a user to type, on two CPU processes."""
    from calibtut.data import write_phantom

    data = write_phantom("acdc", tmp_path / "acdc", cases=6)
    argv = [
        str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "calibtut", "train",
        "--dataset", "acdc", "--data-dir", str(data), "--loss", "hard", "--epochs", "1",
        "--max-steps", "2", "--width", "4", "--patch-size", "32", "32", "16",
        "--val-window", "32", "32", "16", "--run-root", str(tmp_path / "runs"), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = RunDir(tmp_path / "runs" / "acdc" / "hard" / "seed_0")
    assert run.is_finished and run.is_evaluated
    assert (run.config["world_size"], run.config["backend"]) == (2, "gloo")
    assert run.config["global_batch_size"] == 2 * run.config["batch_size"]
    ids = list(run.results().image_ids)
    assert ids and len(set(ids)) == len(ids)  # every test image scored once, by one of the ranks
