"""Trained models read back from checkpoints, for every stage that uses one.

`load_generator` and `load_infiller` build the network a checkpoint (see `maskgan_rl.checkpoint`
for the format) describes from its own config and vocabulary, check the vocabulary against the
data's when one is given, and raise a one-line `CheckpointError` for a file that does not fit.
In-filling, serving, evaluation and training import this module, never the training stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.config import Config, config_from_dict
from maskgan_rl.errors import CheckpointError, ConfigError
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.vocab import Vocab


def resolve_device(cfg: Config) -> torch.device:
    """The torch device `cfg.device` names, `auto` being a GPU when there is one."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but torch finds no CUDA GPU here: use device=auto (GPU when there is one) or device=cpu")
    return torch.device(cfg.device)


def load_generator(path: str | Path, vocab: Optional[Vocab] = None, device: str | torch.device = "cpu") -> tuple[Generator, Vocab, dict]:
    """A generator from a MaskMLE or MaskGAN checkpoint; checks it matches `vocab` when one is given."""
    checkpoint = load_checkpoint(path, require=("config", "vocab", "models"))
    generator, stored = _model_from(checkpoint, path, vocab, "generator", Generator, "a MaskMLE or MaskGAN checkpoint")
    return generator.to(device).eval(), stored, checkpoint


def load_infiller(
    path: str | Path, vocab: Optional[Vocab] = None, device: str | torch.device = "cpu"
) -> tuple[Generator | LanguageModel, Vocab, dict]:
    """What fills blanks in a checkpoint: its generator, or for an LM checkpoint (`lm.pt`) the language
    model, which fills them from the left context alone with the generator's interface."""
    checkpoint = load_checkpoint(path, require=("config", "vocab", "models"))
    if checkpoint.get("kind") == "lm":
        model, stored = _model_from(checkpoint, path, vocab, "language_model", LanguageModel, "an LM checkpoint (lm.pt)")
    else:
        model, stored = _model_from(checkpoint, path, vocab, "generator", Generator, "a MaskMLE or MaskGAN checkpoint")
    return model.to(device).eval(), stored, checkpoint


def stored_config(checkpoint: dict, path: str | Path) -> Config:
    """The config `checkpoint` (read from `path`) was written with, as this version reads it."""
    try:
        return config_from_dict(checkpoint["config"])
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {path}: {err}: it comes from another version of maskgan-rl, or is damaged") from None


def _model_from(
    checkpoint: dict, path: str | Path, vocab: Optional[Vocab], key: str, model_class: type, wanted: str
) -> tuple[torch.nn.Module, Vocab]:
    stored = Vocab(checkpoint["vocab"])
    if vocab is not None and stored.tokens != vocab.tokens:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different vocabulary ({len(stored)} tokens, fingerprint "
            f"{stored.fingerprint()[:12]}) than the data ({len(vocab)} tokens, {vocab.fingerprint()[:12]}): "
            "prepare the data with the checkpoint's config or use a matching checkpoint"
        )
    cfg = stored_config(checkpoint, path)
    models = checkpoint["models"] if isinstance(checkpoint["models"], dict) else {}
    state = models.get(key)
    if state is None:
        raise CheckpointError(f"checkpoint {path} holds no {key.replace('_', ' ')} (it has {', '.join(models) or 'none'}): pass {wanted}")
    model = model_class(len(stored), cfg.model)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:  # weights of another shape, or not a state dict
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = lines[1] if len(lines) > 1 else lines[0]  # past torch's "Error(s) in loading state_dict" header
        raise CheckpointError(f"checkpoint {path}: its {key.replace('_', ' ')} weights do not fit its own config ({reason}): the file is damaged") from None
    return model, stored
