"""Checkpoints that are written atomically and read back as tensors only.

A checkpoint is one `torch.save` file holding plain data: tensors, numbers, strings, lists and dicts
(the config as a dict, the vocabulary as a token list, state dicts). Loading uses
`torch.load(weights_only=True)`, so a checkpoint from an untrusted source cannot run code.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target:
a crash mid-write leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from maskgan_rl.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1


def writable_dir(path: str | os.PathLike, setting: str) -> Path:
    """`path`, created if need be; a ConfigError naming `setting` when it cannot be written to."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise ConfigError(f"{setting}: cannot write to {path} ({err.strerror}): choose a folder you can write to") from None
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # Not mkstemp: its files are owner-only, where a checkpoint gets the mode any new file gets (umask).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", require: Sequence[str] = ()
) -> dict[str, Any]:
    """The payload of a checkpoint written by `save_checkpoint`, which must hold the keys `require`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of a .pt file written by maskgan")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {_unreadable(err)}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a maskgan-rl checkpoint (format {FORMAT_VERSION}): was it written by `maskgan`?")
    missing = [key for key in require if key not in payload]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} holds no {', '.join(missing)} (it has {', '.join(sorted(payload))}): "
            "pass a MaskMLE or MaskGAN checkpoint (checkpoints/mle.pt, gan-*.pt or maskgan.pt)"
        )
    return payload


def _unreadable(err: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found:  # a pickle that would build (or call) a Python object: refused before it runs
        return (
            f"it contains pickled Python objects ({found.group(1)}), which are never loaded "
            "(tensors and plain data only): use a checkpoint written by maskgan, from a source you trust"
        )
    return "not a PyTorch checkpoint, or a truncated or corrupt one"


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
