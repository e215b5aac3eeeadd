"""The arithmetic of training's forward passes (resources.precision).

"bf16-mixed" runs them under `torch.autocast` with bfloat16: matrix products and LSTM layers compute
in bfloat16 (faster where the hardware has bfloat16 units: recent x86 CPUs, every current GPU),
while weights, gradients and optimiser states stay float32. The networks' output layers
(`layers.OutputLinear`: vocabulary logits, D's logits, values) return float32, so the softmaxes,
losses and returns downstream always run in float32. Evaluation, in-filling and serving never enter
autocast: their figures compare models in float32 whatever they were trained with.

Reinforcement learning is sensitive to a difference between the policy that sampled and the policy
the learner differentiates; in bfloat16 the env runners' step-by-step logits and the learner's
teacher-forced ones round differently. Off by default: benchmarks/README.md has what it buys and costs.
"""

from __future__ import annotations

import torch

from maskgan_rl.config import PRECISIONS


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The context that forward passes on `device` run in; "32" is a disabled autocast (a no-op)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

