"""The MaskGAN discriminator: for every target, the probability that the token there is real.

Same seq2seq shape as the generator. The encoder reads the true masked context; the decoder reads
the candidate tokens filled[1:T+1] themselves, so output t judges filled[t+1] having seen
filled[:t+2] and the whole context, and nothing after (causal, as in the authors' code).

Its shape and regularisation may differ from the generator's (gan.disc_* settings, see
`discriminator_model_config`); it starts from the MaskMLE generator's weights only where the shapes match.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskgan_rl.config import Config, ModelConfig
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.layers import OutputLinear, Seq2Seq


def discriminator_model_config(cfg: Config) -> ModelConfig:
    """D's shape and dropout: gan.disc_embed/hidden/layers/keep_prob where set, else the generator's (model.*)."""
    g = cfg.gan
    own = {"embed": g.disc_embed, "hidden": g.disc_hidden, "layers": g.disc_layers, "keep_prob": g.disc_keep_prob}
    return dataclasses.replace(cfg.model, **{key: value for key, value in own.items() if value is not None})


class Discriminator(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig, layer_norm: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        self.missing_id = vocab_size
        self.seq2seq = Seq2Seq(vocab_size, cfg, layer_norm)
        self.head = OutputLinear(cfg.hidden, 1)

    @classmethod
    def from_config(cls, vocab_size: int, cfg: Config) -> "Discriminator":
        """The D a run's config describes (gan.disc_* settings)."""
        return cls(vocab_size, discriminator_model_config(cfg), cfg.gan.disc_layer_norm)

    def forward(self, context: Tensor, filled: Tensor) -> Tensor:
        """context, filled [B, T+1] -> logits [B, T]: logit t that filled[t+1] is real."""
        enc = self.seq2seq.encode(context)
        features, _ = self.seq2seq.decode(enc, filled[:, 1:], enc.state)
        return self.head(features).squeeze(-1)

    def real_and_fake_logits(self, context: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """`(self(context, real), self(context, fake))` for pairs that share their masked context [B, T+1]
        (a window and its in-fill): the context is encoded once and both decoders run as one batch of 2B."""
        enc = self.seq2seq.encode(context)
        enc = enc._replace(
            memory=torch.cat([enc.memory, enc.memory]),
            keys=None if enc.keys is None else torch.cat([enc.keys, enc.keys]),
            state=tuple(torch.cat([s, s], dim=1) for s in enc.state),  # LSTM state: [layers, B, H]
            decoder_masks=self.seq2seq.decoder.dropout_masks(2 * len(context), enc.memory),
        )
        features, _ = self.seq2seq.decode(enc, torch.cat([real[:, 1:], fake[:, 1:]]), enc.state)
        return self.head(features).squeeze(-1).chunk(2)

    @torch.no_grad()
    def init_from_generator(self, gen: Generator) -> bool:
        """The MaskMLE generator's embedding, LSTMs and attention (start of GAN training), where D has
        the generator's shape; the head, and LayerNorms if any (identity at first), stay as they are.
        Returns False, changing nothing, when the shapes differ: such a D starts from random weights."""
        own, theirs = self.seq2seq.state_dict(), gen.seq2seq.state_dict()
        if any(name not in own or own[name].shape != value.shape for name, value in theirs.items()):
            return False
        self.seq2seq.load_state_dict(theirs, strict=False)  # (strict=False: D's LayerNorms have no source)
        return True


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, present: Tensor, real_label: float = 1.0) -> Tensor:
    """(L_fake + L_real) / 2: sigmoid cross-entropy averaged over the masked targets only (real = 1, fake = 0).

    `real_label` < 1 is one-sided label smoothing (gan.disc_label_smoothing = 1 - real_label): real
    tokens are labelled, say, 0.9, so D gains nothing from ever more confident logits on them.
    """
    masked = (~present).to(real_logits.dtype)
    count = masked.sum().clamp(min=1.0)
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label), reduction="none")
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
