"""The datasets calibtut knows, by name (the names load nothing; a spec loads on first use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calibtut.data.dataset_spec import DatasetSpec

# name -> (module of calibtut.data, attribute holding its spec)
_SPECS = {
    "acdc": ("acdc", "SPEC"),
    "amos": ("amos", "SPEC"),
    "kits": ("kits", "SPEC"),
    "brats": ("brats", "SPEC"),
    "synthetic": ("synthetic", "SPEC"),
    "synthetic3d": ("synthetic", "SPEC_3D"),
}
DATASETS: tuple[str, ...] = tuple(_SPECS)


def spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (one of :data:`DATASETS`).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        module, attribute = _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        ) from None
    return getattr(importlib.import_module(f"calibtut.data.{module}"), attribute)
