"""The training loop: one plain PyTorch loop that a student can read top to bottom, GPU-first.

* no host-device synchronisation inside a step: the loss is summed on the device and checked
  for NaN/inf only where it is logged, which raises an error naming the epoch and step;
* validation every ``val_every`` epochs (and after the last) with sliding-window inference;
  ``best.pt`` keeps the weights with the best validation Dice and ``checkpoint.pt`` the last
  resumable state; after the last epoch the run is evaluated on its test split;
* :func:`train_many` decides every run first (train, resume or reuse, through
  :meth:`calibtut.runs.RunDir.plan`) and then trains what is left, side by side on a CPU.

Every epoch starts from random states derived from ``(seed, epoch)`` alone, so a run resumed
from its last checkpoint continues exactly as the uninterrupted run would have: deterministic
for a fixed thread count on a CPU (``config.json`` records it and a resume uses it again), and
with ``deterministic=True`` on a GPU.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from torch.utils.data import DistributedSampler

import calibtut
from calibtut.data import DatasetSpec
from calibtut.data.phantoms import MARKER as PHANTOM_MARKER
from calibtut.methods import TRAINING_LOSSES
from calibtut.runs import SCORE_COLUMNS, RunDir, check_writable_folder, run_path
from calibtut.train.build import (
    Training,
    check_count,
    check_sizes,
    data_loader,
    plain_tensor,
    progress_bar,
    select_device,
)
from calibtut.train.config import TrainConfig
from calibtut.train.distributed import World, barrier, gather, start, stop
from calibtut.train.evaluation import evaluate, validate

__all__ = ["train", "train_many"]


def train(
    config: TrainConfig,
    data_dir: str | Path | None = None,
    run_root: str | Path = "runs",
    *,
    run_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunDir:
    """Train ``config`` on ``data_dir`` into ``run_root/<dataset>/<loss>/seed_<n>`` and evaluate.

    Args:
        config: what to train.
        data_dir: the dataset's folder (None for the synthetic data).
        run_root: where run directories go (``run_dir`` names one directly).
        device: None picks CUDA, then Apple MPS, then the CPU.
        overwrite: replace a finished run, or one made with another config.
        progress: tqdm progress bars and a line per validation.

    Returns:
        The trained and evaluated run.

    Raises:
        FileExistsError: the run is finished, or holds another config, and not ``overwrite``
            (:func:`train_many` reuses a finished run instead).
        ValueError, FileNotFoundError: bad data or configuration, before anything is written.
        FloatingPointError: the loss became NaN or infinite.

    Example:
        >>> config = TrainConfig.for_dataset("synthetic", "soft", epochs=1, max_steps=2)
        >>> run = train(config, run_root="/tmp/runs", progress=False)  # doctest: +SKIP
    """
    data = config.dataset_spec()
    check_writable_folder(run_dir if run_dir is not None else run_root, "the run folder")
    here, device = start(select_device(device))
    progress = progress and here.is_main
    run = RunDir(
        run_dir
        if run_dir is not None
        else run_path(run_root, config.dataset, config.loss, config.seed)
    )
    run.plan(config.to_dict(), overwrite)  # refuse another config's run before any check
    check_sizes(config, data)
    train_ds = data.dataset(data_dir, "train")
    val_ds = data.dataset(data_dir, "val")
    data.check_cases(data.cases(data_dir, "test"))  # the test split too, before hours of training
    with run.lock() if here.is_main else nullcontext():
        plan = run.plan(config.to_dict(), overwrite)  # again, now that the run is ours
        if plan == "reuse":
            raise FileExistsError(
                f"{run.path} is a finished run; pass overwrite=True (--overwrite) to train it again"
            )
        if plan == "train":
            if here.is_main:
                run.clear()
                run.write_config(_run_config(config, data, device, data_dir, here))
            barrier(here)
        else:
            _check_resumable(run, device, here)
        training, state, total_steps = _start(run, plan, config, data, device, len(train_ds), here)
        if not state["finished"]:
            epochs = (training, run, config, data, train_ds, val_ds, state, total_steps, progress)
            _train_epochs(*epochs, here)
        evaluate(run, data_dir, device=device, progress=progress)
    stop(here)
    return run


def _check_resumable(run: RunDir, device: torch.device, here: World) -> None:
    """A run resumes with the processes and threads it was started with: its results depend on
    both (how the batches are shared, the order of a sum). What a kill left half-written goes."""
    if here.is_main:
        run.remove_orphans()
    recorded = run.config
    size = int(recorded.get("world_size", 1))
    if size != here.size:
        raise ValueError(
            f"{run.path} was trained by {size} process(es), not {here.size}: resume it with "
            f"torchrun --nproc_per_node {size} (or pass --overwrite to start again)"
        )
    if device.type == "cpu" and recorded.get("threads"):
        torch.set_num_threads(int(recorded["threads"]))


def _start(
    run: RunDir,
    plan: str,
    config: TrainConfig,
    data: DatasetSpec,
    device: torch.device,
    train_images: int,
    here: World,
) -> tuple[Training, dict[str, Any], int]:
    """The training state to start from (fresh, or the run's last checkpoint) and the total
    number of optimiser steps (of each process: it sees its share of the cases)."""
    share = math.ceil(train_images / here.size)
    total_steps = config.epochs * math.ceil(share / config.batch_size)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    training = Training.create(config, data, device, total_steps, distributed=here.distributed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    state = {"epoch": 0, "step": 0, "best_dice": None, "history": [], "finished": False}
    if plan == "resume":
        saved = run.checkpoint()  # refused if it is another run's
        training.load_state_dict(saved)
        state = {k: saved[k] for k in state}
        if here.is_main:  # a kill between the checkpoint and history.csv lost the last row
            run.write_history(state["history"])
    return training, state, total_steps


def _train_epochs(
    training: Training,
    run: RunDir,
    config: TrainConfig,
    data: DatasetSpec,
    train_ds: monai.data.Dataset,
    val_ds: monai.data.Dataset,
    state: dict[str, Any],
    total_steps: int,
    progress: bool,
    here: World,
) -> None:
    """Epochs from the one after ``state["epoch"]`` to the last, validating and checkpointing
    (rank 0 writes; every rank validates its share and decides the same best epoch)."""
    first_epoch = state["epoch"] + 1
    # updated by hand at the end of each epoch, so that the bar ends at 100 % (iterating it would
    # count the last epoch only on the next iteration, which the break below never asks for)
    epochs = progress_bar(
        desc=run.name,
        initial=first_epoch - 1,
        total=config.epochs,
        unit="epoch",
        disable=not progress,
    )
    for epoch in range(first_epoch, config.epochs + 1):
        row = _train_epoch(training, train_ds, config, epoch, state, progress, here)
        epochs.set_postfix(
            loss=f"{row['train_loss']:.4f}", lr=f"{row['lr']:.2e}", s=f"{row['epoch_time_s']:.1f}"
        )
        last = epoch == config.epochs or state["step"] >= total_steps
        if epoch % config.val_every == 0 or last:
            scores = validate(
                training.network, val_ds, data, config.num_bins, training.device,
                training.amp_dtype, here,
            )  # fmt: skip
            row.update(scores)
            dice = -math.inf if math.isnan(scores["val_dice"]) else scores["val_dice"]
            if state["best_dice"] is None or dice > state["best_dice"]:
                state["best_dice"] = dice
                if here.is_main:
                    best = {"model": training.network.state_dict(), "dataset": config.dataset}
                    run.write_best({**best, "epoch": epoch})
            if progress:
                epochs.write(_format_scores(epoch, row), file=sys.stdout)
        state["history"].append(row)
        state["epoch"] = epoch
        state["finished"] = last
        if here.is_main:
            saved = {**training.state_dict(), **state}
            run.write_checkpoint({**saved, "dataset": config.dataset, "config": config.to_dict()})
            run.write_history(state["history"])
        barrier(here)
        epochs.update(1)
        if last:
            break
    epochs.close()


def _train_epoch(
    training: Training,
    dataset: monai.data.Dataset,
    config: TrainConfig,
    epoch: int,
    state: dict[str, Any],
    progress: bool,
    here: World,
) -> dict[str, Any]:
    """One pass over the training set (this process's share of it); returns the epoch's
    history row, its loss averaged over the processes."""
    key = (config.seed, epoch, here.rank) if here.distributed else (config.seed, epoch)
    generator = _seed_everything(*key)  # each process augments differently
    device = training.device
    order: dict[str, Any] = {"shuffle": True, "generator": generator}
    if here.distributed:  # each rank its share, reshuffled every epoch from (seed, epoch)
        sampler = DistributedSampler(dataset, here.size, here.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
        order = {"sampler": sampler}
    loader = data_loader(
        dataset,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        **order,
    )
    cases = len(order["sampler"]) if here.distributed else len(dataset)
    log_every = 1 if device.type == "cpu" else 20
    loss_sum = torch.zeros((), device=device)
    steps = images = 0
    start = time.perf_counter()
    bar = progress_bar(
        loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not progress
    )
    for batch in bar:
        loss = training.step(
            plain_tensor(batch["image"], device), plain_tensor(batch["label"], device)
        )
        loss_sum += loss
        steps += 1
        images += len(batch["id"])
        state["step"] += 1
        if steps % log_every == 0:
            mean = _finite_loss(loss_sum / steps, epoch, state["step"])
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{training.lr:.2e}")
        if config.max_steps is not None and state["step"] >= config.max_steps:
            break
    else:  # a whole epoch: it must have seen every patch of every case
        check_count(images, cases * samples_per_case(dataset), f"training epoch {epoch}")
    bar.close()
    mean = _finite_loss(loss_sum / max(steps, 1), epoch, state["step"])
    if here.distributed:
        mean = sum(gather(mean, here)) / here.size
        images = sum(gather(images, here))
    return {
        "epoch": epoch,
        "step": state["step"],
        "train_patches": images,
        "train_loss": mean,
        "lr": training.lr,
        "epoch_time_s": time.perf_counter() - start,
    }


def _finite_loss(loss: torch.Tensor, epoch: int, step: int) -> float:
    value = float(loss)  # the one host-device synchronisation, where the loss is logged
    if not math.isfinite(value):
        raise FloatingPointError(
            f"training loss became {value} by epoch {epoch}, step {step}: lower the learning "
            "rate, check the data for NaN, or train without AMP (amp=False)"
        )
    return value


def _format_scores(epoch: int, row: dict[str, Any]) -> str:
    return (
        f"epoch {epoch}: loss {row['train_loss']:.4f}, val Dice {row['val_dice']:.4f}, "
        f"ECE {row['val_ece']:.4f}, ACE {row['val_ace']:.4f}, MCE {row['val_mce']:.4f}"
    )


def samples_per_case(dataset: monai.data.Dataset) -> int:
    """Patches one case gives per epoch: the crop's ``num_samples`` (MONAI's dictionary crops
    keep it on their array ``cropper``; 1 without such a crop)."""
    transforms = getattr(getattr(dataset, "transform", None), "transforms", ())
    counts = [getattr(getattr(t, "cropper", t), "num_samples", 1) for t in transforms]
    return max([int(c or 1) for c in counts] or [1])


def _seed_everything(*key: int) -> torch.Generator:
    """Seed Python, NumPy and torch from ``key`` (e.g. seed, epoch); return a torch generator."""
    state = np.random.SeedSequence(list(key)).generate_state(2)
    value = int(state[0]) << 32 | int(state[1])
    random.seed(value)
    np.random.seed(int(state[0]))
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def _run_config(
    config: TrainConfig, data: DatasetSpec, device: torch.device, data_dir: Any, here: World
) -> dict[str, Any]:
    """config.json: the training config plus what is needed to read and reproduce the run."""
    from calibtut.train.build import amp_dtype

    return {
        **config.to_dict(),
        # the evaluated channels (per_image.csv's class_index, bins, overlays) and the network's
        "class_names": list(data.evaluated_names),
        "output_names": list(data.class_names),
        "background_channel": data.background_channel,
        "scored_classes": [name for _, name in data.scored_classes],
        "regions": {name: list(members) for name, members in data.regions},
        "include_background": data.include_background,
        "in_channels": data.in_channels,
        "spatial_dims": data.spatial_dims,
        "spec_patch_size": list(data.patch_size),
        "spec_val_window": list(data.val_window),
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        # a phantom's numbers are a pipeline check: reports and the paper comparison say so
        "phantom": data_dir is not None and (Path(data_dir) / PHANTOM_MARKER).is_file(),
        "seeding": (
            f"torch.manual_seed({config.seed}) before the weights; Python, NumPy and torch "
            f"(and the data order and augmentation) from SeedSequence([{config.seed}, epoch"
            f"{', rank' if here.distributed else ''}]) at the start of every epoch"
            + (
                f"; each rank's cases from DistributedSampler(seed={config.seed}).set_epoch(epoch)"
                if here.distributed
                else ""
            )
        ),
        # several processes (torchrun): the global batch is batch_size x world_size, with the
        # learning rate as configured (not scaled)
        "world_size": here.size,
        "global_batch_size": config.batch_size * here.size,
        "backend": ("nccl" if device.type == "cuda" else "gloo") if here.distributed else None,
        "device": str(device),
        # CPU results are deterministic for a fixed thread count, which a resume reuses
        "threads": torch.get_num_threads(),
        "amp_dtype": str(amp_dtype(config, device)),
        "versions": {
            "calibtut": calibtut.__version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


# --- several runs ---------------------------------------------------------------------------


def train_many(
    configs: Sequence[TrainConfig],
    data_dir: str | Path | None = None,
    run_root: str | Path = "runs",
    *,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    jobs: int | None = 1,
    progress: bool = True,
) -> list[RunDir]:
    """Train (or reuse) several runs: the one train/resume/reuse decision of calibtut.

    Every run is decided before any trains, so a run of another config under ``run_root`` is
    refused before hours are spent on the others. A finished run of the same config is reused,
    an interrupted one resumes, the rest train; each decision is printed. A reused run evaluated
    before calibtut saved the Brier score, NLL and equal-mass ECE is evaluated again (its
    weights, so its Dice and calibration errors, unchanged), so that every run returned has them.

    Args:
        configs: the runs, e.g. one per loss.
        data_dir: the dataset's folder (None for the synthetic data).
        run_root: where the run directories go.
        device: None picks CUDA, then Apple MPS, then the CPU.
        overwrite: retrain finished runs and replace runs of another config.
        jobs: runs trained at once on a CPU, each in its own process with an equal share of the
            cores (small networks use one core far better than several); None: one per core.
            On a GPU runs train one after the other.
        progress: progress bars (only when runs train one at a time).

    Returns:
        The evaluated runs, in the order of ``configs``.

    Raises:
        FileExistsError: a run of another config is in the way and not ``overwrite``.
    """
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    resolved = select_device(device)
    check_writable_folder(run_root, "the run folder")
    runs = [RunDir(run_path(run_root, c.dataset, c.loss, c.seed)) for c in configs]
    todo, stale = [], []
    for config, run in zip(configs, runs, strict=True):
        plan = run.plan(config.to_dict(), overwrite)
        name = f"{config.dataset}/{config.loss}/seed_{config.seed}"
        if plan == "reuse":
            if set(SCORE_COLUMNS) <= set(run.results().per_image):
                print(f"{name}: reusing the finished run in {run.path}")
            else:
                print(
                    f"{name}: reusing the finished run in {run.path}, evaluated again (its "
                    "results predate the Brier score, NLL and equal-mass ECE)"
                )
                stale.append(run)
            continue
        doing = "resuming the interrupted run" if plan == "resume" else "training"
        print(f"{name}: {doing} on {resolved}")
        todo.append(config)
    # the slowest first (soft, then hard binning), then the others in the vocabulary's order
    first = {"soft": -2, "hard": -1}
    todo.sort(key=lambda c: first.get(c.loss, TRAINING_LOSSES.index(c.loss)))
    if jobs is None:
        jobs = (os.cpu_count() or 1) if resolved.type == "cpu" else 1
    jobs = min(jobs, max(len(todo), 1)) if resolved.type == "cpu" else 1
    for run in stale:
        evaluate(run, data_dir, device=resolved, progress=progress)
    if jobs == 1:
        for config in todo:
            train(
                config, data_dir, run_root, device=resolved, overwrite=overwrite, progress=progress
            )
        return runs
    _train_side_by_side(todo, data_dir, run_root, str(resolved), overwrite, jobs)
    return runs


def _train_side_by_side(
    configs: Sequence[TrainConfig],
    data_dir: str | Path | None,
    run_root: str | Path,
    device: str,
    overwrite: bool,
    jobs: int,
) -> None:
    """Train ``configs`` in ``jobs`` worker processes, each with an equal share of the cores."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_train_in_worker, c, data_dir, run_root, device, overwrite, threads)
            for c in configs
        ]
        for future in futures:
            name, seconds = future.result()
            print(f"  {name}: trained and evaluated in {seconds:.0f} s", flush=True)


def _train_in_worker(
    config: TrainConfig,
    data_dir: str | Path | None,
    run_root: str | Path,
    device: str,
    overwrite: bool,
    threads: int,
) -> tuple[str, float]:
    """Train one run in a worker process with ``threads`` torch threads; its name and time."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    run = train(config, data_dir, run_root, device=device, overwrite=overwrite, progress=False)
    return run.name, time.perf_counter() - start
