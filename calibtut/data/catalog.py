"""The datasets calibtut knows, by name."""

from __future__ import annotations

from calibtut.data import acdc, amos, brats, kits, synthetic
from calibtut.data.spec import DatasetSpec

_SPECS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (acdc.SPEC, amos.SPEC, kits.SPEC, brats.SPEC, synthetic.SPEC, synthetic.SPEC_3D)
}
DATASETS: tuple[str, ...] = tuple(_SPECS)


def spec(name: str) -> DatasetSpec:
    """The spec of dataset `name` (one of `DATASETS`)."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        ) from None
