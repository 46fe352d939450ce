"""Files a run directory is made of: written atomically, read without unpickling code."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_write", "save_npz", "load_checkpoint"]


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
