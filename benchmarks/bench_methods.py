"""Training-step time and peak memory of every training loss, relative to Dice+CE (``make bench``).

Each loss is built as training builds it (:func:`calibtut.train.build_loss`, inside
:class:`calibtut.train.build.Training`) and timed in a full training step: the network's forward
pass, the loss, the backward pass and the AdamW step. Two shapes, measured side by side in one
run on one machine:

* ``synthetic``: the synthetic preset's step, 9 patches of 128 x 128, 4 classes, the UNet of width
  8 (``calibtut.train.config.PRESETS["synthetic"]``);
* ``acdc``: an ACDC-like step, 2 patches of 128 x 128 x 16, 4 classes, the same UNet of width 8
  in 3D; ``--paper-network`` trains the ACDC preset's network instead (the paper's SegResNetDS
  of width 32, the loss on 4 deep-supervision outputs), whose step is so much longer that every
  loss costs the same to within the noise.

The loss's own forward+backward on fixed network outputs is timed too, so that a step's extra
cost can be traced to the loss. Not pass/fail. Method and caveats: benchmarks/README.md.

    python benchmarks/bench_methods.py                      # both shapes (about 5 min on 2 cores)
    python benchmarks/bench_methods.py --shapes synthetic --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from calibtut.methods import BASELINE, TRAINING_LOSSES, method
from calibtut.train import TrainConfig
from calibtut.train.build import Training

SHAPES = {
    "synthetic": ("synthetic", 9, (128, 128)),
    "acdc": ("acdc", 2, (128, 128, 16)),
}
"""Per shape: the dataset whose spec (channels, classes) is used, the patches per step and the
patch size."""
SMALL_NETWORK = {"network": "unet", "width": 8}  # the synthetic preset's
DESCRIPTIONS = {
    "synthetic": "9 patches 128x128, 4 classes, UNet width 8 (the synthetic preset)",
    "acdc": "2 patches 128x128x16, 4 classes, UNet width 8 in 3D",
    "acdc paper": "2 patches 128x128x16, 4 classes, SegResNetDS width 32 + deep supervision "
    "(the ACDC preset)",
}


def make_training(
    shape: str, loss: str, paper_network: bool = False
) -> tuple[Training, torch.Tensor, torch.Tensor]:
    """The training state of ``loss`` at ``shape`` and one batch: an input and a blob-like label
    map (the argmax of smooth noise, so that every class forms regions as in an image)."""
    dataset, batch, spatial = SHAPES[shape]
    network = {} if paper_network else SMALL_NETWORK
    config = TrainConfig.for_dataset(
        dataset, loss, patch_size=spatial, val_window=spatial, **network
    )
    data = config.dataset_spec()
    training = Training.create(config, data, torch.device("cpu"), total_steps=1000)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn((batch, data.in_channels, *spatial), generator=gen)
    coarse = torch.randn(
        (batch, data.out_channels, *(max(2, s // 16) for s in spatial)), generator=gen
    )
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    labels = F.interpolate(coarse, size=spatial, mode=mode).argmax(1, keepdim=True)
    return training, images, labels


def loss_only(training: Training, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """The loss's forward+backward on fixed network outputs (leaves that require grad)."""
    training.model.train()
    with torch.no_grad():
        outputs = training.model(images)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    leaves = [o.detach().requires_grad_() for o in outputs]
    target = labels.float()

    def run() -> None:
        loss = training.loss_fn(leaves if len(leaves) > 1 else leaves[0], target)
        loss.backward()
        for leaf in leaves:
            leaf.grad = None

    return run


