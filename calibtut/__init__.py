"""calibtut: calibration-aware training for medical image segmentation, taught in notebooks.

The public API, loaded on first use (PEP 562): ``import calibtut`` loads neither PyTorch nor MONAI,
so ``calibtut --help`` answers at once. The core (``binning``, ``losses``, ``metrics``) imports
only torch and MONAI; plots, views, widgets, datasets, runs and training live in their own
modules (see DESIGN.md for who may import whom).

Example:
    >>> import calibtut
    >>> loss_fn = calibtut.ACEDiceCELoss(binning="soft", to_onehot_y=True, softmax=True)
    >>> ece = calibtut.calibration_error  # equal to MONAI's CalibrationErrorMetric
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("calibtut")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "BinStats": "binning",
    "hard_binning": "binning",
    "soft_binning": "binning",
    "HardL1ACELoss": "losses",
    "SoftL1ACELoss": "losses",
    "ACEDiceCELoss": "losses",
    "calibration_error": "metrics",
    "calibration_errors": "metrics",
    "reliability": "metrics",
    "dataset_reliability": "metrics",
    "dataset_reliability_histogram": "metrics",
    "CumulativeCalibration": "metrics",
    "RunDir": "runs",
    "resolve_runs": "runs",
    "TrainConfig": "train",
    "train_many": "train",
    "evaluate": "train",
}
_MODULES = (
    "binning", "losses", "metrics", "methods", "data", "runs", "train", "paper", "plots",
    "report", "views", "widgets", "course", "cli",
)  # fmt: skip
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"calibtut.{_EXPORTS[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"calibtut.{name}")
    raise AttributeError(f"module 'calibtut' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, *_MODULES])
