"""The critic (baseline) of the actor-critic generator update.

As in the authors' code, an LSTM from zero state over the filled prefix (no encoder, no attention)
and a linear head: value t estimates the discounted return from target t on, having seen
filled[:t+1]. Unlike it, the LSTM is the critic's own (started from the generator's decoder) and
learns with the generator, not a head on D's decoder: the value function is part of the RLlib policy
module on the learner, while D lives in its own actor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.layers import Embedding, LSTMStack


class Critic(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.embedding = Embedding(vocab_size, cfg.embed)
        self.lstm = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob)
        self.head = nn.Linear(cfg.hidden, 1)

    def forward(self, filled: Tensor) -> Tensor:
        """filled [B, T+1] -> values [B, T]."""
        return self.head(self.lstm(self.embedding(filled[:, :-1]))[0]).squeeze(-1)

    @torch.no_grad()
    def init_from_generator(self, gen: Generator) -> None:
        """Start from the generator decoder's embedding and LSTM, which already read filled prefixes."""
        self.embedding.weight.copy_(gen.seq2seq.embedding.weight)
        self.lstm.load_state_dict(gen.seq2seq.decoder.state_dict())
