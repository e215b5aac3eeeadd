"""The one optimiser every stage uses: Adam, with torch's fused kernel.

The fused kernel updates all parameters in one pass, where the default (foreach) implementation
makes several; same algorithm, several times faster at the paper's size (benchmarks/README.md).
"""

from __future__ import annotations

from typing import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, beta1: float = 0.9, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam(lr, betas=(beta1, 0.999), weight_decay): the L2 penalty's gradient added, as torch's Adam does."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay, fused=True)
