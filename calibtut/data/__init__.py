"""Datasets: the paper's four (ACDC, AMOS, KiTS23, BraTS21) in their real layouts, and the
embedded synthetic default.

    from calibtut.data import spec
    s = spec("synthetic")                       # or "acdc", "amos", "kits", "brats", "synthetic3d"
    train = s.dataset(None, "train")            # a MONAI CacheDataset of transformed cases
    s.out_channels, s.activation, s.patch_size, s.val_window

    kits = spec("kits").replace(patch_size=(64, 64, 64))
    kits.dataset("/data/kits23/dataset", "val")

`write_phantom(name, root)` writes a small dataset in a real layout to try the loaders
without the data; data/README.md says where to get each dataset. Names load on first use
(PEP 562): ``from calibtut.data import DATASETS`` loads no MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "catalog",
    "spec": "catalog",
    "InvalidCaseError": "errors",
    "write_phantom": "phantoms",
    "SPLITS": "dataset_spec",
    "DatasetSpec": "dataset_spec",
    "HUWindow": "dataset_spec",
    "NiftiDatasetSpec": "nifti",
    "ZScore": "dataset_spec",
    "SyntheticImages": "synthetic",
    "SyntheticSpec": "synthetic",
    "ToySegmentation": "synthetic",
    "generate": "synthetic",
    "toy_segmentation": "synthetic",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calibtut.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"calibtut.data.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
