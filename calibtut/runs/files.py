"""Files a run directory is made of: written atomically, read without unpickling code."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "save_npz",
    "load_checkpoint",
    "run_identity",
    "remove_orphans",
    "check_writable_folder",
]


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions of a plainly created one (``0o666`` less the umask), so a
    collaborator can read a shared run; a failed ``write`` leaves nothing behind, and a reader
    never sees a half-written file.

    Args:
        path: the file to write.
        write: writes the content to the path it is given.

    Raises:
        Exception: whatever ``write`` raises (the temporary file is removed first).

    Example:
        >>> atomic_write(Path("runs/x/config.json"), lambda p: p.write_text("{}"))  # doctest: +SKIP
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


def check_writable_folder(path: str | Path, what: str) -> None:
    """Refuse, before anything is written, a folder that cannot be made or written to.

    Args:
        path: the folder (it need not exist yet).
        what: how the user gave it, for the message (e.g. ``"--run-root"``).

    Raises:
        ValueError: ``path`` or one of its parents is a file, or the nearest existing folder is
            not writable.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable ({existing} is read-only to you)")


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files a killed :func:`atomic_write` left in ``folder``.

    Only safe while no other process writes there (a run directory under its lock).

    Args:
        folder: a folder written by :func:`atomic_write`.

    Returns:
        The files removed.
    """
    orphans = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def run_identity(config: Mapping[str, Any]) -> str:
    """A run's identity: a hash of its ``config.json`` (less the ``run_id`` entry itself).

    Every artefact of a run records it, and reading one checks it, so a ``best.pt`` copied in
    from another run, or a ``config.json`` edited after training, is refused rather than used.

    Args:
        config: the run's config (JSON-serialisable; other values count as their ``str``).

    Returns:
        16 hexadecimal digits.

    Example:
        >>> run_identity({"loss": "soft", "seed": 0}) == run_identity({"seed": 0, "loss": "soft"})
        True
    """
    content = {k: v for k, v in config.items() if k != "run_id"}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` into ``path`` itself (it would add ``.npz`` to a bare name).

    Args:
        path: the file to write.
        arrays: the arrays, by name.
    """
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of a run (``checkpoint.pt`` or ``best.pt``), read without unpickling code.

    Args:
        path: the checkpoint file.

    Returns:
        The state dict, on the CPU (``model`` and ``dataset`` entries among others).

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
