"""The masked losses that pretraining, adversarial training and evaluation share.

Both return (mean negative log-likelihood over the counted positions, number of positions), so
callers can pool means across batches by weighting each with its count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskgan_rl.masking import mask_context
from maskgan_rl.models.generator import Generator


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL over positions where `weights`, number of such positions). Logits [B,T,V], targets/weights [B,T]."""
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    weights = weights.to(nll.dtype)
    count = weights.sum()
    return (nll * weights).sum() / count.clamp(min=1.0), count


def masked_target_nll(generator: Generator, windows: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL of the real tokens at masked targets, their number), teacher-forced: the decoder
    reads the real tokens, as in MaskMLE training."""
    masked = ~present
    logits = generator.logits(mask_context(windows, present, generator.missing_id), windows, at=masked)
    count = masked.sum().to(logits.dtype)
    nll = F.cross_entropy(logits, windows[:, 1:][masked], reduction="sum")
    return nll / count.clamp(min=1.0), count
