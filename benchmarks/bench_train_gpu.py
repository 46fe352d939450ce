"""Training-step time and peak GPU memory of Dice+CE vs + hard vs + soft mL1-ACE (calibtut.train).

Two measurements, each with the real training step (``calibtut.train.Training.step``: the paper's
SegResNetDS with deep supervision, AdamW, AMP):

1. ACDC: a few epochs on an ACDC phantom (written to a temporary folder, read by the real
   loaders) at the paper's patch size (256 x 256 x 16), batch 2: mean step time (after the first
   epoch, which pays for cudnn autotuning) and peak memory per loss.
2. AMOS: peak memory of a few steps at the paper's AMOS patch size (176 x 176 x 64, 16 classes),
   batch 2, on random data: the reference implementation of soft mL1-ACE ran out of memory there.

Targets (printed beside the numbers): mL1-ACE adds < 10% step time over Dice+CE, and soft fits
in the memory of hard at the AMOS patch size. Not pass/fail.

    python benchmarks/bench_train_gpu.py           # on a GPU (about 2 minutes on an H100)
    python benchmarks/bench_train_gpu.py --tiny    # a CPU smoke run at tiny sizes (no targets)
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import monai
import torch
from monai.data import ThreadDataLoader

from calibtut.data import spec, write_phantom
from calibtut.methods import LOSSES
from calibtut.train import TrainConfig, Training, select_device

PAPER = {"acdc": (256, 256, 16), "amos": (176, 176, 64), "amos_full": (192, 192, 64)}
TINY = {"acdc": (32, 32, 16), "amos": (32, 32, 16), "amos_full": (48, 48, 16)}
STEP_TIME_TARGET = 1.10  # mL1-ACE step time / Dice+CE step time


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def cell(value: float, width: int, digits: int = 2, suffix: str = "") -> str:
    """A right-aligned number, or a dash where it was not measured (memory on a CPU)."""
    text = "—" if math.isnan(value) else f"{value:.{digits}f}{suffix}"
    return f"{text:>{width}}"


def acdc_epochs(
    loss: str, root: Path, patch: tuple[int, ...], width: int, epochs: int, device: torch.device
) -> tuple[float, float, float, int]:
    """Mean step time and mean epoch time (s) after the first epoch, peak memory (GiB), steps.

    The step time brackets ``Training.step`` alone with synchronisations (data loading excluded);
    the epoch time is the wall time of the epoch, loading and augmentation included.
    """
    config = TrainConfig.for_dataset("acdc", loss, 0, patch_size=patch, width=width, epochs=epochs)
    data = config.dataset_spec()
    dataset = data.dataset(root, "train")
    loader = ThreadDataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, pin_memory=device.type == "cuda"
    )
    training = Training.create(config, data, device, total_steps=epochs * len(loader))
    reset_peak(device)
    step_time, epoch_time, steps = 0.0, 0.0, 0
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        for batch in loader:
            images = batch["image"].as_tensor().to(device, non_blocking=True)
            labels = batch["label"].as_tensor().to(device, non_blocking=True)
            synchronize(device)
            start = time.perf_counter()
            loss_value = training.step(images, labels)
            synchronize(device)
            if epoch > 0:
                step_time += time.perf_counter() - start
                steps += 1
        if not torch.isfinite(loss_value):
            raise FloatingPointError(f"{loss}: loss {float(loss_value)} in epoch {epoch + 1}")
        if epoch > 0:
            epoch_time += time.perf_counter() - epoch_start
    return step_time / max(steps, 1), epoch_time / max(epochs - 1, 1), peak_gib(device), steps


def amos_memory(
    loss: str, patch: tuple[int, ...], width: int, steps: int, device: torch.device
) -> float:
    """Peak memory (GiB) of ``steps`` training steps at ``patch`` with AMOS's 16 classes."""
    config = TrainConfig.for_dataset("amos", loss, 0, patch_size=patch, width=width)
    data = config.dataset_spec()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(config.batch_size, data.in_channels, *patch, generator=generator).to(
        device
    )
    labels = torch.randint(
        0, data.out_channels, (config.batch_size, 1, *patch), generator=generator
    ).to(device)
    training = Training.create(config, data, device, total_steps=steps)
    reset_peak(device)
    for _ in range(steps):
        training.step(images, labels)
    synchronize(device)
    return peak_gib(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny patches and network (CPU smoke run)"
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="ACDC epochs per loss (first untimed)"
    )
    parser.add_argument("--cases", type=int, default=12, help="ACDC phantom patients")
    parser.add_argument("--device", help="default: the best available")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    sizes, width = (TINY, 4) if args.tiny else (PAPER, 32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    preset = TrainConfig.for_dataset("acdc")
    print(
        f"device {device} ({name}); torch {torch.__version__}, MONAI {monai.__version__}, Python {sys.version.split()[0]}"
    )
    print(
        f"AMP: {'bf16' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else 'fp16' if device.type == 'cuda' else 'off (CPU)'}"
        f" (TrainConfig.amp={preset.amp}); SegResNetDS width {width}, batch {preset.batch_size}"
    )

    with tempfile.TemporaryDirectory() as folder:
        root = write_phantom("acdc", Path(folder) / "acdc", cases=args.cases, seed=0)
        n_train = len(spec("acdc").cases(root, "train"))
        # One untimed pass first, so no loss pays the process's one-time costs (allocator, kernels).
        acdc_epochs("baseline", root, sizes["acdc"], width, 1, device)
        print(
            f"\nACDC phantom ({n_train} training frames), patch {sizes['acdc']}, {args.epochs} epochs per loss"
        )
        print(
            f"{'loss':<9} {'step ms':>9} {'vs Dice+CE':>11} {'epoch s':>8} {'peak GiB':>9} "
            f"{'steps timed':>12}"
        )
        acdc = {}
        for loss in LOSSES:
            acdc[loss] = acdc_epochs(loss, root, sizes["acdc"], width, args.epochs, device)
            step, epoch, peak, steps = acdc[loss]
            ratio = step / acdc["baseline"][0]
            print(
                f"{loss:<9} {step * 1000:>9.1f} {ratio:>10.3f}x {epoch:>8.2f} {cell(peak, 9)} "
                f"{steps:>12}",
                flush=True,
            )

    # the paper's AMOS patch (reduced "to avoid OOM with soft loss") and the full 192 x 192 x 64
    amos_by_patch = {}
    for key in ("amos", "amos_full"):
        print(f"\nAMOS patch {sizes[key]}, 16 classes: peak memory of 3 steps")
        print(f"{'loss':<9} {'peak GiB':>9} {'vs hard':>8}")
        amos = amos_by_patch[key] = {}
        for loss in ("hard", "soft", "baseline"):
            try:
                amos[loss] = amos_memory(loss, sizes[key], width, steps=3, device=device)
            except torch.OutOfMemoryError:
                amos[loss] = math.inf  # printed as inf: it does not fit
            ratio = amos[loss] / amos["hard"] if amos["hard"] > 0 else math.nan
            print(f"{loss:<9} {cell(amos[loss], 9)} {cell(ratio, 7, suffix='x')}", flush=True)
    amos = amos_by_patch["amos"]

    if device.type == "cuda" and not args.tiny:
        base = acdc["baseline"][0]
        print("\ntargets:")
        for loss in ("hard", "soft"):
            ratio = acdc[loss][0] / base
            print(
                f"  {loss} step time {ratio:.3f}x Dice+CE (target < {STEP_TIME_TARGET:.2f}x): {'met' if ratio < STEP_TIME_TARGET else 'NOT met'}"
            )
        fits = amos["soft"] <= amos["hard"] * 1.05
        print(
            f"  soft peak memory at the AMOS patch {amos['soft']:.2f} GiB vs hard {amos['hard']:.2f} GiB: {'same memory' if fits else 'MORE memory'}"
        )
        full = amos_by_patch["amos_full"]["soft"]
        print(
            f"  soft at the full AMOS patch {sizes['amos_full']}: "
            + ("out of memory" if math.isinf(full) else f"fits, {full:.2f} GiB")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
