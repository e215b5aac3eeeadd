"""The MaskGAN generator: a seq2seq model that fills in the masked targets of a window.

Two ways to run the decoder, which must agree (tests/test_models.py checks it):
- `logits(context, filled)`: teacher-forced over the whole sequence in one LSTM call, for learning
  (MaskMLE, and the RL learner recomputing the log-probs of sampled tokens);
- `encode` + `decode_step`, or the batched `infill`: one step at a time, for sampling.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.masking import mask_context
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.models.layers import EncoderState, LSTMState, Seq2Seq, VocabHead, sample_left_to_right


class Generator(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.vocab_size = vocab_size
        self.missing_id = vocab_size
        self.seq2seq = Seq2Seq(vocab_size, cfg)
        self.head = VocabHead(cfg.hidden, self.seq2seq.embedding, cfg.tie_weights)

    def features(self, context: Tensor, filled: Tensor) -> Tensor:
        """context, filled [B, T+1] -> decoder features [B, T, H], teacher-forced in one LSTM call;
        feature t has read the whole masked context and filled[:t+1] (what the head predicts filled[t+1] from)."""
        enc = self.seq2seq.encode(context)
        features, _ = self.seq2seq.decode(enc, filled[:, :-1], enc.state)
        return features

    def logits(self, context: Tensor, filled: Tensor, at: Optional[Tensor] = None) -> Tensor:
        """context, filled [B, T+1] -> logits [B, T, V]; output t is the distribution of filled[t+1].

        With `at` (bool [B, T]) only the outputs where it is True, [at.sum(), V]: the vocabulary
        projection is the costliest layer, and losses usually need the masked targets alone.
        """
        features = self.features(context, filled)
        return self.head(features if at is None else features[at])

    def token_log_probs(self, context: Tensor, filled: Tensor, at: Tensor, temperature: float = 1.0) -> Tensor:
        """log p(filled[t+1] | filled[:t+1], context) at `temperature` where `at` [B, T] is True, 0 elsewhere:
        the log-probability each token had when `sample` drew it, recomputed teacher-forced in one pass."""
        return self.log_probs_from_features(self.features(context, filled), filled, at, temperature)

    def log_probs_from_features(self, features: Tensor, filled: Tensor, at: Tensor, temperature: float = 1.0) -> Tensor:
        """`token_log_probs` from `features(context, filled)` already computed (shared with a value head)."""
        picked = torch.log_softmax(self.head(features[at]) / temperature, dim=-1)
        picked = picked.gather(1, filled[:, 1:][at][:, None]).squeeze(1)
        return torch.zeros(at.shape, device=picked.device).masked_scatter(at, picked)

    def encode(self, context: Tensor) -> EncoderState:
        """Start of step-by-step decoding; the first decoder state is `encode(context).state`."""
        return self.seq2seq.encode(context)

    def decode_step(self, enc: EncoderState, prev_token: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """prev_token [B] (filled[t]) -> (logits [B, V] for filled[t+1], next state)."""
        features, state = self.seq2seq.decode(enc, prev_token[:, None], state)
        return self.head(features[:, 0]), state

    def sample(
        self,
        windows: Tensor,
        present: Tensor,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample the masked targets of windows [B, T+1] given present [B, T] -> (filled [B, T+1], logp [B, T]),
        reading the whole masked context first (see `layers.sample_left_to_right` for logp and gradients).
        `generator` (on the windows' device) makes sampling reproducible."""
        enc = self.seq2seq.encode(mask_context(windows, present, self.missing_id))
        decode = lambda inputs, state, rows: self.seq2seq.decode(enc.select(rows), inputs, state)  # noqa: E731
        return sample_left_to_right(decode, self.head, windows, present, enc.state, temperature, generator)

    @torch.no_grad()
    def init_from_language_model(self, lm: LanguageModel) -> None:
        """Pretrained LM weights into both encoder and decoder (same sizes required), and its softmax."""
        self.seq2seq.embedding.weight.copy_(lm.embedding.weight)
        self.seq2seq.encoder.load_state_dict(lm.lstm.state_dict())
        self.seq2seq.decoder.load_state_dict(lm.lstm.state_dict())
        self.head.load_state_dict(lm.head.state_dict())
