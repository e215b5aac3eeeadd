"""Which targets of a window are observed (`present`) and which the generator must fill in.

Masks are drawn with a numpy Generator (one implementation for the environments, the trainers and
the tests; wrap with `torch.from_numpy` where a tensor is needed). `present` is bool [B, T] over
the targets w[1:T+1]: True = observed, False = masked.

The in-filling observation (the environment's, the policy's input) is one int64 vector
[context (T+1) | filled (T+1) | position (1)]: `pack_observation` builds it, `unpack_observation`
splits it. Flat rather than a dict, because RLlib handles a flat Box per step without walking a
nested structure for every sub-environment (the per-step cost that dominates at small sizes).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np
import torch

from maskgan_rl.config import MaskConfig

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def num_masked(cfg: MaskConfig, seq_len: int) -> int:
    """Masked targets per window, the same for every window of a strategy.

    The paper's code masks int((1 - p) * T) - 1 targets in its contiguous block (T=20, p=0.5 -> 9);
    blanks masks the same number, split into several blocks, so the strategies are comparable.
    Random masks (1 - p) * T, rounded, at least 1.
    """
    if cfg.strategy == "random":
        return min(seq_len, max(1, round((1.0 - cfg.present_rate) * seq_len)))
    return max(1, int((1.0 - cfg.present_rate) * seq_len) - 1)


def present_rate_at(cfg: MaskConfig, iteration: int) -> float:
    """The present rate of adversarial iteration `iteration` (0 = before the first) under the mask-rate
    curriculum: linear from cfg.curriculum_start_present_rate at 0 to cfg.present_rate at
    cfg.curriculum_iterations, then constant; cfg.present_rate throughout without a curriculum."""
    if iteration >= cfg.curriculum_iterations:
        return cfg.present_rate
    progress = iteration / cfg.curriculum_iterations
    return (1.0 - progress) * cfg.curriculum_start_present_rate + progress * cfg.present_rate


def mask_at(cfg: MaskConfig, iteration: int) -> MaskConfig:
    """`cfg` with the present rate of adversarial iteration `iteration` (see `present_rate_at`)."""
    return dataclasses.replace(cfg, present_rate=present_rate_at(cfg, iteration))


def make_present(batch: int, seq_len: int, cfg: MaskConfig, rng: np.random.Generator) -> np.ndarray:
    """A fresh mask bool [batch, seq_len] for `cfg.strategy` (random | contiguous | blanks)."""
    masked = num_masked(cfg, seq_len)
    if cfg.strategy == "random":
        # A uniformly random set of `masked` targets. The paper's code flips a coin per target instead,
        # but episodes of varying length would bias RLlib's sampling of a number of finished episodes
        # towards the short ones (sub-environments that finish early start and finish another).
        order = rng.random((batch, seq_len)).argsort(axis=1)
        return order >= masked
    if cfg.strategy == "contiguous":
        # One block; it never starts at target 0, so the first target is always real.
        start = rng.integers(1, seq_len - masked + 1, size=(batch, 1))
        positions = np.arange(seq_len)
        return ~((positions >= start) & (positions < start + masked))
    if cfg.strategy == "blanks":
        return np.stack([_blanks_row(seq_len, masked, cfg.num_blanks, rng) for _ in range(batch)])
    raise ValueError(f"unknown mask strategy {cfg.strategy!r}")  # config validation rules this out


def mask_context(windows: Array, present: Array, missing_id: int) -> Array:
    """The encoder's view [B, T+1]: w[0], then each target where present, else `missing_id`.

    Works on numpy arrays and torch tensors alike (both arguments of the same kind).
    """
    context = windows.copy() if isinstance(windows, np.ndarray) else windows.clone()
    context[:, 1:][~present] = missing_id
    return context


def pack_observation(context: Array, filled: Array, position: Array) -> Array:
    """The observation [..., 2T+3] of context [..., T+1], filled [..., T+1] and position [...] (numpy or torch)."""
    if isinstance(context, np.ndarray):
        return np.concatenate([context, filled, position[..., None]], axis=-1)
    return torch.cat([context, filled, position[..., None]], dim=-1)


def unpack_observation(observation: Array) -> tuple[Array, Array, Array]:
    """(context [..., T+1], filled [..., T+1], position [...]) of observations [..., 2T+3], as views."""
    width = (observation.shape[-1] - 1) // 2
    return observation[..., :width], observation[..., width : 2 * width], observation[..., -1]


def _blanks_row(seq_len: int, masked: int, num_blanks: int, rng: np.random.Generator) -> np.ndarray:
    """`masked` targets in up to `num_blanks` blocks separated by present targets, target 0 present.

    Block lengths and the gaps around them are uniform random compositions, so every layout
    allowed by the constraints is equally likely. Fewer blocks are used when they cannot fit.
    """
    present_count = seq_len - masked
    blocks = min(num_blanks, masked, present_count)  # each block >= 1 and each needs a present target before it
    lengths = _composition(masked, blocks, rng)
    # blocks + 1 gaps: before each block at least one present target, after the last any number
    # (>= 0, hence the +1 borrowed and given back).
    gaps = _composition(present_count + 1, blocks + 1, rng)
    gaps[-1] -= 1
    row = np.ones(seq_len, dtype=bool)
    position = 0
    for gap, length in zip(gaps[:-1], lengths):
        position += gap
        row[position : position + length] = False
        position += length
    return row


def _composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`total` split into `parts` positive integers, uniformly over all such splits."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))
