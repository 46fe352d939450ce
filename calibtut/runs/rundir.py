"""One run directory: its paths, config, history, checkpoints, results and predictions, and its
lifecycle (train, resume or reuse; clear); and the one way paths become runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from calibtut.methods import METHODS
from calibtut.runs.files import (
    atomic_write,
    load_checkpoint,
    remove_orphans,
    run_identity,
    save_npz,
)
from calibtut.runs.results import RunResults, per_image_table, read_results

if TYPE_CHECKING:
    from calibtut.metrics import ImageResults

__all__ = [
    "RunDir",
    "RunPlan",
    "RunLockedError",
    "SkippedRunsWarning",
    "run_path",
    "find_runs",
    "resolve_runs",
    "PROBABILITY_LEVELS",
]

RunPlan = Literal["train", "resume", "reuse"]
_HELD: set[Path] = set()  # run directories this process has locked (the lock is re-entrant)
_UNWRITTEN_LOCK_S = 30.0  # an empty lock file this old was left by a process killed while taking it
PROBABILITY_LEVELS = 255
"""Saved probabilities are ``round(p * 255)`` as uint8: overlays show them to within 1/510."""


class RunLockedError(RuntimeError):
    """Another process is training or evaluating the run directory."""


class SkippedRunsWarning(UserWarning):
    """A folder of runs held runs that are not evaluated; they were left out."""


def run_path(root: str | Path, dataset: str, loss: str, seed: int) -> Path:
    """Where a run lives: ``<root>/<dataset>/<loss>/seed_<seed>``.

    The one place the layout of a run root is spelt out: training, the command line and the
    course all find runs through it.

    Args:
        root: the run root (e.g. ``runs/``).
        dataset: the dataset's name.
        loss: the method, one of :data:`calibtut.methods.METHODS` (a training loss, or
            ``<loss>+<post-hoc>``).
        seed: the training seed.

    Returns:
        The run directory's path (it need not exist).

    Raises:
        ValueError: ``loss`` is not one of :data:`calibtut.methods.METHODS`.

    Example:
        >>> run_path("runs", "acdc", "soft", 0).as_posix()
        'runs/acdc/soft/seed_0'
    """
    if loss not in METHODS:
        raise ValueError(f"loss must be one of {tuple(METHODS)}, got {loss!r}.")
    return Path(root) / dataset / loss / f"seed_{seed}"


class RunDir:
    """Read and write one run directory (see the module docstring for the layout).

    Training writes it, everything else reads it; a run made on a GPU elsewhere can be explored
    on a laptop. Creating a ``RunDir`` touches no file.

    Args:
        path: the run directory (``<root>/<dataset>/<loss>/seed_<n>``).

    Example:
        >>> run = RunDir("runs/demo/synthetic/soft/seed_0")   # doctest: +SKIP
        >>> results = run.results()                           # doctest: +SKIP
        >>> results.per_image.groupby("class_name")["ace"].mean()  # doctest: +SKIP
        >>> RunDir("runs/demo/synthetic/soft/seed_0").bins_path.name
        'bins.npz'

    Taught in notebooks/03_training_with_calibration_losses and 08_exploring_reliability.
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
        """Write ``config.json`` (atomically, keys sorted) with the run's identity, ``run_id``.

        Args:
            config: everything needed to reproduce the run (JSON-serialisable; other values are
                written as their ``str``).
        """
        content = json.loads(json.dumps(config, default=str))
        content["run_id"] = run_identity(content)
        text = json.dumps(content, indent=2, sort_keys=True)
        atomic_write(self.config_path, lambda p: p.write_text(text + "\n"))

    @property
    def run_id(self) -> str:
        """The run's identity (:func:`~calibtut.runs.files.run_identity`), checked against
        ``config.json``'s content: every other file of the run must carry the same.

        Raises:
            FileNotFoundError: no ``config.json``.
            ValueError: ``config.json`` has no ``run_id`` or was changed after the run was made.
        """
        recorded = self.config
        if "run_id" not in recorded:
            raise ValueError(
                f"{self.config_path} has no run_id (a run of calibtut 0.1): train it again "
                "(--overwrite)"
            )
        if run_identity(recorded) != recorded["run_id"]:
            raise ValueError(
                f"{self.config_path} was changed after the run was made (its content no longer "
                f"matches its run_id {recorded['run_id']}): restore it, or train again "
                "(--overwrite)"
            )
        return str(recorded["run_id"])

    # history and checkpoints -------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        """The training history: ``history.csv``, one row per epoch.

        Returns:
            The table (losses, validation Dice/ECE/ACE/MCE, time per epoch).

        Raises:
            FileNotFoundError: training has not written it yet.
        """
        self._require(self.history_path, "history.csv (written during training)")
        return pd.read_csv(self.history_path)

    def write_history(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write ``history.csv`` (atomically), replacing what was there.

        Args:
            rows: one mapping of column to value per epoch, in order.
        """
        frame = pd.DataFrame(list(rows))
        atomic_write(self.history_path, lambda p: frame.to_csv(p, index=False))

    def checkpoint(self) -> dict[str, Any]:
        """The resumable training state (:func:`load_checkpoint`).

        Returns:
            The state dict (model, optimiser, scheduler, scaler, epoch, ...).

        Raises:
            FileNotFoundError: no ``checkpoint.pt``.
            ValueError: the file is damaged, not a calibtut checkpoint, or another run's.
        """
        return self._own(self.checkpoint_path, load_checkpoint(self.checkpoint_path))

    def best(self) -> dict[str, Any]:
        """The best validation weights, what evaluation uses (:func:`load_checkpoint`).

        Returns:
            The state dict of ``best.pt``.

        Raises:
            FileNotFoundError: no ``best.pt``.
            ValueError: the file is damaged, not a calibtut checkpoint, or another run's.
        """
        return self._own(self.best_path, load_checkpoint(self.best_path))

    def _own(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        if state.get("run_id") != self.run_id:
            raise ValueError(
                f"{path} belongs to another run (run_id {state.get('run_id')}, while "
                f"{self.config_path} is run {self.run_id}): it was copied in or left over; "
                "train again (--overwrite)"
            )
        return state

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint.pt`` (atomically).

        Args:
            state: the resumable training state (``model`` and ``dataset`` entries among them);
                the run's ``run_id`` is added.
        """
        state = {**state, "run_id": self.run_id}
        atomic_write(self.checkpoint_path, lambda p: torch.save(state, p))

    def write_best(self, state: dict[str, Any]) -> None:
        """Write ``best.pt`` (atomically).

        Args:
            state: the best validation weights and what evaluation needs to rebuild the model;
                the run's ``run_id`` is added.
        """
        state = {**state, "run_id": self.run_id}
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
        """Remove the run's files (results first, so it never looks evaluated while half-deleted),
        and what killed writes left behind."""
        for path in (self.per_image_path, self.bins_path, self.history_path, self.checkpoint_path):
            path.unlink(missing_ok=True)
        self.best_path.unlink(missing_ok=True)
        self.config_path.unlink(missing_ok=True)
        if self.predictions_dir.is_dir():
            shutil.rmtree(self.predictions_dir)
        self.remove_orphans()

    def remove_orphans(self) -> list[Path]:
        """Remove the temporary files of writes a kill interrupted (only under :meth:`lock`).

        Returns:
            The files removed.
        """
        return remove_orphans(self.path) + remove_orphans(self.predictions_dir)

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process while it trains or evaluates it.

        The lock is a file, ``.lock``, created exclusively and holding the owner's pid and host;
        a lock whose process is gone (on this host) is stale and taken over. The lock is
        re-entrant within a process (evaluation inside training).

        Returns:
            A context manager holding the lock while its block runs (it yields nothing).

        Raises:
            RunLockedError: another live process holds the run, named in the message.

        Example:
            >>> with RunDir("runs/x/baseline/seed_0").lock():   # doctest: +SKIP
            ...     ...
        """
        key = self.path.resolve()
        if key in _HELD:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.ctime()}
        while True:
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self._lock_is_stale():
                    self.lock_path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(self._locked_message()) from None
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            break
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            self.lock_path.unlink(missing_ok=True)

    def _lock_owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _lock_is_stale(self) -> bool:
        owner = self._lock_owner()
        if owner is None:  # being written this instant, or its writer was killed doing so
            try:
                return time.time() - self.lock_path.stat().st_mtime > _UNWRITTEN_LOCK_S
            except FileNotFoundError:
                return True
        if owner.get("host") != socket.gethostname():
            return False  # another machine's process: only its owner can tell
        try:
            pid = int(owner["pid"])
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return _is_zombie(pid)  # killed, not yet reaped by its parent: gone all the same

    def _locked_message(self) -> str:
        owner = self._lock_owner() or {}
        who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return (
            f"{self.path} is in use by {who} (since {owner.get('since', '?')}): wait for it to "
            f"finish, or delete {self.lock_path} if that process is gone"
        )

    # results ---------------------------------------------------------------------------
    def results(self) -> RunResults:
        """The test results (bins, ids, classes and ``per_image.csv``), read once and cached.

        Reading again after the files change (a re-evaluation) reloads them.

        Returns:
            :class:`RunResults`, shared by every reader (treat it as read-only).

        Raises:
            FileNotFoundError: the run is not evaluated.
            ValueError: the files are damaged or do not belong together.
        """
        for path, what in ((self.bins_path, "bins.npz"), (self.per_image_path, "per_image.csv")):
            self._require(path, f"{what} (written by evaluation)")
        stamps = tuple(
            (p.stat().st_mtime_ns, p.stat().st_size) for p in (self.bins_path, self.per_image_path)
        )
        return read_results(str(self.path.resolve()), stamps)

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
            "run_id": np.asarray(self.run_id),
        }
        if results.draws is not None:
            arrays["floor_target_sums"] = results.draws.target_sums.detach().float().cpu().numpy()
        self.per_image_path.unlink(missing_ok=True)
        atomic_write(self.bins_path, lambda p: save_npz(p, arrays))
        atomic_write(self.per_image_path, lambda p: frame.to_csv(p, index=False))

    # predictions (what the overlay figures show) ------------------------------------------
    def prediction_ids(self) -> list[str]:
        """Ids of the images whose predictions were saved (sorted).

        Returns:
            The ids (empty when no prediction was saved).
        """
        if not self.predictions_dir.is_dir():
            return []
        return sorted(p.stem for p in self.predictions_dir.glob("*.npz"))

    def write_prediction(
        self,
        image_id: str,
        image: np.ndarray,
        label: np.ndarray,
        prediction: np.ndarray,
        probabilities: np.ndarray,
    ) -> None:
        """Save one test image's overlay data, compactly: the image as float16, label and
        prediction as uint8, and every output channel's probability quantised to uint8 (steps of
        1/255, :data:`PROBABILITY_LEVELS`; about 0.5 MB for a 384 x 384 scan of 4 channels).

        Softmax datasets: ``label`` and ``prediction`` are class-index maps ``(*spatial)`` and
        ``probabilities`` the softmax of every output channel ``(C, *spatial)``. Sigmoid
        (multi-label) datasets: all three are per channel ``(C, *spatial)`` and ``probabilities``
        is each region's probability.

        Args:
            image_id: the test image (the file is ``predictions/<image_id>.npz``).
            image: the first input channel ``(*spatial)``.
            label: the ground truth (class indices or per-channel regions).
            prediction: the predicted segmentation, the shape of ``label``.
            probabilities: each output channel's probability ``(C, *spatial)``, in [0, 1].

        Raises:
            ValueError: the arrays' shapes do not fit together.
        """
        spatial = np.shape(image)
        if np.shape(probabilities)[1:] != spatial or np.ndim(probabilities) != len(spatial) + 1:
            raise ValueError(
                f"probabilities {np.shape(probabilities)} must be (channels, *{spatial}), one "
                "map per output channel of the image."
            )
        if np.shape(label) != np.shape(prediction) or np.shape(label) not in (
            spatial,
            np.shape(probabilities),
        ):
            raise ValueError(
                f"label {np.shape(label)} and prediction {np.shape(prediction)} must share one "
                f"shape: the image's {spatial} (class indices) or the probabilities' "
                f"{np.shape(probabilities)} (regions)."
            )
        levels = np.rint(np.clip(probabilities, 0.0, 1.0) * PROBABILITY_LEVELS)
        arrays = {
            "image": np.asarray(image, dtype=np.float16),
            "label": np.asarray(label, dtype=np.uint8),
            "prediction": np.asarray(prediction, dtype=np.uint8),
            "probabilities": levels.astype(np.uint8),
        }
        atomic_write(self.predictions_dir / f"{image_id}.npz", lambda p: save_npz(p, arrays))

    def prediction(self, image_id: str) -> dict[str, np.ndarray]:
        """One image's saved overlay arrays (see :meth:`write_prediction`).

        Args:
            image_id: the test image.

        Returns:
            ``{"image", "label", "prediction", "confidence", "probabilities"}``: ``probabilities``
            (float32) as saved, ``confidence`` the probability behind each prediction (softmax:
            the largest channel's; sigmoid: each region's). A run evaluated before calibtut saved
            every channel's probability has its ``confidence`` alone, no ``probabilities``.

        Raises:
            FileNotFoundError: no prediction was saved for ``image_id``.
            ValueError: the file is damaged.
        """
        path = self.predictions_dir / f"{image_id}.npz"
        self._require(path, f"saved prediction for image {image_id!r}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("image", "label", "prediction")}
                if "probabilities" not in z.files:
                    return {**arrays, "confidence": z["confidence"]}
                levels = z["probabilities"]
        except Exception as err:  # BadZipFile, zlib.error, a missing array, ...
            raise ValueError(
                f"{path} is not a readable prediction ({type(err).__name__}: {err}): evaluate "
                "the run again"
            ) from err
        probabilities = levels.astype(np.float32) / PROBABILITY_LEVELS
        regions = arrays["label"].shape == probabilities.shape
        confidence = probabilities if regions else probabilities.max(0)
        return {**arrays, "confidence": confidence, "probabilities": probabilities}

    def _require(self, path: Path, what: str) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {what}: {path} is missing.")


_ABSENT = object()


def _is_zombie(pid: int) -> bool:
    """A process that has ended but whose parent has not reaped it (Linux; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def find_runs(root: str | Path) -> list[RunDir]:
    """All evaluated run directories below ``root``, in a stable (sorted) order.

    Args:
        root: a folder holding runs at any depth.

    Returns:
        The evaluated runs (those not yet evaluated are left out).

    Raises:
        FileNotFoundError: ``root`` is not a folder.

    Taught in notebooks/08_exploring_reliability.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No run root at {root}.")
    runs = [RunDir(p.parent) for p in sorted(root.rglob("config.json"))]
    skipped = [str(r.path.relative_to(root)) for r in runs if not r.is_evaluated]
    if skipped:
        warnings.warn(
            f"left out {len(skipped)} run(s) under {root} that are not evaluated (still training, "
            f"or interrupted): {', '.join(skipped)}",
            SkippedRunsWarning,
            stacklevel=2,
        )
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

    Example:
        >>> runs = resolve_runs("runs/demo")                    # doctest: +SKIP
        >>> [run.name for run in runs]                          # doctest: +SKIP
        ['synthetic/baseline/seed_0', 'synthetic/hard/seed_0', 'synthetic/soft/seed_0']
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
    named: dict[str, RunDir] = {}
    for run in runs.values():
        other = named.setdefault(run.name, run)
        if other is not run:
            kind = "copies of one run" if other.run_id == run.run_id else "two different runs"
            raise ValueError(
                f"{kind} of {run.name}: {other.path} and {run.path}; pass only one (tables and "
                "figures average runs by dataset, loss and seed)"
            )
    return list(runs.values())
