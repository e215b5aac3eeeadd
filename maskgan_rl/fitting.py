"""Train or load a model by maximum likelihood: the supervised fitting loop and its losses.

`load_or_train` fits a model to a per-batch loss with Adam, keeps the weights of the best
validation perplexity and writes an atomic checkpoint that records the config and the vocabulary;
a checkpoint that already exists for the same model and vocabulary is loaded instead, and one trained
for fewer steps than asked is continued from its weights and optimiser state for the missing steps only.
The pretraining stage fits its LM and MaskMLE with it, evaluation its own LMs.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch

from maskgan_rl import storage
from maskgan_rl.checkpoint import load_checkpoint, save_checkpoint
from maskgan_rl.config import Config, to_dict
from maskgan_rl.dataset import WindowDataset
from maskgan_rl.errors import CheckpointError, RunFailure
from maskgan_rl.masking import make_present
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.models.losses import masked_cross_entropy, masked_target_nll
from maskgan_rl.models.optim import adam
from maskgan_rl.models.precision import autocast, describe
from maskgan_rl.progress import Progress
from maskgan_rl.storage import Location
from maskgan_rl.tracking import Tracker
from maskgan_rl.vocab import Vocab

log = logging.getLogger(__name__)


def lm_loss(lm: LanguageModel, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = lm(windows[:, :-1])
    return masked_cross_entropy(logits, windows[:, 1:], torch.ones_like(windows[:, 1:], dtype=torch.bool))


def mle_loss(generator: Generator, windows: torch.Tensor, cfg: Config, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    present = torch.as_tensor(make_present(windows.shape[0], cfg.data.seq_len, cfg.mask, rng), device=windows.device)
    return masked_target_nll(generator, windows, present)


def load_or_train(
    stage: str,
    model_key: str,
    model: torch.nn.Module,
    path: Location,
    cfg: Config,
    vocab: Vocab,
    tracker: Tracker,
    steps: int,
    batch_loss: Callable[[torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
    train: WindowDataset,
    valid: WindowDataset,
    device: torch.device,
) -> float:
    optimizer = adam(model.parameters(), lr=cfg.pretrain.lr)
    # The weights kept are those of the best validation perplexity seen (checked every eval_every
    # steps): a long schedule that starts to overfit cannot hand a worse model to the next stage.
    best = (math.inf, 0, None)  # (perplexity, step, CPU copy of the weights)
    done = 0  # steps already trained, when a shorter checkpoint of this model is continued
    if storage.exists(path):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as err:  # the run's own checkpoint went bad: a runtime failure, not a usage error
            raise RunFailure(f"{err}; delete it to train {stage} again") from None
        done = int(checkpoint.get("steps", 0)) if _same_model(checkpoint, cfg, vocab) else 0
        if done == steps:
            model.load_state_dict(checkpoint["models"][model_key])
            log.info(f"[{stage}] loaded {path} (validation perplexity {checkpoint['metrics']['valid_perplexity']:.2f})")
            return float(checkpoint["metrics"]["valid_perplexity"])
        if 0 < done < steps:
            # More steps than the checkpoint has: train only the missing ones, from its weights and Adam
            # state (checkpoints from before the state was stored restart Adam's moments).
            model.load_state_dict(checkpoint["models"][model_key])
            if "optimizer" in checkpoint:
                optimizer.load_state_dict(checkpoint["optimizer"])
            metrics = checkpoint["metrics"]
            best = (float(metrics["valid_perplexity"]), int(metrics["best_step"]), _cpu_copy(model))
            log.info(f"[{stage}] continuing {path} from step {done} to {steps}")
        else:
            done = 0
            log.info(f"[{stage}] {path} was trained with another model, vocabulary or more steps: retraining")

    # A continued run draws other batches and masks than the first `done` steps did.
    rng = np.random.default_rng([cfg.seed, done] if done else cfg.seed)
    log.info(f"[{stage}] precision: {describe(cfg.resources.precision, device, model)}")
    progress = Progress(stage, total=steps, initial=done)
    evaluate = lambda: validation_perplexity(model, batch_loss, valid, cfg, device)  # noqa: E731
    tokens, started = 0, time.perf_counter()
    for step in range(done + 1, steps + 1):
        model.train()
        windows = torch.as_tensor(train.sample(cfg.pretrain.batch_size, rng), device=device)
        with autocast(cfg.resources.precision, device, model):
            loss, count = batch_loss(windows, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.pretrain.grad_clip)
        optimizer.step()
        tokens += int(count)
        metrics = {"train_loss": loss.item()}
        if step % cfg.pretrain.eval_every == 0 or step == steps:
            metrics["valid_perplexity"] = evaluate()
            metrics["tokens_per_s"] = tokens / (time.perf_counter() - started)
            if metrics["valid_perplexity"] < best[0]:
                best = (metrics["valid_perplexity"], step, _cpu_copy(model))
            tracker.log_metrics({f"{stage}/{k}": v for k, v in metrics.items()}, step=step)
        progress.update(step, force="valid_perplexity" in metrics, **metrics)
    valid_ppl, best_step, best_state = best
    if best_state is None:  # steps=0: the model as it came in is the one kept
        valid_ppl = evaluate()
    else:
        model.load_state_dict(best_state)
    save_checkpoint(path, {
        "kind": stage,
        "config": to_dict(cfg),
        "vocab": vocab.tokens,
        "models": {model_key: model.state_dict()},
        "optimizer": optimizer.state_dict(),  # so that a longer schedule can continue this one
        "steps": steps,
        "metrics": {"valid_perplexity": valid_ppl, "best_step": best_step},
    })
    tracker.log_metrics({f"{stage}/final_valid_perplexity": valid_ppl, f"{stage}/best_step": best_step}, step=steps)
    log.info(f"[{stage}] kept the weights of step {best_step}: validation perplexity {valid_ppl:.2f}; saved {path}")
    return valid_ppl


@torch.no_grad()
def validation_perplexity(
    model: torch.nn.Module,
    batch_loss: Callable[[torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
    valid: WindowDataset,
    cfg: Config,
    device: torch.device,
) -> float:
    """Perplexity on the first `eval_batches` validation batches, with the same masks every time."""
    model.eval()
    rng = np.random.default_rng(cfg.seed + 1)
    total, count = 0.0, 0.0
    batch = cfg.pretrain.batch_size
    for start in range(0, min(len(valid), batch * cfg.pretrain.eval_batches), batch):
        windows = torch.as_tensor(valid.windows[start:start + batch], device=device)
        loss, n = batch_loss(windows, rng)
        total += loss.item() * float(n)
        count += float(n)
    return math.exp(total / max(count, 1.0))


def _same_model(checkpoint: dict, cfg: Config, vocab: Vocab) -> bool:
    return (
        checkpoint.get("vocab") == vocab.tokens
        and checkpoint.get("config", {}).get("model") == to_dict(cfg)["model"]
    )


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
