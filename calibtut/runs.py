"""The run directory: the contract between training (which writes it) and everything that explores it.

    runs/<dataset>/<loss>/seed_<n>/
        config.json      everything needed to reproduce the run; ``class_names`` names every
                         output channel of the network, in channel order (softmax: background
                         first)
        history.csv      one row per epoch
        checkpoint.pt    resumable training state (model, optimiser, schedule, scaler, epoch)
        best.pt          the weights of the best validation Dice: what evaluation uses
        per_image.csv    one row per test image and scored class (:data:`PER_IMAGE_COLUMNS`,
                         then :data:`FLOOR_COLUMNS`, the ACE and MCE noise floors);
                         ``class_index`` is the class's output channel (an index into config
                         ``class_names``)
        bins.npz         per image and scored class bin sums and counts (redraws every diagram),
                         with ``image_ids``, ``class_names`` (the scored classes, in the order of
                         the bins' class axis), ``class_indices`` (each one's output channel) and
                         ``floor_target_sums``, the binned label draws behind the noise floors
                         (so floors re-bin and pool like the bins)
        predictions/     per test image <id>.npz: image, label, prediction and confidence,
                         compact (float16/uint8), for the overlay figures; label values and
                         channels are output channels, named by config ``class_names``

The scored classes need not be every output channel: the paper leaves the softmax background out
of the metrics, so a softmax run's bins hold classes 1.. while its label maps count from 0. Match
per-image rows to bins by ``class_indices`` (or by class name), never by position.

Every file is written to a temporary name and renamed into place, so a reader never sees a
half-written file; a run counts as evaluated only when both result files exist. The run's
lifecycle lives here too (:meth:`RunDir.plan`: train, resume or reuse; :meth:`RunDir.clear`), so
the command line, the course and the notebooks decide it in one way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from calibtut.binning import BinStats
from calibtut.methods import LOSSES

if TYPE_CHECKING:
    from calibtut.metrics import FloorDraws, ImageResults

__all__ = [
    "RunDir",
    "RunResults",
    "RunPlan",
    "PER_IMAGE_COLUMNS",
    "FLOOR_COLUMNS",
    "IMAGE_METRICS",
    "run_path",
    "find_runs",
    "resolve_runs",
    "image_means",
    "load_checkpoint",
    "atomic_write",
]

PER_IMAGE_COLUMNS = ("image_id", "class_index", "class_name", "dice", "ece", "ace", "mce", "empty")
"""The columns every ``per_image.csv`` has: the one definition of its schema."""
FLOOR_COLUMNS = ("ace_floor", "mce_floor")
"""The noise-floor columns evaluation adds (:func:`calibtut.metrics.noise_floor`)."""

IMAGE_METRICS = ("dice", "ece", "ace", "mce")
"""The per-image metrics of ``per_image.csv``, in the order tables show them."""

RunPlan = Literal["train", "resume", "reuse"]


def run_path(root: str | Path, dataset: str, loss: str, seed: int) -> Path:
    """Where a run lives: ``<root>/<dataset>/<loss>/seed_<seed>``.

    Raises:
        ValueError: ``loss`` is not one of :data:`calibtut.methods.LOSSES`.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return Path(root) / dataset / loss / f"seed_{seed}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions of a plainly created one (``0o666`` less the umask), so a
    collaborator can read a shared run; a failed ``write`` leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` into ``path`` itself (it would add ``.npz`` to a bare name)."""
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of a run (``checkpoint.pt`` or ``best.pt``), read without unpickling code.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is damaged or not a calibtut checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict) or "model" not in state or "dataset" not in state:
        raise ValueError(f"{path} is not a calibtut checkpoint (no model/dataset entries)")
    return state


@dataclass(frozen=True)
class RunResults:
    """An evaluated run's test results, read once: what every table, figure and explorer uses.

    Attributes:
        bins: per image and scored class bins ``(images, classes, num_bins)``.
        image_ids: the images along the bins' first axis.
        class_names: the scored classes along the bins' class axis.
        class_indices: each scored class's output channel (``per_image.csv``'s ``class_index``).
        per_image: ``per_image.csv`` (:data:`PER_IMAGE_COLUMNS`, and :data:`FLOOR_COLUMNS` when
            the run was evaluated with noise floors).
        draws: the label draws behind the noise floors (None without them).

    Results are shared by everyone who reads the run (they are cached): treat them as read-only.
    """

    bins: BinStats
    image_ids: list[str]
    class_names: list[str]
    class_indices: list[int]
    per_image: pd.DataFrame
    draws: FloorDraws | None = None
    _rebinned: dict[int, BinStats] = field(default_factory=dict, repr=False, compare=False)

    def image(self, image_id: str) -> int:
        """The position of ``image_id`` along the bins' image axis."""
        try:
            return self.image_ids.index(image_id)
        except ValueError:
            raise ValueError(f"no test image {image_id!r} in these results") from None

    def rebinned(self, num_bins: int | None) -> BinStats:
        """The bins merged to ``num_bins`` (a divisor of the saved number; None: as saved)."""
        if num_bins is None or num_bins == self.bins.num_bins:
            return self.bins
        if num_bins not in self._rebinned:
            self._rebinned[num_bins] = self.bins.rebinned(num_bins)
        return self._rebinned[num_bins]

    def rebinned_draws(self, num_bins: int | None) -> FloorDraws | None:
        """The floor's label draws merged to ``num_bins`` (None: as saved; None without draws)."""
        if self.draws is None or num_bins is None or num_bins == self.bins.num_bins:
            return self.draws
        return self.draws.rebinned(num_bins)

    def image_means(self) -> pd.DataFrame:
        """Per test image the paper's class means of each metric (see :func:`image_means`)."""
        return image_means(self.per_image)


def image_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per image, each metric averaged over classes as the paper does: the one home of it.

    Calibration errors are defined for every class, so ECE/ACE/MCE (and their noise floors)
    average all scored classes, those absent from the image included; Dice averages the classes
    present (not ``empty``). NaN values are skipped in both.

    Args:
        per_image: a ``per_image.csv`` table.

    Returns:
        One row per image (index ``image_id``, in the table's order), one column per metric.
    """
    empty = per_image["empty"].astype(bool)
    metrics = [
        m for m in per_image.columns if m not in ("image_id", "class_index", "class_name", "empty")
    ]
    by_image = per_image.groupby("image_id", sort=False)
    means = by_image[[m for m in metrics if m != "dice"]].mean()
    means.insert(
        0, "dice", per_image["dice"].where(~empty).groupby(per_image["image_id"], sort=False).mean()
    )
    return means


class RunDir:
    """Read and write one run directory (see the module docstring for the layout).

    Example:
        >>> run = RunDir("runs/demo/synthetic/soft/seed_0")   # doctest: +SKIP
        >>> results = run.results()                           # doctest: +SKIP
        >>> results.per_image.groupby("class_name")["ace"].mean()  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

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
    def best_path(self) -> Path:
        return self.path / "best.pt"

    @property
    def per_image_path(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def bins_path(self) -> Path:
        return self.path / "bins.npz"

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

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

    # history and checkpoints -------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        self._require(self.history_path, "history.csv (written during training)")
        return pd.read_csv(self.history_path)

    def write_history(self, rows: Iterable[dict[str, Any]]) -> None:
        frame = pd.DataFrame(list(rows))
        atomic_write(self.history_path, lambda p: frame.to_csv(p, index=False))

    def checkpoint(self) -> dict[str, Any]:
        """The resumable training state (:func:`load_checkpoint`)."""
        return load_checkpoint(self.checkpoint_path)

    def best(self) -> dict[str, Any]:
        """The best validation weights, what evaluation uses (:func:`load_checkpoint`)."""
        return load_checkpoint(self.best_path)

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write(self.checkpoint_path, lambda p: torch.save(state, p))

    def write_best(self, state: dict[str, Any]) -> None:
        atomic_write(self.best_path, lambda p: torch.save(state, p))

    # lifecycle ---------------------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        """Training is complete and the test results are written."""
        if not self.is_evaluated or not self.checkpoint_path.is_file():
            return False
        return bool(self.checkpoint().get("finished", False))

    def plan(self, config: Mapping[str, Any], overwrite: bool = False) -> RunPlan:
        """What to do with this directory for a run of ``config``, from its files alone.

        Args:
            config: the training fields of the run to make (``TrainConfig.to_dict()``); each must
                equal the value recorded in ``config.json`` for the run there to count as this run.
            overwrite: replace whatever is there.

        Returns:
            ``"train"`` (nothing to keep, or ``overwrite``), ``"resume"`` (an interrupted run of
            this config) or ``"reuse"`` (this config, trained and evaluated).

        Raises:
            FileExistsError: the directory holds a run of another config (it may be days of GPU
                time), naming the fields that differ.
        """
        if overwrite or not self.config_path.is_file():
            return "train"
        recorded = self.config
        differences = [
            f"{name}: {recorded[name]!r} in the run, {value!r} now"
            if name in recorded
            else f"{name}: absent from the run (an older calibtut), {value!r} now"
            for name, value in config.items()
            if recorded.get(name, _ABSENT) != value
        ]
        if differences:
            raise FileExistsError(
                f"{self.path} holds a run with a different config ({'; '.join(differences)}); "
                "pass overwrite=True (--overwrite) to replace it, or choose another run root"
            )
        if not self.checkpoint_path.is_file():
            return "train"
        return "reuse" if self.is_finished else "resume"

    def clear(self) -> None:
        """Remove the run's files (results first, so it never looks evaluated while half-deleted)."""
        for path in (self.per_image_path, self.bins_path, self.history_path, self.checkpoint_path):
            path.unlink(missing_ok=True)
        self.best_path.unlink(missing_ok=True)
        self.config_path.unlink(missing_ok=True)
        if self.predictions_dir.is_dir():
            shutil.rmtree(self.predictions_dir)

    # results ---------------------------------------------------------------------------
    def results(self) -> RunResults:
        """The test results (bins, ids, classes and ``per_image.csv``), read once and cached.

        Reading again after the files change (a re-evaluation) reloads them.

        Raises:
            FileNotFoundError: the run is not evaluated.
            ValueError: the files are damaged or do not belong together.
        """
        for path, what in ((self.bins_path, "bins.npz"), (self.per_image_path, "per_image.csv")):
            self._require(path, f"{what} (written by evaluation)")
        stamps = tuple(
            (p.stat().st_mtime_ns, p.stat().st_size) for p in (self.bins_path, self.per_image_path)
        )
        return _read_results(str(self.path.resolve()), stamps)

    def write_results(
        self,
        results: ImageResults,
        image_ids: Sequence[str],
        class_names: Sequence[str],
        class_indices: Sequence[int],
    ) -> None:
        """Write ``bins.npz`` then ``per_image.csv`` (each atomically): the run is then evaluated.

        Args:
            results: the test images' results, ``(images, scored classes)``
                (:func:`calibtut.metrics.image_results`, concatenated).
            image_ids: one id per image.
            class_names: the scored classes, in the order of the results' class axis.
            class_indices: their output channels (indices into config ``class_names``).

        Raises:
            ValueError: the ids, names or channels do not fit the results (checked before
                anything is written).
        """
        bins = results.bins
        count = tuple(bins.count.shape[:2])
        if count != (len(image_ids), len(class_names)):
            raise ValueError(
                f"bins of {count[0]} images and {count[1]} classes do not fit {len(image_ids)} "
                f"image ids and {len(class_names)} class names."
            )
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct, got {list(class_names)}.")
        indices = [int(i) for i in class_indices]
        if (
            len(indices) != len(class_names)
            or len(set(indices)) != len(indices)
            or min(indices) < 0
        ):
            raise ValueError(
                f"class_indices must give each of the classes {list(class_names)} its own output "
                f"channel (>= 0), got {list(class_indices)}."
            )
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("image_ids must be distinct.")
        frame = per_image_table(results, list(image_ids), list(class_names), indices)
        arrays = {
            "pred_sum": bins.pred_sum.detach().double().cpu().numpy(),
            "target_sum": bins.target_sum.detach().double().cpu().numpy(),
            "count": bins.count.detach().double().cpu().numpy(),
            "image_ids": np.asarray(image_ids, dtype=str),
            "class_names": np.asarray(class_names, dtype=str),
            "class_indices": np.asarray(indices, dtype=np.int64),
        }
        if results.draws is not None:
            arrays["floor_target_sums"] = results.draws.target_sums.detach().float().cpu().numpy()
        self.per_image_path.unlink(missing_ok=True)
        atomic_write(self.bins_path, lambda p: _save_npz(p, arrays))
        atomic_write(self.per_image_path, lambda p: frame.to_csv(p, index=False))

    # predictions (what the overlay figures show) ------------------------------------------
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
        atomic_write(self.predictions_dir / f"{image_id}.npz", lambda p: _save_npz(p, arrays))

    def prediction(self, image_id: str) -> dict[str, np.ndarray]:
        """One image's saved overlay arrays (see :meth:`write_prediction`)."""
        path = self.predictions_dir / f"{image_id}.npz"
        self._require(path, f"saved prediction for image {image_id!r}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("image", "label", "prediction", "confidence")}

    def _require(self, path: Path, what: str) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {what}: {path} is missing.")


_ABSENT = object()


def per_image_table(
    results: ImageResults,
    image_ids: list[str],
    class_names: list[str],
    class_indices: list[int],
) -> pd.DataFrame:
    """``per_image.csv`` of some images' results: one row per image and scored class."""
    B, C = results.dice.shape
    if len(image_ids) != B or len(class_names) != C or len(class_indices) != C:
        raise ValueError(
            f"Need {B} image ids and {C} class names and channels, got {len(image_ids)}, "
            f"{len(class_names)} and {len(class_indices)}."
        )
    columns = {
        "dice": results.dice,
        "ece": results.errors.ece,
        "ace": results.errors.ace,
        "mce": results.errors.mce,
    }
    if results.floor is not None:
        columns.update(ace_floor=results.floor.ace, mce_floor=results.floor.mce)
    values = {k: v.detach().double().cpu().numpy().ravel() for k, v in columns.items()}
    return pd.DataFrame(
        {
            "image_id": np.repeat(np.asarray(image_ids, dtype=object), C),
            "class_index": np.tile(np.asarray(class_indices, dtype=np.int64), B),
            "class_name": np.tile(np.asarray(class_names, dtype=object), B),
            **{k: values[k] for k in ("dice", "ece", "ace", "mce")},
            "empty": results.empty.detach().cpu().numpy().ravel().astype(bool),
            **{k: values[k] for k in FLOOR_COLUMNS if k in values},
        }
    )


@lru_cache(maxsize=64)
def _read_results(path: str, _stamps: tuple) -> RunResults:
    """The results of the run at ``path``, cached by the result files' times and sizes."""
    run = RunDir(path)
    try:
        with np.load(run.bins_path, allow_pickle=False) as z:
            bins = BinStats(*(torch.from_numpy(z[k]) for k in ("pred_sum", "target_sum", "count")))
            image_ids = [str(i) for i in z["image_ids"]]
            class_names = [str(c) for c in z["class_names"]]
            if "class_indices" not in z:
                raise ValueError(
                    f"{run.bins_path} lacks array 'class_indices' (written before runs recorded "
                    "each class's output channel): evaluate the run again."
                )
            class_indices = [int(i) for i in z["class_indices"]]
            draws = None
            if "floor_target_sums" in z:
                from calibtut.metrics import FloorDraws

                draws = FloorDraws(torch.from_numpy(z["floor_target_sums"]))
    except KeyError as err:
        raise ValueError(f"{run.bins_path} lacks array {err}.") from err
    if len(class_indices) != len(class_names):
        raise ValueError(
            f"{run.bins_path} holds {len(class_indices)} class_indices for {len(class_names)} classes."
        )
    channels = run.config.get("class_names")
    for index, name in zip(class_indices, class_names, strict=True):
        if channels is not None and (index >= len(channels) or channels[index] != name):
            raise ValueError(
                f"{run.bins_path} puts class {name!r} at output channel {index}, but "
                f"{run.config_path} names the channels {channels}."
            )
    per_image = pd.read_csv(run.per_image_path, dtype={"image_id": str})
    missing = [c for c in PER_IMAGE_COLUMNS if c not in per_image.columns]
    if missing:
        raise ValueError(
            f"{run.per_image_path} lacks columns {missing}; expected {PER_IMAGE_COLUMNS}."
        )
    return RunResults(bins, image_ids, class_names, class_indices, per_image, draws)


def find_runs(root: str | Path) -> list[RunDir]:
    """All evaluated run directories below ``root``, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No run root at {root}.")
    runs = [RunDir(p.parent) for p in sorted(root.rglob("config.json"))]
    return [r for r in runs if r.is_evaluated]


def resolve_runs(paths: RunDir | str | Path | Iterable[RunDir | str | Path]) -> list[RunDir]:
    """Evaluated runs from run directories and folders of runs: the one way paths become runs.

    Args:
        paths: a run directory, a folder holding runs at any depth (e.g. ``runs/``), or several
            of them (``RunDir`` objects or paths); duplicates are kept once, in order.

    Returns:
        The evaluated runs.

    Raises:
        FileNotFoundError: a path is neither a run nor a folder with an evaluated run.
        ValueError: a run directory given by name is not evaluated, or nothing was given.
        TypeError: an item is neither a path nor a ``RunDir``.
    """
    items = [paths] if isinstance(paths, RunDir | str | Path) else list(paths)
    runs: dict[Path, RunDir] = {}
    for item in items:
        if not isinstance(item, RunDir | str | Path):
            raise TypeError(f"runs must be RunDirs or paths, got {type(item).__name__}.")
        run = item if isinstance(item, RunDir) else RunDir(item)
        if run.config_path.is_file():
            if not run.is_evaluated:
                raise ValueError(
                    f"{run.path} has not been evaluated (no per_image.csv/bins.npz): finish "
                    "training it, or run `calibtut evaluate` on it"
                )
            found = [run]
        elif run.path.is_dir():
            found = find_runs(run.path)
            if not found:
                raise FileNotFoundError(f"no evaluated run directory under {run.path}")
        else:
            raise FileNotFoundError(f"{run.path} is neither a run directory nor a folder of runs")
        runs.update((r.path.resolve(), r) for r in found)
    if not runs:
        raise ValueError("no runs given: pass run directories or a folder that holds runs")
    return list(runs.values())
