"""How long the explorers take to redraw after a control change, on a 3D dataset.

Writes three run directories (baseline, hard, soft) of a synthetic 3D test set (default: 50
images of 64 x 64 x 40 voxels, 4 classes, saved predictions for the overlays) into a temporary
folder, opens the per-image and the dataset explorer on them, and times each kind of control
change on states not seen before (no figure-cache hits), then a return to a state already seen
(a cache hit). Prints a table of median and worst wall-clock time and the process CPU time
(CPU time is what the redraw costs on an idle core when the machine is shared).

    python benchmarks/bench_widgets.py [--images 50] [--shape 64 64 40] [--repeats 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

from calibtut import metrics  # noqa: E402
from calibtut.binning import BinStats  # noqa: E402
from calibtut.runs import LOSSES, RunDir, run_path  # noqa: E402
from calibtut.widgets import ALL_CLASSES, DatasetExplorer, ImageExplorer  # noqa: E402

CLASS_NAMES = ["background", "liver", "kidney", "spleen"]
SHARPNESS = {"baseline": 8.0, "hard": 4.0, "soft": 3.0}  # logit scale: over- to under-confident


def write_run(
    root: Path, loss: str, n_images: int, shape: tuple[int, ...], batch: int = 5
) -> RunDir:
    """A run of ``n_images`` ellipsoid phantoms with noisy softmax outputs (in small batches)."""
    generator = torch.Generator().manual_seed(len(loss))
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij"))
    run = RunDir(run_path(root, "bench3d", loss, 0))
    run.write_config(
        {"dataset": "bench3d", "loss": loss, "seed": 0, "class_names": CLASS_NAMES,
         "num_bins": 20, "activation": "softmax"}
    )  # fmt: skip
    parts, rows, ids = [], [], []
    for start in range(0, n_images, batch):
        count = min(batch, n_images - start)
        labels = torch.zeros((count, *shape), dtype=torch.long)
        for b in range(count):
            centre = 0.3 * (torch.rand(3, generator=generator) - 0.5)
            for c, radius in ((1, 0.6), (2, 0.35), (3, 0.15)):
                inside = ((grid - centre.view(3, 1, 1, 1)) ** 2).sum(0) < radius**2
                labels[b][inside] = c
        onehot = torch.nn.functional.one_hot(labels, len(CLASS_NAMES)).movedim(-1, 1).float()
        noise = 2.5 * torch.randn(onehot.shape, generator=generator)
        probs = torch.softmax(SHARPNESS[loss] * onehot + noise, 1)
        results = metrics.image_results(probs, onehot)
        batch_ids = [f"case_{start + b:03d}" for b in range(count)]
        parts.append(results.bins)
        rows += results.rows(batch_ids, CLASS_NAMES)
        ids += batch_ids
        for b, image_id in enumerate(batch_ids):
            image = labels[b].float() + 0.4 * torch.randn(shape, generator=generator)
            run.write_prediction(
                image_id, image.numpy(), labels[b].numpy(), probs[b].argmax(0).numpy(),
                probs[b].amax(0).numpy(),
            )  # fmt: skip
    run.write_results(rows, BinStats.cat(parts), ids, CLASS_NAMES)
    return run


def timed(action: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, actions: list[Callable[[], object]], table: list[tuple]) -> None:
    times = [timed(action) for action in actions]
    walls, cpus = [t[0] for t in times], [t[1] for t in times]
    table.append((name, len(times), statistics.median(walls), max(walls), statistics.median(cpus)))


def setter(widget, value) -> Callable[[], object]:
    return lambda: setattr(widget, "value", value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 40))
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    n = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        runs = [write_run(root, loss, args.images, tuple(args.shape)) for loss in LOSSES]
        print(f"wrote {len(runs)} runs x {args.images} images of {tuple(args.shape)} voxels "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        table: list[tuple] = []

        explorer = None

        def open_image_explorer() -> None:
            nonlocal explorer
            explorer = ImageExplorer(runs)

        measure("image explorer: open (3 runs, load, draw)", [open_image_explorer], table)
        assert explorer is not None
        ids = list(explorer.image.options)
        measure("  slice slider, 3 runs", [setter(explorer.slice, s) for s in range(n)], table)
        measure("  slice slider, back to a seen slice", [setter(explorer.slice, 0)], table)
        measure(
            "  image, 3 runs x 1 class", [setter(explorer.image, i) for i in ids[1 : n + 1]], table
        )
        explorer.class_index.value = ALL_CLASSES
        measure(
            "  image, 3 runs x 4 classes",
            [setter(explorer.image, i) for i in ids[n + 1 : 2 * n + 1]],
            table,
        )
        explorer.runs.value = (0,)
        measure(
            "  image, 1 run x 4 classes",
            [setter(explorer.image, i) for i in ids[2 * n + 1 : 3 * n + 1]],
            table,
        )
        measure("  class, 1 run", [setter(explorer.class_index, c) for c in (1, 2, 3)], table)

        dataset = None

        def open_dataset_explorer() -> None:
            nonlocal dataset
            dataset = DatasetExplorer(runs)

        measure("dataset explorer: open (3 runs, load, draw)", [open_dataset_explorer], table)
        assert dataset is not None
        measure(
            "  bins, 3 runs x (1 class + average)",
            [setter(dataset.num_bins, b) for b in (10, 5, 4, 2)],
            table,
        )
        measure(
            "  colour scale, 3 runs x (1 class + average)",
            [setter(dataset.norm, v) for v in ("power", "linear")],
            table,
        )
        dataset.class_index.value = ALL_CLASSES
        measure(
            "  bins, 3 runs x (4 classes + average)",
            [setter(dataset.num_bins, b) for b in (20, 10, 5, 4)],
            table,
        )
        measure("  bins, back to a seen state", [setter(dataset.num_bins, 10)], table)

    print(f"\n{'control change':46} {'n':>3} {'median s':>9} {'max s':>7} {'CPU s':>7}")
    for name, count, median, worst, cpu in table:
        print(f"{name:46} {count:3d} {median:9.3f} {worst:7.3f} {cpu:7.3f}")
    print(f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
