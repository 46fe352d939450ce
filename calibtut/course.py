"""Notebook settings and results: what every course notebook starts and ends with.

* :func:`enable_colab`: Colab's widget manager, for the set-up cell every notebook starts with;
* :func:`resolve_settings`: one place that turns a notebook's parameters (``smoke``, ``device``,
  ``epochs``, ``run_root``, ``overwrite``) into training settings (the GPU when there is one; tiny
  in smoke mode and on phantoms), and :meth:`Settings.train`, which trains them;
* :func:`locate_dataset`: the real dataset if it is under ``data_dir``, else a phantom in its
  exact layout, with a message that says so and where to get the data;
* :func:`save_result`: the small JSON record each notebook ends with (``runs/course/<notebook>.json``,
  what a student's run of the course found, in numbers: an instructor can collect them, and the
  tests compare them with the runs), and :func:`dataset_result`, what notebooks 04-07 record.

Everything else a notebook calls lives with the idea it belongs to: figures of runs in
:mod:`calibtut.views`, tables in :mod:`calibtut.report`, the paper in :mod:`calibtut.paper`,
datasets in :mod:`calibtut.data`, training in :mod:`calibtut.train`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from calibtut.data import SPLITS, spec, write_phantom
from calibtut.data.phantoms import MARKER as PHANTOM_MARKER
from calibtut.methods import LOSSES
from calibtut.paper import PaperComparison
from calibtut.report import headline
from calibtut.runs import RunDir, atomic_write
from calibtut.train import TrainConfig, configuration_table, select_device, train_many
from calibtut.widgets import enable_colab_widgets

__all__ = [
    "REPOSITORY_URL",
    "DATA_README_URL",
    "enable_colab",
    "Settings",
    "resolve_settings",
    "DataSource",
    "locate_dataset",
    "save_result",
    "dataset_result",
]

REPOSITORY_URL = "https://github.com/calibtut/calibtut"
DATA_README_URL = f"{REPOSITORY_URL}/blob/main/data/README.md"
RESULTS_FOLDER = "course"

# Training overrides that make a run take seconds on a CPU (smoke tests, phantoms), by the
# dataset's number of spatial dimensions. The patch and window must fit every phantom.
_SMALL = {
    2: {"max_steps": 4, "width": 8},
    3: {"max_steps": 2, "width": 4, "patch_size": (32, 32, 16), "val_window": (32, 32, 16)},
}


# --- set-up -------------------------------------------------------------------------------------


def enable_colab() -> bool:
    """In Colab, turn on its custom widget manager (the explorers need it); elsewhere nothing."""
    return enable_colab_widgets()


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How a notebook trains: on which device, where runs go, and what changes the preset.

    ``small`` runs (smoke mode, or a phantom standing in for missing data) take seconds on a
    CPU; the others use the dataset's preset (the paper's configuration for the real datasets).
    """

    dataset: str
    device: torch.device
    run_root: Path
    small: bool
    overrides: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False

    def config(self, loss: str = "baseline", seed: int = 0) -> TrainConfig:
        """The training configuration of one run."""
        return TrainConfig.for_dataset(self.dataset, loss, seed, **self.overrides)

    def table(self) -> pd.DataFrame:
        """The preset beside what this notebook trains (:func:`calibtut.train.configuration_table`)."""
        return configuration_table(self.config())

    def train(
        self,
        data_dir: str | Path | None = None,
        losses: Sequence[str] = LOSSES,
        seed: int = 0,
    ) -> dict[str, RunDir]:
        """Train (or reuse) one run per loss into ``run_root`` (:func:`calibtut.train.train_many`).

        A finished run with the same configuration is reused and an interrupted one resumes. A
        run made with other settings is an error naming what differs (it may be days of GPU
        time): set the notebook's ``overwrite = True`` to train it again, or choose another
        ``run_root``. Returns the runs by loss.
        """
        configs = [self.config(loss, seed) for loss in losses]
        runs = train_many(
            configs,
            data_dir,
            self.run_root,
            device=self.device,
            overwrite=self.overwrite,
            progress=not self.small,
        )
        return dict(zip(losses, runs, strict=True))

    def __str__(self) -> str:
        config = self.config("baseline")
        steps = f", at most {config.max_steps} steps" if config.max_steps else ""
        size = "small (smoke) settings" if self.small else "the preset"
        count = torch.get_num_threads()
        threads = f" ({count} thread{'s' * (count != 1)})" if self.device.type == "cpu" else ""
        return (
            f"{self.dataset}: {size}, {config.epochs} epoch{'s' * (config.epochs != 1)}{steps}, "
            f"on {self.device}{threads}; "
            f"runs under {self.run_root}"
        )


