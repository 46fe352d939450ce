"""What determines a training run: the paper's presets per dataset and :class:`TrainConfig`.

Importing it loads only the standard library (the dataset spec is looked up when asked for), so
the command line can validate a configuration before PyTorch and MONAI are loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from calibtut.methods import METHODS, TRAINING_LOSSES

if TYPE_CHECKING:
    import pandas as pd

    from calibtut.data import DatasetSpec

__all__ = ["Preset", "PRESETS", "NETWORKS", "ACTIVATIONS", "TrainConfig", "configuration_table"]

NETWORKS = ("segresnetds", "unet")
ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Preset:
    """A dataset's training hyper-parameters (patch and window sizes live in its spec).

    ``batch_size`` counts cases, as MONAI does: each case gives its spec's ``samples_per_case``
    patches, so a step of the synthetic preset (1 case, 9 patches) sees 9 patches.
    """

    epochs: int
    lr: float
    batch_size: int = 2
    weight_decay: float = 1e-5
    warmup_epochs: int = 2
    val_every: int = 10
    network: str = "segresnetds"
    width: int = 32


# The paper's configurations (cai4cai/Average-Calibration-Losses bundles): AdamW, weight decay
# 1e-5, batch 2, 2 warm-up epochs then cosine, validation every 10 epochs, SegResNetDS with 32
# initial filters; 600 epochs at lr 2e-4 for ACDC and AMOS, 1250 at 1e-4 for KiTS and BraTS.
# The synthetic presets are sized for a laptop CPU (the demo), not taken from the paper.
PRESETS: dict[str, Preset] = {
    "acdc": Preset(epochs=600, lr=2e-4),
    "amos": Preset(epochs=600, lr=2e-4),
    "kits": Preset(epochs=1250, lr=1e-4),
    "brats": Preset(epochs=1250, lr=1e-4),
    "synthetic": Preset(
        epochs=20, lr=3e-3, batch_size=1, warmup_epochs=1, val_every=10, network="unet", width=8
    ),
    "synthetic3d": Preset(
        epochs=12, lr=3e-3, warmup_epochs=1, val_every=4, network="unet", width=8
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result. Build one with :meth:`for_dataset`.

    Attributes:
        dataset: a name of :data:`calibtut.data.DATASETS` with a preset in :data:`PRESETS`.
        loss: one of :data:`calibtut.methods.TRAINING_LOSSES`.
        loss_options: the loss's options (``{"gamma": 2.0}`` for the focal loss), over the
            defaults of its :class:`~calibtut.methods.Method` ``options``; held as sorted
            ``(name, value)`` pairs, every default filled in, so ``config.json`` records them all
            (and records nothing for a loss without options, as before they existed).
        seed: seeds the weights, the data order and the augmentation.
        max_steps: caps the total number of optimiser steps (smoke tests; the schedule is then
            laid over the capped length).
        patch_size, val_window: override the spec's training patch and sliding window.
        activation: "softmax" over the dataset's exclusive labels (the paper, every dataset) or
            "sigmoid" per region (datasets with overlapping regions: KiTS, BraTS).
        deterministic: ``cudnn.benchmark`` off and deterministic kernels on (process-wide), for
            bit-identical resumes on a GPU; on a CPU runs are deterministic anyway.

    Example:
        >>> config = TrainConfig.for_dataset("synthetic", "soft", seed=1, epochs=2)
        >>> config.network, config.epochs, config.ace_weight
        ('unet', 2, 0.33)
    """

    dataset: str
    loss: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    warmup_epochs: int
    val_every: int
    network: str
    width: int
    patch_size: tuple[int, ...] | None = None
    val_window: tuple[int, ...] | None = None
    activation: str = "softmax"
    num_bins: int = 20
    ace_weight: float = 0.33
    dice_weight: float = 0.33
    ce_weight: float = 0.33
    empty_weight: float = 0.01
    max_steps: int | None = None
    amp: bool = True
    deterministic: bool = False
    num_workers: int = 0
    loss_options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.loss not in TRAINING_LOSSES:
            raise ValueError(
                f"unknown loss {self.loss!r}; expected one of {', '.join(TRAINING_LOSSES)}"
            )
        object.__setattr__(self, "loss_options", _loss_options(self.loss, self.loss_options))
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        if self.network not in NETWORKS:
            raise ValueError(
                f"unknown network {self.network!r}; expected one of {', '.join(NETWORKS)}"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**32
        ):
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        positive = ("epochs", "batch_size", "val_every", "width", "num_bins")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ValueError(
                f"max_steps must be a positive integer or None, got {self.max_steps!r}"
            )
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0 and warmup_epochs >= 0, got {self.lr}, "
                f"{self.weight_decay} and {self.warmup_epochs}"
            )
        for name in ("patch_size", "val_window"):
            size = getattr(self, name)
            if size is not None:
                object.__setattr__(self, name, tuple(int(s) for s in size))
        if METHODS[self.loss].softmax_only and self.activation != "softmax":
            raise ValueError(
                f"the {self.loss} loss is defined for a softmax over exclusive labels, not a "
                f"{self.activation} per region: train it with --activation softmax"
            )

    @classmethod
    def for_dataset(
        cls, dataset: str, loss: str = "baseline", seed: int = 0, **overrides: Any
    ) -> TrainConfig:
        """The dataset's preset with ``overrides`` (``None`` values keep the preset).

        Raises:
            ValueError: an unknown dataset, or a value out of range.
            TypeError: an override that is not a field.
        """
        if dataset not in PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {unknown}")
        values = dataclasses.asdict(PRESETS[dataset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(dataset=dataset, loss=loss, seed=seed, **values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config recorded in a run's ``config.json`` (extra keys, such as versions, ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values and f.default is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"config lacks training field(s) {missing}")
        return cls(**{k: v for k, v in values.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (sizes as lists): what ``config.json`` records."""
        out = dataclasses.asdict(self)
        for name in ("patch_size", "val_window"):
            if out[name] is not None:
                out[name] = list(out[name])
        # a loss without options records none: the config.json of earlier runs stays this run's
        out["loss_options"] = dict(self.loss_options)
        if not out["loss_options"]:
            del out["loss_options"]
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated (e.g. another loss or seed)."""
        return dataclasses.replace(self, **changes)

    def dataset_spec(self) -> DatasetSpec:
        """The dataset's spec with this config's patch and window sizes."""
        from calibtut.data import spec

        base = spec(self.dataset)
        changes = {"patch_size": self.patch_size, "val_window": self.val_window}
        changes = {k: v for k, v in changes.items() if v is not None}
        if self.activation != base.activation:
            changes["activation"] = self.activation
        return base.replace(**changes) if changes else base

    def describe(self) -> dict[str, Any]:
        """The settings a reader compares, in words (the rows of :func:`configuration_table`)."""
        data = self.dataset_spec()
        return {
            "network": f"{self.network} ({self.width} filters)",
            "epochs": self.epochs,
            "max optimiser steps": self.max_steps or "—",
            "learning rate": self.lr,
            "batch size": self.batch_size,
            "weight decay": self.weight_decay,
            "warm-up epochs": self.warmup_epochs,
            "validation every": f"{self.val_every} epochs",
            "training patch": " x ".join(map(str, data.patch_size)),
            "sliding window": " x ".join(map(str, data.val_window)),
            "loss weights (Dice, CE, mL1-ACE)": (
                f"{self.dice_weight}, {self.ce_weight}, {self.ace_weight}"
            ),
            "bins": self.num_bins,
            "training activation": self.activation,
        }


def _loss_options(loss: str, given: Any) -> tuple[tuple[str, float], ...]:
    """Every option of ``loss`` (its defaults updated by ``given``), sorted, each a finite
    number >= 0 (the loss checks its own range, e.g. an odd kernel, when it is built).

    Raises:
        ValueError: an option the loss does not take, or a value that is not such a number.
    """
    defaults = dict(METHODS[loss].options)
    try:
        given = dict(given or {})
    except (TypeError, ValueError):
        raise ValueError(f"loss_options must map names to numbers, got {given!r}") from None
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        takes = f"takes {', '.join(defaults)}" if defaults else "takes no options"
        raise ValueError(f"the {loss} loss {takes}, not {', '.join(map(str, unknown))}")
    values = {**defaults, **given}
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"loss option {name} must be a finite number >= 0, got {value!r}")
        if isinstance(defaults[name], int) and value != int(value):
            raise ValueError(f"loss option {name} must be an integer, got {value!r}")
        values[name] = type(defaults[name])(value)
    return tuple(sorted(values.items()))


def configuration_table(used: TrainConfig) -> pd.DataFrame:
    """The dataset's preset (for the real datasets: the paper's configuration) beside ``used``.

    Taught in notebooks/03_training_with_calibration_losses and 04-07.
    """
    import pandas as pd

    preset = TrainConfig.for_dataset(used.dataset, used.loss, used.seed)
    columns = {"preset": preset.describe(), "this run": used.describe()}
    return pd.DataFrame(columns).astype(str)