def timings(shape: str, repeats: int, paper_network: bool) -> dict[str, tuple[float, float]]:
    """Per loss: the best step time and the best loss-only time (s), round-robin over the losses
    (one of each in turn), so that a slow spell of a shared machine hits them all alike."""
    cases = {}
    for loss in TRAINING_LOSSES:
        training, images, labels = make_training(shape, loss, paper_network)
        step = lambda t=training, x=images, y=labels: t.step(x, y)  # noqa: E731
        alone = loss_only(training, images, labels)
        step()  # warm-up: optimiser state, one-time kernels
        alone()
        cases[loss] = (step, alone)
    best = {loss: [float("inf"), float("inf")] for loss in TRAINING_LOSSES}
    for _ in range(repeats):
        for loss, fns in cases.items():
            for k, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                best[loss][k] = min(best[loss][k], time.perf_counter() - start)
    return {loss: (step, alone) for loss, (step, alone) in best.items()}


# --- Peak memory: a fresh process per case ------------------------------------------------------


def _resident_kib(field: str) -> int:
    status = open("/proc/self/status").read()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))


def measure_peak(shape: str, loss: str, paper_network: bool = False) -> float:
    """Peak memory (MiB) of one training step beyond the state it starts from, in this (fresh)
    process: after one warm-up step (the optimiser's state exists), the kernel's resident
    high-water mark is reset (``/proc/self/clear_refs``) and ``VmHWM`` read after the next step;
    that counts every page the step touched (activations, gradients, the loss's temporaries)."""
    training, images, labels = make_training(shape, loss, paper_network)
    training.step(images, labels)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _resident_kib("VmHWM")
    training.step(images, labels)
    return (_resident_kib("VmHWM") - before) / 1024


def peak_in_subprocess(shape: str, loss: str, threads: int, paper_network: bool) -> float:
    """``measure_peak`` in a fresh process, with a fixed glibc mmap threshold (see
    bench_losses.py: it keeps small results from wandering by several MiB)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    command = [sys.executable, __file__, "--peak", shape, loss, "--threads", str(threads)]
    command += ["--paper-network"] if paper_network else []
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


# --- The table -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--paper-network",
        action="store_true",
        help="the ACDC shape with the ACDC preset's SegResNetDS (slow on a CPU)",
    )
    parser.add_argument("--peak", nargs=2, metavar=("SHAPE", "LOSS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak:
        print(json.dumps({"peak_mib": measure_peak(*args.peak, args.paper_network)}))
        return
    threads = torch.get_num_threads()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# calibtut training-loss benchmark: torch {torch.__version__}, {threads} threads, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    print(
        f"# one training step (forward, loss, backward, AdamW), best of {args.repeats} "
        "round-robin runs after a warm-up; loss alone: its forward+backward on fixed outputs; "
        "peak memory of one step from a fresh process per case"
    )
    start = time.perf_counter()
    results = {}
    for shape in args.shapes:
        paper = args.paper_network and shape == "acdc"
        times = timings(shape, args.repeats, paper)
        peaks = {loss: peak_in_subprocess(shape, loss, threads, paper) for loss in TRAINING_LOSSES}
        results[shape] = (times, peaks)
    print()
    for shape in args.shapes:
        paper = args.paper_network and shape == "acdc"
        print(f"# {shape}: {DESCRIPTIONS[shape + ' paper' * paper]}")
    print()
    header = ["loss"]
    for shape in args.shapes:
        header += [f"{shape} step ms", "x Dice+CE", "loss ms", "peak MiB", "x Dice+CE"]
    print("| " + " | ".join(header) + " |")
    print("|---" + "|---:" * (len(header) - 1) + "|")
    for loss in TRAINING_LOSSES:
        cells = [f"{loss} ({method(loss).title})"]
        for shape in args.shapes:
            times, peaks = results[shape]
            step, alone = times[loss]
            cells += [
                f"{step * 1e3:.0f}",
                f"{step / times[BASELINE][0]:.2f}",
                f"{alone * 1e3:.1f}",
                f"{peaks[loss]:.0f}",
                f"{peaks[loss] / peaks[BASELINE]:.2f}",
            ]
        print("| " + " | ".join(cells) + " |")
    print(f"\n# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
