"""The critic (baseline) of the actor-critic generator update, in one of two designs (gan.critic).

- "lstm": an LSTM from zero state over the filled prefix (no encoder, no attention) and a linear
  head, as in the authors' code: value t estimates the discounted return from target t on, having
  seen filled[:t+1]. Unlike it, the LSTM is the critic's own (started from the generator's decoder)
  and learns with the generator, not a head on D's decoder: the value function is part of the
  RLlib policy module on the learner, while D lives in its own actor.
- "head" / "head_stop_gradient": a linear value head on the generator's decoder features at the
  same position (which have also read the masked context). It costs no LSTM of its own; with
  "head" the value loss also trains the generator's encoder and decoder, with "head_stop_gradient"
  only the head learns. The comparison behind the default: benchmarks/README.md, "The critic".
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.layers import Embedding, LSTMStack, OutputLinear

class Critic(nn.Module):
    """gan.critic="lstm": the critic's own LSTM over the filled prefix."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.embedding = Embedding(vocab_size, cfg.embed)
        self.lstm = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob)
        self.head = OutputLinear(cfg.hidden, 1)

    def forward(self, filled: Tensor) -> Tensor:
        """filled [B, T+1] -> values [B, T]."""
        return self.head(self.lstm(self.embedding(filled[:, :-1]))[0]).squeeze(-1)

    @torch.no_grad()
    def init_from_generator(self, gen: Generator) -> None:
        """Start from the generator decoder's embedding and LSTM, which already read filled prefixes."""
        self.embedding.weight.copy_(gen.seq2seq.embedding.weight)
        self.lstm.load_state_dict(gen.seq2seq.decoder.state_dict())


class ValueHead(nn.Module):
    """gan.critic="head" / "head_stop_gradient": values from the generator's decoder features."""

    def __init__(self, hidden: int, stop_gradient: bool):
        super().__init__()
        self.head = OutputLinear(hidden, 1)
        self.stop_gradient = stop_gradient

    def forward(self, features: Tensor) -> Tensor:
        """Generator decoder features [..., H] (`Generator.features`) -> values [...]."""
        return self.head(features.detach() if self.stop_gradient else features).squeeze(-1)


AnyCritic = Union[Critic, ValueHead]


def make_critic(kind: str, vocab_size: int, cfg: ModelConfig, generator: Generator) -> AnyCritic:
    """The gan.critic design (one of CRITIC_NAMES), started from `generator` where it has something to start from."""
    if kind == "lstm":
        critic = Critic(vocab_size, cfg)
        critic.init_from_generator(generator)
        return critic
    return ValueHead(cfg.hidden, stop_gradient=kind == "head_stop_gradient")
