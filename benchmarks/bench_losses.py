"""Speed and memory of the mL1-ACE losses and the calibration metric (``make bench``).

Prints one table per shape: forward+backward time and peak memory of calibtut's hard and soft
losses beside a per-(image, class) loop written the way the paper's reference code is, and the
time of calibtut's ECE beside ``monai.metrics.calibration_binning`` (bins only) and MONAI's
``CalibrationErrorMetric``, all measured in this run on this machine. Not pass/fail: the
targets are printed with each ratio. Method and caveats: benchmarks/README.md.

    python benchmarks/bench_losses.py                 # all shapes (about 2-3 minutes on 2 cores)
    python benchmarks/bench_losses.py --shapes amos   # one shape
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
from monai.metrics import CalibrationErrorMetric, calibration_binning

from calibtut.losses import HardL1ACELoss, SoftL1ACELoss
from calibtut.metrics import calibration_error

SHAPES = {
    "2d": (8, 4, 256, 256),
    "acdc": (2, 4, 128, 128, 16),  # ACDC-like: 4 classes, anisotropic 3D patch
    "amos": (2, 16, 96, 96, 32),  # AMOS-like: 16 classes
}
NUM_BINS = 20
EMPTY_WEIGHT = 0.01
EPS32 = torch.finfo(torch.float32).eps
TARGETS = {"loss": 5.0, "metric": 3.0, "soft_memory": 1.5}


# --- The baselines: how a researcher writes it, one image and class at a time -----------------


def loop_hard_l1_ace(probs: torch.Tensor, target: torch.Tensor, num_bins: int = NUM_BINS):
    """Hard-binned mL1-ACE, one (image, class) at a time: bucketize + scatter_add, as in the
    paper's reference code and MONAI's calibration_binning."""
    batch, channels = probs.shape[:2]
    edges = torch.linspace(0.0, 1.0 + EPS32, num_bins + 1, device=probs.device)
    p_flat, t_flat = probs.flatten(2), target.flatten(2).float()
    mean_p = torch.zeros(batch, channels, num_bins, device=probs.device)
    mean_t = torch.zeros_like(mean_p)
    counts = torch.zeros_like(mean_p)
    for b in range(batch):
        for c in range(channels):
            p, t = p_flat[b, c], t_flat[b, c]
            idx = torch.bucketize(p, edges[1:]).clamp(max=num_bins - 1)
            count = torch.zeros(num_bins, device=p.device).scatter_add(0, idx, torch.ones_like(p))
            sum_p = torch.zeros(num_bins, device=p.device).scatter_add(0, idx, p)
            sum_t = torch.zeros(num_bins, device=p.device).scatter_add(0, idx, t)
            mean_p[b, c] = sum_p / count.clamp(min=1)
            mean_t[b, c] = sum_t / count.clamp(min=1)
            counts[b, c] = count
    mean_p[counts == 0] = float("nan")
    mean_t[counts == 0] = float("nan")
    return torch.nanmean((mean_p - mean_t).abs(), dim=-1).mean()


def loop_soft_l1_ace(
    probs: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = NUM_BINS,
    empty_weight: float = EMPTY_WEIGHT,
):
    """Soft-binned mL1-ACE, one (image, class) at a time, with the reference code's construction:
    half-bin boundaries locate each value between two centres (padded with far-away sentinels so
    that the tails fall wholly into the edge bins), and distance weights split it between them."""
    batch, channels = probs.shape[:2]
    half = torch.linspace(0.0, 1.0 + EPS32, 2 * num_bins + 1, device=probs.device)
    centres = half[1::2]
    far = torch.tensor([1e4], device=probs.device)
    padded = torch.cat([-far, centres.repeat_interleave(2), far])
    p_flat, t_flat = probs.flatten(2), target.flatten(2).float()
    mean_p = torch.zeros(batch, channels, num_bins, device=probs.device)
    mean_t = torch.zeros_like(mean_p)
    counts = torch.zeros_like(mean_p)
    for b in range(batch):
        for c in range(channels):
            p, t = p_flat[b, c], t_flat[b, c]
            h = torch.bucketize(p, half[1:])
            left = torch.div((h - 1).clamp(min=0), 2, rounding_mode="trunc")
            right = torch.div((h + 1).clamp(max=2 * num_bins - 1), 2, rounding_mode="trunc")
            to_left, to_right = p - padded[h], padded[h + 2] - p
            w_left, w_right = to_right / (to_left + to_right), to_left / (to_left + to_right)
            count = torch.zeros(num_bins, device=p.device).scatter_add(0, left, w_left)
            count = count.scatter_add(0, right, w_right)
            sum_p = torch.zeros(num_bins, device=p.device).scatter_add(0, left, w_left * p)
            sum_p = sum_p.scatter_add(0, right, w_right * p)
            sum_t = torch.zeros(num_bins, device=p.device).scatter_add(0, left, w_left * t)
            sum_t = sum_t.scatter_add(0, right, w_right * t)
            mean_p[b, c] = sum_p / count
            mean_t[b, c] = sum_t / count
            counts[b, c] = count
    mean_p[counts < empty_weight] = float("nan")
    mean_t[counts < empty_weight] = float("nan")
    return torch.nanmean((mean_p - mean_t).abs(), dim=-1).mean()


# --- Inputs and cases ----------------------------------------------------------------------------


def make_inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities of a confident network (most voxels near 0 or 1, as in segmentation)
    and a one-hot target, built in place so that no temporary outgrows the inputs."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.empty(shape).normal_(generator=gen).mul_(4.0)
    probs.sub_(probs.amax(1, keepdim=True)).exp_()
    probs.div_(probs.sum(1, keepdim=True))
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    target = torch.zeros(shape).scatter_(1, labels, 1.0)
    return probs, target


CASES: dict[str, Callable[[], Callable]] = {
    "hard": lambda: HardL1ACELoss(num_bins=NUM_BINS, ignore_empty_classes=False),
    "soft": lambda: SoftL1ACELoss(
        num_bins=NUM_BINS, empty_weight=EMPTY_WEIGHT, ignore_empty_classes=False
    ),
    "loop hard": lambda: loop_hard_l1_ace,
    "loop soft": lambda: loop_soft_l1_ace,
}


def forward_backward(case: str, probs: torch.Tensor, target: torch.Tensor) -> float:
    loss = CASES[case]()(probs, target)
    loss.backward()
    probs.grad = None
    return loss.item()  # .item() waits for a GPU, so the timings include the kernels


def cuda_peak_mib(case: str, probs: torch.Tensor, target: torch.Tensor) -> float:
    """On a GPU: the allocator's peak during one forward+backward, beyond the inputs."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    forward_backward(case, probs, target)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of ``repeats`` runs after one warm-up: the least disturbed by other load."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --- Peak memory: a fresh process per case ------------------------------------------------------


