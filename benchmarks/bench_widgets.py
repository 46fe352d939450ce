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

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fake runs

from fakes import model_run  # noqa: E402

from calibtut.methods import LOSSES  # noqa: E402
from calibtut.runs import RunDir  # noqa: E402
from calibtut.widgets import (  # noqa: E402
    ALL_CLASSES,
    BinningPlayground,
    DatasetExplorer,
    ImageExplorer,
)

CLASS_NAMES = ("background", "liver", "kidney", "spleen")


def write_run(root: Path, loss: str, n_images: int, shape: tuple[int, ...]) -> RunDir:
    """A run of ``n_images`` box phantoms with noisy softmax outputs (tests/fakes.py)."""
    return model_run(
        root, loss, dataset="bench3d", n_images=n_images, shape=shape, class_names=CLASS_NAMES,
        noise=2.5, batch=5,
    )  # fmt: skip


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
        export = root / "figures"

        def open_image_explorer() -> None:
            nonlocal explorer
            explorer = ImageExplorer(runs, export_dir=export)

        measure("image explorer: open (3 runs, load, draw)", [open_image_explorer], table)
        assert explorer is not None
        ids = list(explorer.image_ids)
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
        explorer.runs.value = (0, 1, 2)
        measure(
            "  sort by (re-rank; the image stays, cached)",
            [setter(explorer.sort, k) for k in ("ACE", "Dice", "ACE change from baseline")],
            table,
        )
        low, high = explorer.within.min, explorer.within.max
        ranges = [(low, high - k * (high - low) / 8) for k in (1, 2, 3)]
        measure("  keep range, 3 runs", [setter(explorer.within, r) for r in ranges], table)
        measure("  next button, 3 runs", [explorer.next.click for _ in range(n)], table)
        measure("  bins, 3 runs", [setter(explorer.num_bins, b) for b in (10, 5, 4)], table)
        measure("  save PNG + PDF (2 figures)", [explorer.save_figures], table)
        rows = explorer.zoom_rows.max
        boxes = [(k, rows - k) for k in (4, 8, 12)]
        measure("  zoom box (rows), 3 runs", [setter(explorer.zoom_rows, b) for b in boxes], table)
        measure("  whole image button", [explorer.unzoom.click], table)
        measure(
            "  diagrams: gap change, 3 runs",
            [setter(explorer.diagram_view, "gap change")]
            + [setter(explorer.image, i) for i in ids[3 * n + 1 : 4 * n]],
            table,
        )
        explorer.diagram_view.value = "reliability"

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
        measure(
            "  show: gap change / per-image ACE / ACE change",
            [setter(dataset.view, v) for v in ("gap change", "per-image ACE", "ACE change")],
            table,
        )
        dataset.view.value = "histograms"
        cells = [v for _, v in dataset.cell.options[1 : n + 1]]
        measure("  cell (list its images)", [setter(dataset.cell, c) for c in cells], table)
        dataset.image_explorer = explorer
        measure("  open in image explorer", [dataset.open_in_image_explorer], table)
        playground = BinningPlayground()
        measure(
            "binning playground: p (on release)",
            [setter(playground.value, v) for v in (0.1, 0.5, 0.9)],
            table,
        )
        measure("  bins", [setter(playground.num_bins, b) for b in (3, 10, 20)], table)
        measure("  binning", [setter(playground.binning, b) for b in ("hard", "soft")], table)

    print(f"\n{'control change':46} {'n':>3} {'median s':>9} {'max s':>7} {'CPU s':>7}")
    for name, count, median, worst, cpu in table:
        print(f"{name:46} {count:3d} {median:9.3f} {worst:7.3f} {cpu:7.3f}")
    print(f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
