"""The variational-dropout LSTM language model pretrained before MaskMLE (the paper's step 1).

Its embedding, LSTM and softmax have the generator's sizes, so they initialise the generator's
encoder and decoder (`Generator.init_from_language_model`). It is also the "LM" baseline of the
evaluation, through `sample`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.layers import Embedding, LSTMStack, sample_logits, vocab_head


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = Embedding(vocab_size, cfg.embed)
        self.lstm = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob)
        self.head = vocab_head(cfg.hidden, self.embedding, cfg.tie_weights)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs [B, T] -> logits [B, T, V] of the next token at every position."""
        return self.head(self.lstm(self.embedding(inputs))[0])

    @torch.no_grad()
    def sample(
        self,
        n: int,
        length: int,
        start: int | Tensor = 0,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """n unconditional samples: `start` is a first token id (default 0, the boundary token) or a
        prefix [n, k]; returns the prefix followed by `length` sampled tokens, [n, k + length]."""
        device = self.head.bias.device
        prefix = torch.full((n, 1), start, device=device) if isinstance(start, int) else start.to(device)
        masks = self.lstm.dropout_masks(n, self.head.bias)
        out, state = self.lstm(self.embedding(prefix), None, masks)
        tokens = [prefix]
        for step in range(length):
            if step > 0:
                out, state = self.lstm(self.embedding(tokens[-1]), state, masks)
            token, _ = sample_logits(self.head(out[:, -1]), temperature, generator)
            tokens.append(token[:, None])
        return torch.cat(tokens, dim=1)