def resolve_settings(
    dataset: str | DataSource,
    *,
    smoke: bool,
    device: str | None = None,
    epochs: int | None = None,
    run_root: str | Path = "runs",
    overwrite: bool = False,
    **overrides: Any,
) -> Settings:
    """A notebook's parameters as :class:`Settings`, printed.

    ``dataset`` is a name, or where :func:`locate_dataset` found it: a phantom's numbers mean
    nothing, so it is trained like ``smoke``. ``device`` None picks CUDA, then Apple MPS, then
    the CPU. ``smoke`` shrinks training to a few steps of a narrow network on small patches;
    ``epochs`` and ``overrides`` (any :class:`~calibtut.train.TrainConfig` field, None meaning
    "keep") win over both. ``overwrite`` retrains finished runs of other settings. On a CPU,
    torch is set to one thread unless ``OMP_NUM_THREADS`` is set.
    """
    if isinstance(dataset, DataSource):
        dataset, smoke = dataset.dataset, smoke or dataset.phantom
    data = spec(dataset)  # an unknown name fails here, with the list of known ones
    chosen: dict[str, Any] = dict(_SMALL[data.spatial_dims]) if smoke else {}
    if smoke:
        chosen["epochs"] = 1
    chosen.update({k: v for k, v in {"epochs": epochs, **overrides}.items() if v is not None})
    settings = Settings(
        dataset=dataset,
        device=select_device(device),
        run_root=Path(run_root),
        small=bool(smoke),
        overrides=chosen,
        overwrite=bool(overwrite),
    )
    settings.config("baseline")  # bad overrides fail now, not in the middle of training
    if settings.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Small networks train fastest on one thread, and a shared machine (Binder, CI) whose
        # cores torch miscounts is not oversubscribed; OMP_NUM_THREADS overrides this.
        torch.set_num_threads(1)
    print(settings)
    return settings


# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSource:
    """Where a dataset was found: its real folder, or a phantom written in its layout."""

    dataset: str
    root: Path
    phantom: bool


def locate_dataset(
    name: str, data_dir: str | Path | None, phantom_root: str | Path = "phantoms"
) -> DataSource:
    """The dataset under ``data_dir`` if its layout is complete, else a phantom in that layout.

    Every split of the folder is listed and every case's headers checked, so a broken folder is
    reported here. Without the data, the reason is printed with where to get it, and a phantom
    (a few small synthetic cases in the dataset's exact layout) is written under
    ``phantom_root/<name>`` so that the rest of the notebook runs unchanged. A ``data_dir`` that
    holds a phantom (``calibtut phantom``) is used, and flagged as one.
    """
    data = spec(name)
    if data_dir is None:
        reason = "no data_dir was given"
    else:
        try:
            for split in SPLITS:
                data.check_cases(data.cases(data_dir, split))
        except (FileNotFoundError, ValueError) as err:
            reason = str(err).strip().splitlines()[0]
        else:
            phantom = (Path(data_dir) / PHANTOM_MARKER).is_file()
            print(f"{data.title}: found {'a phantom ' * phantom}at {data_dir}.")
            return DataSource(name, Path(data_dir), phantom=phantom)
    root = write_phantom(name, Path(phantom_root) / name)
    cases = json.loads((root / PHANTOM_MARKER).read_text())["cases"]
    print(
        f"{data.title} was not found: {reason}.\n"
        f"To use the real data, download it as {DATA_README_URL} explains (section '{name}') "
        "and set data_dir to its folder.\n"
        f"Continuing on a phantom instead: {cases} small synthetic cases written in the exact "
        f"layout of {name} to {root}, so that every cell runs. Its numbers say nothing about "
        f"{data.title.split(' (')[0]}."
    )
    return DataSource(name, root, phantom=True)


# --- results ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Numbers, arrays, tensors and frames as JSON values (NaN as null)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return _plain(value.to_dict(orient="index"))
    if isinstance(value, pd.Series):
        return _plain(value.to_dict())
    if isinstance(value, torch.Tensor | np.ndarray):
        return _plain(np.asarray(torch.as_tensor(value).detach().cpu()).tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_result(run_root: str | Path, notebook: str, result: Mapping[str, Any]) -> Path:
    """Write ``result`` to ``run_root/course/<notebook>.json``: what the notebook found, in numbers.

    Returns the file's path. Numbers, arrays, tensors, frames and paths become JSON (NaN: null).
    """
    path = Path(run_root) / RESULTS_FOLDER / f"{notebook}.json"
    text = json.dumps(_plain(result), indent=2, allow_nan=False)
    atomic_write(path, lambda p: p.write_text(text + "\n"))
    print(f"results written to {path}")
    return path


def dataset_result(
    source: DataSource,
    settings: Settings,
    runs: Mapping[str, RunDir],
    comparison: PaperComparison | None,
) -> dict[str, Any]:
    """What a dataset notebook (04-07) found, for :func:`save_result`: where its data and runs
    are, the headline numbers per loss, and the paper comparison's changes (None without one)."""
    if settings.dataset != source.dataset:
        raise ValueError(
            f"settings are for {settings.dataset!r} but the data source is {source.dataset!r}."
        )
    return {
        "dataset": source.dataset,
        "phantom": source.phantom,
        "data_root": source.root,
        "device": str(settings.device),
        "runs": {loss: run.path for loss, run in runs.items()},
        "summary": headline(runs),
        "paper": None if comparison is None else comparison.changes.to_dict(orient="records"),
    }
