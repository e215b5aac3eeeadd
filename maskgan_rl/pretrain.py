"""MLE pretraining: the language model, then MaskMLE initialised from it (steps 1-2 of the paper's pipeline).

MaskMLE is the generator trained with teacher-forced cross-entropy on masked positions only. Both
stages report validation perplexity (the LM's over all targets, MaskMLE's over masked targets) and
write an atomic checkpoint that records the config and the vocabulary. A stage whose checkpoint
already exists for the same model and vocabulary is loaded instead of retrained, or continued when it has
fewer steps than asked (`maskgan_rl.fitting`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskgan_rl import storage
from maskgan_rl.config import Config
from maskgan_rl.dataset import PreparedData, WindowDataset
from maskgan_rl.fitting import lm_loss, load_or_train, mle_loss
from maskgan_rl.loading import resolve_device
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.storage import Location
from maskgan_rl.tracking import Tracker


@dataclass
class PretrainResult:
    lm_path: Location  # a Path, or a str when run_dir is a storage URI
    mle_path: Location
    lm_valid_perplexity: float
    mle_valid_perplexity: float


def pretrain(cfg: Config, data: PreparedData, tracker: Tracker) -> PretrainResult:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg)
    train, valid = WindowDataset(data.train_path), WindowDataset(data.valid_path)
    folder = storage.join(cfg.run_dir, "checkpoints")
    vocab_size = len(data.vocab)

    lm = LanguageModel(vocab_size, cfg.model).to(device)
    lm_path = storage.join(folder, "lm.pt")
    lm_ppl = load_or_train(
        "lm", "language_model", lm, lm_path, cfg, data.vocab, tracker,
        steps=cfg.pretrain.lm_steps,
        batch_loss=lambda windows, rng: lm_loss(lm, windows),
        train=train, valid=valid, device=device,
    )

    generator = Generator(vocab_size, cfg.model).to(device)
    generator.init_from_language_model(lm)
    mle_path = storage.join(folder, "mle.pt")
    mle_ppl = load_or_train(
        "mle", "generator", generator, mle_path, cfg, data.vocab, tracker,
        steps=cfg.pretrain.mle_steps,
        batch_loss=lambda windows, rng: mle_loss(generator, windows, cfg, rng),
        train=train, valid=valid, device=device,
    )
    return PretrainResult(lm_path, mle_path, lm_ppl, mle_ppl)
