"""Training and evaluation: the paper's losses on any dataset spec, written to a run directory.

    config.py    presets and :class:`TrainConfig` (standard library only)
    build.py     device, network, loss and optimiser state
    loop.py      :func:`train` and :func:`train_many`
    evaluation.py  inference, validation and :func:`evaluate`

Names are loaded on first use (PEP 562), so ``from calibtut.train import TrainConfig`` does not
load MONAI.

Example:
    >>> from calibtut.train import TrainConfig, train_many   # doctest: +SKIP
    >>> configs = [TrainConfig.for_dataset("synthetic", loss) for loss in ("baseline", "soft")]
    >>> runs = train_many(configs, run_root="runs")          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Preset": "config",
    "PRESETS": "config",
    "NETWORKS": "config",
    "TrainConfig": "config",
    "configuration_table": "config",
    "select_device": "build",
    "build_network": "build",
    "build_loss": "build",
    "Training": "build",
    "train": "loop",
    "train_many": "loop",
    "predict": "evaluation",
    "validate": "evaluation",
    "evaluate": "evaluation",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calibtut.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"calibtut.train.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
