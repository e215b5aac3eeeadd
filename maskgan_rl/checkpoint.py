"""Checkpoints that are written atomically and read back as tensors only.

A checkpoint is one `torch.save` file holding plain data: tensors, numbers, strings, lists and dicts
(the config as a dict, the vocabulary as a token list, state dicts). Loading uses
`torch.load(weights_only=True)`, so a checkpoint from an untrusted source cannot run code.

Writes are atomic (maskgan_rl.storage): locally a temporary file in the same folder, fsynced, then
renamed over the target; on an object store one upload of the whole file. A crash mid-write leaves
the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from maskgan_rl import storage
from maskgan_rl.errors import CheckpointError
from maskgan_rl.storage import Location

FORMAT_VERSION = 1


def save_checkpoint(where: str | os.PathLike, payload: dict[str, Any]) -> Location:
    """Write `payload` atomically to `where` (a local path or a storage URI, see maskgan_rl.storage)."""
    where = storage.location(where)
    payload = {"format_version": FORMAT_VERSION, **payload}
    if isinstance(where, Path):  # straight to the temporary file: no second copy in memory
        with storage.replacing(where) as tmp:
            torch.save(payload, tmp)
        return where
    buffer = io.BytesIO()  # whole before the upload starts: a failed save uploads nothing
    torch.save(payload, buffer)
    return storage.write_bytes(where, buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", require: Sequence[str] = ()
) -> dict[str, Any]:
    """The payload of a checkpoint written by `save_checkpoint` (a local path or a storage URI),
    which must hold the keys `require`."""
    path = storage.location(path)
    if not storage.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of a .pt file written by maskgan")
    source = path if isinstance(path, Path) else io.BytesIO(storage.read_bytes(path))
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
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


def latest_good_checkpoint(folder: str | os.PathLike, pattern: str = "*.pt") -> tuple[Location, dict[str, Any]] | None:
    """The newest readable checkpoint in `folder`; unreadable newer ones are skipped with a warning."""
    # Object stores keep whole seconds: within one, the name (gan-<iteration>.pt) decides.
    candidates = sorted(storage.listdir(folder, pattern), key=lambda entry: (entry.mtime, entry.name), reverse=True)
    for candidate in candidates:
        try:
            return candidate.location, load_checkpoint(candidate.location)
        except CheckpointError as err:
            warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
    return None
