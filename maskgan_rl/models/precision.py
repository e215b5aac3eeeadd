"""The arithmetic of training's forward passes (resources.precision).

"bf16-mixed" runs them under `torch.autocast` with bfloat16: matrix products and LSTM layers compute
in bfloat16, while weights, gradients and optimiser states stay float32. The networks' output layers
(`layers.OutputLinear`: vocabulary logits, D's logits, values) return float32, so the softmaxes,
losses and returns downstream always run in float32. Evaluation, in-filling and serving never enter
autocast: their figures compare models in float32 whatever they were trained with.

"auto", the default, is "bf16-mixed" for networks whose LSTMs have at least BFLOAT16_MIN_HIDDEN units, on
a CPU that computes bfloat16 products in hardware (AVX512-BF16 or AMX), and "32" everywhere else: CPUs
without those units emulate bfloat16 slowly, GPUs are not measured yet, and the threshold keeps the shipped
presets (up to 1x128) and their published results in float32, although bfloat16 pays from about 128 units
on (benchmarks/README.md, "Issue 20, second round"). Each process decides for its own device and networks.

Reinforcement learning is sensitive to a difference between the policy that sampled and the policy
the learner differentiates; in bfloat16 the env runners' step-by-step logits and the learner's
teacher-forced ones round differently (the quality check across seeds is in benchmarks/README.md).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from maskgan_rl.config import PRECISIONS

BFLOAT16_MIN_HIDDEN = 256  # "auto": narrower networks (every shipped preset) stay in float32


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether devices of this type compute bfloat16 products in hardware ("auto" uses bfloat16 only there).
    CPUs: AVX512-BF16 or AMX, as torch reports them; GPUs: not measured, so False."""
    if device_type != "cpu":
        return False
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolve(precision: str, device: torch.device | str, network: nn.Module) -> str:
    """resources.precision as it applies to `network` on `device`: "32" or "bf16-mixed"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16-mixed" if width(network) >= BFLOAT16_MIN_HIDDEN and native_bfloat16(torch.device(device).type) else "32"


def width(network: nn.Module) -> int:
    """The hidden size of the widest LSTM in `network` (0 without one): what decides whether bfloat16 pays."""
    return max((m.hidden_size for m in network.modules() if isinstance(m, nn.LSTM)), default=0)


def autocast(precision: str, device: torch.device | str, network: nn.Module) -> torch.autocast:
    """The context that `network`'s forward passes on `device` run in; a disabled autocast (a no-op)
    where `precision` resolves to "32"."""
    enabled = resolve(precision, device, network) == "bf16-mixed"
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def describe(precision: str, device: torch.device | str, network: nn.Module) -> str:
    """What `precision` means for `network` on `device`, for the run's log: e.g. "bf16-mixed (auto:
    650-unit LSTMs on a cpu with bfloat16 units; ...)"."""
    chosen = resolve(precision, device, network)
    if precision != "auto":
        return chosen
    kind, units = torch.device(device).type, width(network)
    if not native_bfloat16(kind):
        reason = f"no bfloat16 units on this {kind}"
    elif units < BFLOAT16_MIN_HIDDEN:
        reason = f"{units}-unit LSTMs, bfloat16 from {BFLOAT16_MIN_HIDDEN} on"
    else:
        reason = f"{units}-unit LSTMs on a {kind} with bfloat16 units"
    return f"{chosen} (auto: {reason}; resources.precision=32 or bf16-mixed to choose)"
