"""The MaskGAN discriminator: for every target, the probability that the token there is real.

Same seq2seq shape as the generator. The encoder reads the true masked context; the decoder reads
the candidate tokens filled[1:T+1] themselves, so output t judges filled[t+1] having seen
filled[:t+2] and the whole context, and nothing after (causal, as in the authors' code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.layers import Seq2Seq


class Discriminator(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.vocab_size = vocab_size
        self.missing_id = vocab_size
        self.seq2seq = Seq2Seq(vocab_size, cfg)
        self.head = nn.Linear(cfg.hidden, 1)

    def forward(self, context: Tensor, filled: Tensor) -> Tensor:
        """context, filled [B, T+1] -> logits [B, T]: logit t that filled[t+1] is real."""
        enc = self.seq2seq.encode(context)
        features, _ = self.seq2seq.decode(enc, filled[:, 1:], enc.state)
        return self.head(features).squeeze(-1)

    @torch.no_grad()
    def init_from_generator(self, gen: Generator) -> None:
        """The MaskMLE generator's embedding, LSTMs and attention (start of GAN training); the head stays."""
        self.seq2seq.load_state_dict(gen.seq2seq.state_dict())


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, present: Tensor) -> Tensor:
    """(L_fake + L_real) / 2: sigmoid cross-entropy averaged over the masked targets only (real = 1, fake = 0)."""
    masked = (~present).to(real_logits.dtype)
    count = masked.sum().clamp(min=1.0)
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits), reduction="none")
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="none")
    return ((real * masked).sum() + (fake * masked).sum()) / count / 2


def right_counts(real_logits: Tensor, fake_logits: Tensor, present: Tensor) -> tuple[float, float, float]:
    """(real targets called real, fake targets called fake, masked targets): D's accuracy over masked
    targets is (real + fake) / (2 * masked); counts, so that callers can sum them over batches."""
    masked = ~present
    return float((real_logits[masked] > 0).sum()), float((fake_logits[masked] <= 0).sum()), float(masked.sum())


def log_real_prob(logits: Tensor) -> Tensor:
    """The generator's reward log D(x): the paper's code adds 1e-7 inside the log."""
    return torch.log(torch.sigmoid(logits) + 1e-7)
