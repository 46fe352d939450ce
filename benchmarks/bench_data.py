"""How long the datasets take to appear: the synthetic default's splits generated in memory,
and each real dataset's phantom written to disk and read through its real loading pipeline.

    python benchmarks/bench_data.py [--repeats 3]

Prints wall-clock seconds (best of ``--repeats``): what a student waits before the first epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from calibtut.data import SPLITS, spec, write_phantom


def best(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    synthetic = spec("synthetic")
    for split in SPLITS:
        n = len(synthetic.cases(None, split))
        seconds = best(lambda split=split: synthetic.generate(split), args.repeats)
        rows.append((f"synthetic {split}: generate {n} images", seconds))
    with tempfile.TemporaryDirectory() as folder:
        for name in ("acdc", "amos", "kits", "brats"):
            root = Path(folder) / name
            rows.append((f"{name} phantom: write", best(partial(write_phantom, name, root), 1)))
            test = partial(spec(name).dataset, root, "test", cache=False)
            read = best(lambda test=test: list(test()), args.repeats)
            rows.append((f"{name} phantom: read the test split", read))
    width = max(len(label) for label, _ in rows)
    print(f"{'what':<{width}}  seconds")
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:7.3f}")


if __name__ == "__main__":
    main()
