"""The variational-dropout LSTM language model pretrained before MaskMLE (the paper's step 1).

Its embedding, LSTM and softmax have the generator's sizes, so they initialise the generator's
encoder and decoder (`Generator.init_from_language_model`). It is also the "LM" in-filling baseline
of the evaluation: it fills blanks from the text before them alone (`infill`, `logits`, the same
interface as the generator's), never seeing the text after them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.layers import Embedding, LSTMStack, VocabHead, sample_left_to_right


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.vocab_size = vocab_size
        self.missing_id = vocab_size  # generator-compatible masked contexts (which `logits` ignores)
        self.embedding = Embedding(vocab_size, cfg.embed)
        self.lstm = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob)
        self.head = VocabHead(cfg.hidden, self.embedding, cfg.tie_weights)

    def forward(self, inputs: Tensor, at: Optional[Tensor] = None) -> Tensor:
        """inputs [B, T] -> logits [B, T, V] of the next token at every position (only where `at`, bool
        [B, T], if given: [at.sum(), V])."""
        features = self.lstm(self.embedding(inputs))[0]
        return self.head(features if at is None else features[at])

    def logits(self, context: Tensor, filled: Tensor, at: Optional[Tensor] = None) -> Tensor:
        """Generator-compatible (`Generator.logits`): logits of filled[t+1] from filled[:t+1]; the context is not read."""
        return self(filled[:, :-1], at)

    def sample(
        self,
        windows: Tensor,
        present: Tensor,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[Tensor, Tensor]:
        """Generator-compatible sampling of the masked targets, from the left context only (see `layers.sample_left_to_right`)."""
        masks = self.lstm.dropout_masks(len(windows), self.head.bias)
        decode = lambda inputs, state, rows: self.lstm(  # noqa: E731
            self.embedding(inputs), state, [None if mask is None else mask[rows] for mask in masks]
        )
        return sample_left_to_right(decode, self.head, windows, present, None, temperature, generator)
