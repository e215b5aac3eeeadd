"""MaskGAN's actor-critic maths, kept free of RLlib so every formula can be checked by hand.

Only masked targets (`present == False`) are actions: they alone carry rewards, returns, values,
advantages and loss terms; present targets are copied text and get 0 everywhere. Discounting counts
target POSITIONS, as the authors' code does: a reward three positions later is worth gamma^3 even
when present targets lie between, so the two forms below (a [B, T] batch of windows, or one
episode's steps with their positions) give the same numbers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor


def masked_returns(rewards: Tensor, present: Tensor, gamma: float) -> Tensor:
    """R_t = sum_{s >= t} missing_s * gamma^(s - t) * r_s at masked t, 0 at present t. [B, T] -> [B, T].

    Rewards at present positions are ignored (whatever they hold), so callers may pass dense arrays.
    """
    missing = ~present
    rewards = torch.where(missing, rewards, 0.0)
    running = torch.zeros_like(rewards[:, 0])
    returns = []
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns.append(running)
    return torch.where(missing, torch.stack(returns[::-1], dim=1), 0.0)


def episode_returns(rewards: np.ndarray, positions: np.ndarray, gamma: float) -> np.ndarray:
    """The same returns for one episode's steps: step s placed target `positions[s]` and earned `rewards[s]`.

    Consecutive steps are `positions[s+1] - positions[s]` targets apart, hence that power of gamma.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    positions = np.asarray(positions)
    returns = np.empty_like(rewards)
    running = 0.0
    for s in reversed(range(len(rewards))):
        if s + 1 < len(rewards):
            running *= gamma ** int(positions[s + 1] - positions[s])
        running += rewards[s]
        returns[s] = running
    return returns


def clipped_advantages(returns: Tensor, values: Tensor, present: Tensor, clip: float) -> Tensor:
    """A_t = clip(R_t - V_t, -clip, clip) at masked t, 0 at present t (the paper clips at 5)."""
    return torch.where(~present, (returns - values).clamp(-clip, clip), 0.0)


def critic_loss(values: Tensor, returns: Tensor, present: Tensor) -> Tensor:
    """Mean squared error V_t vs R_t over the batch's masked positions; returns are fixed targets."""
    return _masked_mean((values - returns.detach()) ** 2, present)


def reinforce_loss(logp: Tensor, advantages: Tensor, present: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """-(sum over masked t of w_t * logp_t * stopgrad(A_t)) / number masked: minimising it is REINFORCE.

    `weights` w_t: importance weights of tokens sampled off-policy (`importance_weights`); None = 1.
    The advantage is detached so the policy gradient never flows into the critic, and `torch.where`
    (not a product with the mask) keeps any value at present positions, even -inf, out of both passes.
    """
    terms = logp * advantages.detach()
    return -_masked_mean(terms if weights is None else weights.detach() * terms, present)


def importance_weights(logp_policy: Tensor, logp_behaviour: Tensor, clip: float) -> Tensor:
    """w = min(pi(a) / mu(a), clip), detached: truncated importance sampling (gan.importance_weight_clip).

    A token a sampled from a behaviour policy mu (cold exploration) and weighted by pi(a) / mu(a) makes
    the policy-gradient term of its step unbiased for pi's: E_mu[w grad log pi(a) A] = E_pi[grad log pi(a) A].
    This holds per token, given the prefix and the return that followed; the prefix itself was drawn
    from mu, and so were the later tokens the return sums over (docs/levers.md). Truncating at `clip`
    bounds the variance and biases the rare tokens' terms down; tokens mu cannot sample (outside its
    nucleus) get no term at all.
    """
    return torch.exp(logp_policy.detach() - logp_behaviour.detach()).clamp(max=clip)


def _masked_mean(x: Tensor, present: Tensor) -> Tensor:
    """Mean of `x` over masked positions of the whole batch (0 when nothing is masked)."""
    missing = ~present
    return torch.where(missing, x, 0.0).sum() / missing.sum().clamp(min=1)
