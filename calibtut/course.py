"""What the course notebooks share, so that their own cells stay short and teach.

* :func:`enable_colab`: Colab's widget manager, for the set-up cell every notebook starts with;
* :func:`resolve_settings`: one place that turns a notebook's parameters (``smoke``, ``device``,
  ``epochs``, ``run_root``) into training settings (the GPU when there is one; tiny in smoke
  mode and on phantoms);
* :func:`locate_dataset`: the real dataset if it is under ``data_dir``, else a phantom in its
  exact layout, with a message that says so and where to get the data;
* :func:`train_losses`: the three losses of one dataset, reusing finished runs;
* tables about training rather than calibration (settings, classes, headline numbers) and
  :func:`toy_segmentation`, the hand-made prediction that notebooks 01 and 02 compute on;
* :func:`paper_comparison`: one dataset's published results beside your runs on it;
* :func:`save_result`: the small JSON file each notebook ends with, which the tests read, and
  :func:`dataset_result`, what the dataset notebooks (04-07) put in it.

Calibration itself is computed by :mod:`calibtut.metrics`; every figure, including those about
training (learning curves, the Dice-ACE trade-off, gradient maps), is drawn by
:mod:`calibtut.plots`.
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
from matplotlib.figure import Figure
from monai.networks import one_hot
from scipy import ndimage

from calibtut import paper, plots
from calibtut.data import SPLITS, DatasetSpec, spec, write_phantom
from calibtut.data.phantoms import MARKER as PHANTOM_MARKER
from calibtut.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASSES
from calibtut.data.synthetic import generate
from calibtut.report import METRICS, report_table
from calibtut.runs import LOSSES, RunDir, atomic_write, find_runs
from calibtut.train import TrainConfig, select_device, train_or_reuse
from calibtut.widgets import enable_colab_widgets

__all__ = [
    "REPOSITORY_URL",
    "DATA_README_URL",
    "enable_colab",
    "Settings",
    "resolve_settings",
    "DataSource",
    "locate_dataset",
    "train_losses",
    "headline",
    "class_table",
    "configuration_table",
    "paper_and_runs_frame",
    "PaperComparison",
    "paper_comparison",
    "ToySegmentation",
    "toy_segmentation",
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

    def config(self, loss: str, seed: int = 0) -> TrainConfig:
        """The training configuration of one run."""
        return TrainConfig.for_dataset(self.dataset, loss, seed, **self.overrides)

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
    **overrides: Any,
) -> Settings:
    """A notebook's parameters as :class:`Settings`, printed.

    ``dataset`` is a name, or where :func:`locate_dataset` found it: a phantom's numbers mean
    nothing, so it is trained like ``smoke``. ``device`` None picks CUDA, then Apple MPS, then
    the CPU. ``smoke`` shrinks training to a few steps of a narrow network on small patches; ``epochs`` and ``overrides`` (any
    :class:`~calibtut.train.TrainConfig` field, None meaning "keep") win over both. On a CPU,
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


def class_table(data: DatasetSpec) -> pd.DataFrame:
    """What each output channel predicts, in the dataset's own label values."""
    names = dict(data.labels)
    rows = []
    if data.regions:
        for channel, (region, members) in enumerate(data.regions):
            values = ", ".join(f"{v} {names[v]}" for v in members)
            rows.append({"channel": channel, "predicts": region, "label values": values})
    else:
        for channel, (value, name) in enumerate(data.labels):
            rows.append({"channel": channel, "predicts": name, "label values": str(value)})
    table = pd.DataFrame(rows).set_index("channel")
    scored = 0 if data.include_background else 1
    table["scored"] = table.index >= scored
    return table


def configuration_table(settings: Settings) -> pd.DataFrame:
    """The dataset's preset (for the real datasets: the paper's configuration) beside this run's."""
    preset, used = TrainConfig.for_dataset(settings.dataset), settings.config("baseline")

    def rows(config: TrainConfig) -> dict[str, Any]:
        data = config.dataset_spec()
        return {
            "network": f"{config.network} ({config.width} filters)",
            "epochs": config.epochs,
            "max optimiser steps": config.max_steps or "—",
            "learning rate": config.lr,
            "batch size": config.batch_size,
            "weight decay": config.weight_decay,
            "warm-up epochs": config.warmup_epochs,
            "validation every": f"{config.val_every} epochs",
            "training patch": " x ".join(map(str, data.patch_size)),
            "sliding window": " x ".join(map(str, data.val_window)),
            "loss weights (Dice, CE, mL1-ACE)": (
                f"{config.dice_weight}, {config.ce_weight}, {config.ace_weight}"
            ),
            "bins": config.num_bins,
        }

    return pd.DataFrame({"preset": rows(preset), "this notebook": rows(used)}).astype(str)


# --- training -----------------------------------------------------------------------------------


def train_losses(
    settings: Settings,
    data_dir: str | Path | None = None,
    losses: Sequence[str] = LOSSES,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, RunDir]:
    """Train (or reuse) one run per loss into ``settings.run_root``; returns them by loss.

    A finished run with the same configuration is reused and an interrupted one resumes. A run
    made with other settings is an error naming what differs (it may be days of GPU time):
    choose another ``run_root``, or pass ``overwrite=True`` to train it again
    (:func:`calibtut.train.train_or_reuse`).
    """
    return {
        loss: train_or_reuse(
            settings.config(loss, seed),
            data_dir,
            settings.run_root,
            overwrite,
            device=settings.device,
            progress=not settings.small,
        )
        for loss in losses
    }


