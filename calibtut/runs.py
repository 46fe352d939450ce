"""The run directory: the contract between training (which writes it) and everything that explores it.

    runs/<dataset>/<loss>/seed_<n>/
        config.json      everything needed to reproduce the run; ``class_names`` names every
                         output channel of the network, in channel order (softmax: background
                         first)
        history.csv      one row per epoch
        checkpoint.pt    resumable training state
        per_image.csv    one row per test image and scored class: dice, ece, ace, mce, empty;
                         ``class_index`` is the class's output channel (an index into config
                         ``class_names``)
        bins.npz         per image and scored class bin sums and counts (redraws every diagram),
                         with ``image_ids``, ``class_names`` (the scored classes, in the order of
                         the bins' class axis) and ``class_indices`` (each one's output channel)
        predictions/     optional, per test image <id>.npz: image, label, prediction and
                         confidence, compact (float16/uint8), for the overlay figures; label
                         values and channels are output channels, named by config ``class_names``

The scored classes need not be every output channel: the paper leaves the softmax background out
of the metrics, so a softmax run's bins hold classes 1.. while its label maps count from 0. Match
per-image rows to bins by ``class_indices`` (or by class name), never by position.

Every file is written to a temporary name and renamed into place, so a reader never sees a
half-written file; a run counts as evaluated only when both result files exist.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from calibtut.binning import BinStats

__all__ = ["RunDir", "PER_IMAGE_COLUMNS", "LOSSES", "run_path", "find_runs", "atomic_write"]

PER_IMAGE_COLUMNS = ("image_id", "class_index", "class_name", "dice", "ece", "ace", "mce", "empty")
LOSSES = ("baseline", "hard", "soft")


def run_path(root: str | Path, dataset: str, loss: str, seed: int) -> Path:
    """Where a run lives: ``<root>/<dataset>/<loss>/seed_<seed>``."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return Path(root) / dataset / loss / f"seed_{seed}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Read and write one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def per_image_path(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def bins_path(self) -> Path:
        return self.path / "bins.npz"

    @property
    def is_evaluated(self) -> bool:
        """Both result files are in place (they are written atomically, bins first)."""
        return self.bins_path.is_file() and self.per_image_path.is_file()

    # config ----------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a run directory: {self.config_path} is missing."
            )
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.config_path} is not valid JSON: {err}") from err

    @property
    def name(self) -> str:
        """A short label for tables and legends: ``<dataset>/<loss>/seed_<n>``."""
        c = self.config
        return f"{c.get('dataset', '?')}/{c.get('loss', '?')}/seed_{c.get('seed', '?')}"

    def write_config(self, config: dict[str, Any]) -> None:
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        atomic_write(self.config_path, lambda p: p.write_text(text + "\n"))

    # history ---------------------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        self._require(self.history_path, "history.csv (written during training)")
        return pd.read_csv(self.history_path)

    def write_history(self, rows: Iterable[dict[str, Any]]) -> None:
        frame = pd.DataFrame(list(rows))
        atomic_write(self.history_path, lambda p: frame.to_csv(p, index=False))

    # results ---------------------------------------------------------------------------
    def per_image(self) -> pd.DataFrame:
        """The per-image table: one row per test image and class, columns ``PER_IMAGE_COLUMNS``."""
        self._require(self.per_image_path, "per_image.csv (written by evaluation)")
        frame = pd.read_csv(self.per_image_path, dtype={"image_id": str})
        missing = [c for c in PER_IMAGE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{self.per_image_path} lacks columns {missing}; expected {PER_IMAGE_COLUMNS}."
            )
        return frame

    def bins(self) -> tuple[BinStats, list[str], list[str]]:
        """Saved per-image bins, with the image ids and (scored) class names they belong to."""
        with self._bins_file() as z:
            try:
                bins = BinStats(
                    torch.from_numpy(z["pred_sum"]),
                    torch.from_numpy(z["target_sum"]),
                    torch.from_numpy(z["count"]),
                )
                return bins, [str(i) for i in z["image_ids"]], [str(c) for c in z["class_names"]]
            except KeyError as err:
                raise ValueError(f"{self.bins_path} lacks array {err}.") from err

    def class_indices(self) -> list[int]:
        """The output channel of each class of :meth:`bins` (per_image.csv's ``class_index``).

        Checked against the bins' class names and, where config.json names the channels, against
        those: a mismatch means the files come from different runs.
        """
        with self._bins_file() as z:
            if "class_indices" not in z:
                raise ValueError(
                    f"{self.bins_path} lacks array 'class_indices' (written before runs recorded "
                    f"each class's output channel): evaluate the run again."
                )
            indices = [int(i) for i in z["class_indices"]]
            names = [str(c) for c in z["class_names"]]
        if len(indices) != len(names):
            raise ValueError(
                f"{self.bins_path} holds {len(indices)} class_indices for {len(names)} classes."
            )
        channels = self.config.get("class_names")
        for index, name in zip(indices, names, strict=True):
            if channels is not None and (index >= len(channels) or channels[index] != name):
                raise ValueError(
                    f"{self.bins_path} puts class {name!r} at output channel {index}, but "
                    f"{self.config_path} names the channels {channels}."
                )
        return indices

    def _bins_file(self) -> np.lib.npyio.NpzFile:
        self._require(self.bins_path, "bins.npz (written by evaluation)")
        return np.load(self.bins_path, allow_pickle=False)

    def write_results(
        self,
        rows: list[dict[str, Any]],
        bins: BinStats,
        image_ids: list[str],
        class_names: list[str],
        class_indices: Sequence[int] | None = None,
    ) -> None:
        """Write ``bins.npz`` then ``per_image.csv`` (each atomically): the run is then evaluated.

        ``class_names`` are the scored classes, in the order of the bins' class axis, and
        ``class_indices`` their output channels; None takes each class's channel from the
        ``class_index`` of its rows. Every row must name one of ``class_names`` with its channel
        (checked before anything is written).
        """
        count = tuple(bins.count.shape[:2])
        if count != (len(image_ids), len(class_names)):
            raise ValueError(
                f"bins of {count[0]} images and {count[1]} classes do not fit {len(image_ids)} "
                f"image ids and {len(class_names)} class names."
            )
        frame = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
        indices = _checked_class_indices(frame, list(class_names), class_indices)
        arrays = {
            "pred_sum": bins.pred_sum.detach().double().cpu().numpy(),
            "target_sum": bins.target_sum.detach().double().cpu().numpy(),
            "count": bins.count.detach().double().cpu().numpy(),
            "image_ids": np.asarray(image_ids, dtype=str),
            "class_names": np.asarray(class_names, dtype=str),
            "class_indices": np.asarray(indices, dtype=np.int64),
        }

        def save_npz(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez_compressed(f, **arrays)

        self.per_image_path.unlink(missing_ok=True)
        atomic_write(self.bins_path, save_npz)
        atomic_write(self.per_image_path, lambda p: frame.to_csv(p, index=False))

    # predictions (optional: what the overlay figures show) --------------------------------
    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def prediction_ids(self) -> list[str]:
        """Ids of the images whose predictions were saved (sorted)."""
        if not self.predictions_dir.is_dir():
            return []
        return sorted(p.stem for p in self.predictions_dir.glob("*.npz"))

    def write_prediction(
        self,
        image_id: str,
        image: np.ndarray,
        label: np.ndarray,
        prediction: np.ndarray,
        confidence: np.ndarray,
    ) -> None:
        """Save one test image's overlay data.

        ``image``: the first input channel ``(*spatial)``. Softmax datasets: ``label`` and
        ``prediction`` are class-index maps ``(*spatial)`` and ``confidence`` the max probability.
        Sigmoid (multi-label) datasets: all three are per channel ``(C, *spatial)`` and
        ``confidence`` is each region's probability.
        """
        if label.shape != prediction.shape or prediction.shape != confidence.shape:
            raise ValueError(
                f"label {label.shape}, prediction {prediction.shape} and confidence "
                f"{confidence.shape} must share one shape."
            )
        if image.shape != label.shape[-image.ndim :]:
            raise ValueError(f"image shape {image.shape} does not match label shape {label.shape}.")
        arrays = {
            "image": np.asarray(image, dtype=np.float16),
            "label": np.asarray(label, dtype=np.uint8),
            "prediction": np.asarray(prediction, dtype=np.uint8),
            "confidence": np.asarray(confidence, dtype=np.float16),
        }

        def save_npz(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez_compressed(f, **arrays)

        atomic_write(self.predictions_dir / f"{image_id}.npz", save_npz)

    def prediction(self, image_id: str) -> dict[str, np.ndarray]:
        """One image's saved overlay arrays (see ``write_prediction``)."""
        path = self.predictions_dir / f"{image_id}.npz"
        self._require(path, f"saved prediction for image {image_id!r}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("image", "label", "prediction", "confidence")}

    def _require(self, path: Path, what: str) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {what}: {path} is missing.")


def _checked_class_indices(
    frame: pd.DataFrame, class_names: list[str], class_indices: Sequence[int] | None
) -> list[int]:
    """Each scored class's output channel: given, or read from the rows; rows must agree."""
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be distinct, got {class_names}.")
    unknown = sorted(set(frame["class_name"]) - set(class_names))
    if unknown:
        raise ValueError(f"rows name classes {unknown} that are not in class_names {class_names}.")
    found = frame.groupby("class_name")["class_index"].unique()
    several = {name: sorted(map(int, i)) for name, i in found.items() if len(i) > 1}
    if several:
        raise ValueError(f"rows give one class several class_index values: {several}.")
    from_rows = {str(name): int(i[0]) for name, i in found.items()}
    if class_indices is None:
        missing = [name for name in class_names if name not in from_rows]
        if missing:
            raise ValueError(
                f"classes {missing} have no rows to take their output channel from: pass "
                "class_indices."
            )
        class_indices = [from_rows[name] for name in class_names]
    indices = [int(i) for i in class_indices]
    if (
        len(indices) != len(class_names)
        or len(set(indices)) != len(indices)
        or min(indices, default=0) < 0
    ):
        raise ValueError(
            f"class_indices must give each of the classes {class_names} its own output channel "
            f"(>= 0), got {list(class_indices)}."
        )
    given = dict(zip(class_names, indices, strict=True))
    wrong = {name: i for name, i in from_rows.items() if i != given[name]}
    if wrong:
        raise ValueError(f"rows give classes the channels {wrong}, but class_indices says {given}.")
    return indices


def find_runs(root: str | Path) -> list[RunDir]:
    """All evaluated run directories below ``root``, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No run root at {root}.")
    runs = [RunDir(p.parent) for p in sorted(root.rglob("config.json"))]
    return [r for r in runs if r.is_evaluated]
