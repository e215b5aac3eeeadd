"""Checkpoints that are written atomically and read back as tensors only.

A checkpoint is one `torch.save` file holding plain data: tensors, numbers, strings, lists and dicts
(the config as a dict, the vocabulary as a token list, state dicts). Loading uses
`torch.load(weights_only=True)`, so a checkpoint from an untrusted source cannot run code.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target:
a crash mid-write leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from maskgan_rl.errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of a .pt file written by maskgan")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it contains pickled Python objects, which are never loaded (tensors and plain data only)"
        raise CheckpointError(f"checkpoint {path} cannot be read: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a maskgan-rl checkpoint (format {FORMAT_VERSION}): was it written by `maskgan`?")
    return payload


def latest_good_checkpoint(folder: str | os.PathLike, pattern: str = "*.pt") -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in `folder`; unreadable newer ones are skipped with a warning."""
    candidates = sorted(Path(folder).glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in candidates:
        try:
            return candidate, load_checkpoint(candidate)
        except CheckpointError as err:
            warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
    return None


def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk, or a power cut can lose the new file's name.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