def headline(runs: Mapping[str, RunDir]) -> pd.DataFrame:
    """Per loss, Dice, ECE, ACE and MCE averaged over test images (the report's macro scope)."""
    table = report_table(list(runs.values()))
    macro = table[table["scope"] == "macro"].pivot_table(
        index="loss", columns="metric", values="value", aggfunc="first"
    )
    return macro.reindex([loss for loss in LOSSES if loss in macro.index])[list(METRICS)]


def _runs_on_real_data(run_root: str | Path, datasets: Sequence[str]) -> list[RunDir]:
    """Evaluated runs of ``datasets`` under ``run_root``, leaving out runs trained on a phantom."""
    if not Path(run_root).is_dir():
        return []
    chosen = []
    for run in find_runs(run_root):
        config = run.config
        data_dir = config.get("data_dir")
        on_phantom = data_dir is not None and (Path(data_dir) / PHANTOM_MARKER).is_file()
        if config.get("dataset") in datasets and not on_phantom:
            chosen.append(run)
    return chosen


def paper_and_runs_frame(
    paper_root: str | Path | None, run_root: str | Path, datasets: Sequence[str]
) -> pd.DataFrame | None:
    """The paper's per-image results on ``datasets`` (source "paper") and, beside them, your runs
    of those datasets on real data under ``run_root`` (source "yours"); None if neither exists.

    ``paper_root`` None downloads the paper's files (:func:`calibtut.paper.paper_frame`); when
    that fails (offline) the paper is left out with a message.
    """
    parts = []
    try:
        parts.append(paper.paper_frame(paper_root, datasets=datasets))
    except ConnectionError as err:
        print(f"The paper's results could not be loaded, so they are left out: {err}")
    mine = _runs_on_real_data(run_root, datasets)
    if mine:
        print(f"Your runs on real data: {', '.join(run.name for run in mine)}.")
        parts.append(paper.runs_frame([run.path for run in mine], source="yours"))
    else:
        print(
            f"No runs of {', '.join(datasets)} on real data under {run_root} "
            "(runs on phantoms are left out): the paper's results only."
        )
    return pd.concat(parts, ignore_index=True) if parts else None


@dataclass(frozen=True)
class PaperComparison:
    """One dataset's per-image results (the paper's, and yours on real data) and their changes."""

    frame: pd.DataFrame
    """Per image, loss and metric: :func:`paper_and_runs_frame` for the one dataset."""
    changes: pd.DataFrame
    """Per source, loss and metric: the per-image percentage change against the baseline, mean
    ± std (:func:`calibtut.paper.percentage_change_table`, without its pooled "all" rows)."""

    def markdown(self) -> str:
        """The changes as the Markdown table notebooks display."""
        return paper.percentage_change_markdown(self.changes)

    def figure(self, metrics: Sequence[str] = ("macro_ace", "dice")) -> Figure:
        """Box plots of the per-image values of ``metrics``, paper and yours side by side."""
        return plots.plot_per_image_distributions(self.frame, metrics=metrics)


def paper_comparison(
    paper_root: str | Path | None, run_root: str | Path, dataset: str
) -> PaperComparison | None:
    """The paper's results on ``dataset`` beside your runs of it on real data under ``run_root``
    (runs on phantoms are left out); None when neither is there (see :func:`paper_and_runs_frame`).
    """
    frame = paper_and_runs_frame(paper_root, run_root, [dataset])
    if frame is None:
        return None
    changes = paper.percentage_change_table(frame=frame)
    return PaperComparison(frame, changes[changes["dataset"] != "all"].reset_index(drop=True))


# --- the hand-made segmentation of notebooks 01 and 02 ------------------------------------------


@dataclass(frozen=True)
class ToySegmentation:
    """One synthetic image, an annotation and a hand-made prediction, as ``(1, C, H, W)`` tensors."""

    image: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor
    class_names: tuple[str, ...]


def toy_segmentation(seed: int = 1, sharpness: float = 8.0, size: int = 64) -> ToySegmentation:
    """A prediction that knows the true shapes but not where the annotator drew the boundaries.

    The image comes from :func:`calibtut.data.generate`, with its annotation (boundaries moved
    by about a pixel, as a second annotator would). The "model" softmaxes ``sharpness`` times
    the slightly blurred one-hot *true* shapes: sure of itself everywhere, hence confidently wrong
    wherever the annotation strays from the truth, as trained networks are near boundaries.
    ``sharpness`` near 1 is a timid model, 8 a typical overconfident one.
    """
    batch = generate(1, (size, size), seed)
    truth = one_hot(torch.from_numpy(batch.true_labels), len(SYNTHETIC_CLASSES)).numpy()
    smooth = ndimage.gaussian_filter(truth, sigma=(0, 0, 1.0, 1.0))
    probs = torch.softmax(torch.from_numpy(sharpness * smooth), dim=1).float()
    target = one_hot(torch.from_numpy(batch.labels), len(SYNTHETIC_CLASSES)).float()
    return ToySegmentation(torch.from_numpy(batch.images), probs, target, SYNTHETIC_CLASSES)


# --- results the tests read ---------------------------------------------------------------------


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


def save_result(run_root: str | Path, notebook: str, result: Mapping[str, Any]) -> None:
    """Write ``result`` to ``run_root/course/<notebook>.json``: what the notebook found, in numbers."""
    path = Path(run_root) / RESULTS_FOLDER / f"{notebook}.json"
    text = json.dumps(_plain(result), indent=2, allow_nan=False)
    atomic_write(path, lambda p: p.write_text(text + "\n"))
    print(f"results written to {path}")


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