def _resident_kib(field: str) -> int:
    status = open("/proc/self/status").read()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))


def measure_peak(case: str, shape: tuple[int, ...]) -> float:
    """Peak memory (MiB) of one forward+backward above the inputs, in this (fresh) process.

    Resets the kernel's resident high-water mark (``/proc/self/clear_refs``) after building the
    inputs and reads ``VmHWM`` after the case: that counts every page the step touched, whatever
    allocated it (tracemalloc does not see PyTorch's allocations).
    """
    warm_up = make_inputs((1, shape[1], 4, 4))[0].requires_grad_()
    forward_backward(case, warm_up, make_inputs((1, shape[1], 4, 4))[1])  # one-time set-up
    probs, target = make_inputs(shape)
    probs.requires_grad_()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _resident_kib("VmHWM")
    forward_backward(case, probs, target)
    return (_resident_kib("VmHWM") - before) / 1024


def peak_in_subprocess(case: str, shape_name: str) -> float:
    """``measure_peak`` in a fresh process. glibc's default mmap threshold rises after large frees,
    which lets small-shape results wander by several MiB; a fixed threshold keeps them steady."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--peak",
            case,
            shape_name,
            "--threads",
            str(torch.get_num_threads()),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


# --- The table -----------------------------------------------------------------------------------


def bench_shape(name: str, shape: tuple[int, ...], repeats: int, device: str = "cpu") -> None:
    probs, target = (x.to(device) for x in make_inputs(shape))
    leaf = probs.clone().requires_grad_()
    input_gb = (probs.numel() * probs.element_size() + target.numel() * target.element_size()) / 1e9
    print(f"\n## {name} {tuple(shape)}: {probs.numel() / 1e6:.1f} M values per input")

    values = {case: forward_backward(case, leaf, target) for case in CASES}
    for kind in ("hard", "soft"):
        gap = abs(values[kind] - values[f"loop {kind}"])
        if gap > 1e-4:
            raise AssertionError(
                f"{kind} loss {values[kind]} != loop reference {values[f'loop {kind}']}"
            )

    times, peaks = {}, {}
    for case in CASES:
        reps = repeats if not case.startswith("loop") else max(1, repeats - 1)
        times[case] = best_time(lambda c=case: forward_backward(c, leaf, target), reps)
        if device == "cpu":
            peaks[case] = peak_in_subprocess(case, name)
        else:
            peaks[case] = cuda_peak_mib(case, leaf, target)

    print(
        f"{'loss (forward+backward)':26s} {'time ms':>9s} {'peak MiB':>9s} {'input GB/s':>11s} {'vs loop':>8s}"
    )
    for case in CASES:
        kind = case.split()[-1]
        ratio = times[f"loop {kind}"] / times[case]
        print(
            f"{case:26s} {times[case] * 1e3:9.1f} {peaks[case]:9.1f} {input_gb / times[case]:11.2f} "
            f"{ratio:7.1f}x"
        )
    print(
        f"soft/hard peak memory: {peaks['soft'] / peaks['hard']:.2f} "
        f"(target <= {TARGETS['soft_memory']}); loop/ours time: hard "
        f"{times['loop hard'] / times['hard']:.1f}x, soft {times['loop soft'] / times['soft']:.1f}x "
        f"(target >= {TARGETS['loss']:.0f}x at the AMOS-like shape)"
    )

    metric = CalibrationErrorMetric(num_bins=NUM_BINS, metric_reduction="none")
    sync = torch.cuda.synchronize if device != "cpu" else lambda: None

    def timed(fn: Callable[[], object]) -> Callable[[], None]:
        return lambda: (fn(), sync())

    metric_times = {
        "calibtut calibration_error": best_time(
            timed(lambda: calibration_error(probs, target, NUM_BINS)), repeats
        ),
        "monai calibration_binning": best_time(
            timed(lambda: calibration_binning(probs, target, NUM_BINS)), repeats
        ),
        "monai CalibrationErrorMetric": best_time(timed(lambda: metric(probs, target)), repeats),
    }
    ours = metric_times["calibtut calibration_error"]
    print(f"{'metric (ECE, no grad)':26s} {'time ms':>9s} {'input GB/s':>21s} {'ours faster':>12s}")
    for label, seconds in metric_times.items():
        print(
            f"{label:26s} {seconds * 1e3:9.1f} {input_gb / seconds:21.2f} {seconds / ours:11.1f}x"
        )
    print(f"(target: calibtut >= {TARGETS['metric']:.0f}x faster than monai calibration_binning)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (on a GPU, peak memory is the allocator's)"
    )
    parser.add_argument("--peak", nargs=2, metavar=("CASE", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak:
        case, shape_name = args.peak
        print(json.dumps({"peak_mib": measure_peak(case, SHAPES[shape_name])}))
        return
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# calibtut loss/metric benchmark: torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} CPUs, load average {load}"
    )
    print(
        f"# {NUM_BINS} bins; times are the best of {args.repeats} runs (loops: best of "
        f"{max(1, args.repeats - 1)}); peak memory from a fresh process per case"
    )
    start = time.perf_counter()
    for name in args.shapes:
        bench_shape(name, SHAPES[name], args.repeats, args.device)
    print(f"\n# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
