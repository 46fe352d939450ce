"""Phantoms: small NIfTI datasets in a real dataset's exact layout, to test the real loaders.

`write_phantom("kits", "/tmp/kits")` writes a few cases with plausible anatomy in the
dataset's own label values, affines and spacings, distractor files included (ACDC's 4-D
series and Info.cfg, AMOS's MRI cases and dataset.json, KiTS's instances/, BraTS's
label 4), then `spec("kits").dataset("/tmp/kits", "train")` reads it like the real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibtut.data.catalog import DATASETS, spec
from calibtut.data.nifti import NiftiDatasetSpec

MARKER = ".calibtut-phantom.json"


def write_phantom(name: str, root: str | Path, cases: int | None = None, seed: int = 0) -> Path:
    """Write a phantom of dataset `name` into `root` and return `root`.

    `cases`: labelled cases (default: the fewest giving every split a case; see the
    spec's `phantom_cases`). `root` must be new, empty, or an earlier phantom, which is
    replaced (only the files it lists are removed); anything else is refused untouched.
    """
    dataset = spec(name)
    if not isinstance(dataset, NiftiDatasetSpec):
        on_disk = [n for n in DATASETS if isinstance(spec(n), NiftiDatasetSpec)]
        raise ValueError(
            f"{name} is generated in memory and has no files; phantoms are for the datasets "
            f"on disk: {', '.join(on_disk)}"
        )
    count = dataset.phantom_cases if cases is None else cases
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    root = Path(root).expanduser()
    _clear_previous_phantom(root)
    root.mkdir(parents=True, exist_ok=True)
    dataset.write_phantom_cases(root, int(count), np.random.default_rng(seed))
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    (root / MARKER).write_text(
        json.dumps({"dataset": name, "cases": int(count), "seed": seed, "files": files}, indent=1)
    )
    return root


def _clear_previous_phantom(root: Path) -> None:
    """Remove an earlier phantom's files from `root`; refuse any other non-empty `root`."""
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; refusing to write a phantom")
    if not any(root.iterdir()):
        return
    marker = root / MARKER
    if not marker.is_file():
        raise FileExistsError(
            f"{root} is not empty and is not a calibtut phantom (no {MARKER}); refusing to "
            f"write into it. Give a new or empty folder."
        )
    listed = json.loads(marker.read_text()).get("files", [])
    for relative in listed:
        path = (root / relative).resolve()
        if root.resolve() in path.parents and path.is_file():
            path.unlink()
    marker.unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
