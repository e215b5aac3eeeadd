"""IncrementalDecoder: cached step-by-step decoding gives exactly the features of a full pass."""

import pytest
import torch

from maskgan_rl.config import ModelConfig
from maskgan_rl.models.incremental import IncrementalDecoder
from maskgan_rl.models.layers import Seq2Seq

V, T, B = 30, 10, 5


def full_pass(seq2seq: Seq2Seq, context: torch.Tensor, inputs: torch.Tensor, upto: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        enc = seq2seq.encode(context)
        features, _ = seq2seq.decode(enc, inputs, enc.state)
    return features[torch.arange(len(upto)), upto]


@pytest.mark.parametrize("attention", [True, False])
def test_growing_prefixes_restarts_and_reordered_slots_match_a_full_pass(attention):
    torch.manual_seed(0)
    seq2seq = Seq2Seq(V, ModelConfig(embed=8, hidden=8, layers=2, attention=attention)).eval()
    decoder = IncrementalDecoder(seq2seq)
    context = torch.randint(0, V + 1, (B, T + 1))
    inputs = torch.randint(0, V, (B, T))
    slots = torch.arange(B)
    upto = torch.tensor([0, 3, 2, 5, 1])
    for _ in range(4):  # rows advance by different numbers of tokens per call
        assert torch.allclose(decoder.features(slots, context, inputs, upto), full_pass(seq2seq, context, inputs, upto), atol=1e-6)
        upto = (upto + torch.tensor([1, 2, 1, 1, 3])).clamp(max=T - 1)

    some = torch.tensor([4, 2, 0])  # a subset of slots, in another order
    last = torch.full((3,), T - 1)
    assert torch.allclose(decoder.features(some, context[some], inputs[some], last), full_pass(seq2seq, context[some], inputs[some], last), atol=1e-6)

    inputs[1, 0] = (inputs[1, 0] + 1) % V  # slot 1 now holds another episode with the same context
    context[3] = (context[3] + 1) % V  # slot 3 another context
    upto = torch.tensor([T - 1, 2, T - 1, 4, T - 1])  # slots 0, 2 and 4 repeat a finished step
    assert torch.allclose(decoder.features(slots, context, inputs, upto), full_pass(seq2seq, context, inputs, upto), atol=1e-6)


def test_cleared_cache_follows_new_weights_and_dropout_is_refused():
    torch.manual_seed(1)
    seq2seq = Seq2Seq(V, ModelConfig(embed=8, hidden=8, layers=1, keep_prob=0.5)).eval()
    decoder = IncrementalDecoder(seq2seq)
    context, inputs, slots = torch.randint(0, V, (B, T + 1)), torch.randint(0, V, (B, T)), torch.arange(B)
    decoder.features(slots, context, inputs, torch.full((B,), 2))
    with torch.no_grad():
        for p in seq2seq.parameters():
            p.add_(0.05)
    decoder.clear()
    upto = torch.full((B,), 4)
    assert torch.allclose(decoder.features(slots, context, inputs, upto), full_pass(seq2seq, context, inputs, upto), atol=1e-6)
    seq2seq.train()
    with pytest.raises(RuntimeError, match="eval"):
        decoder.features(slots, context, inputs, upto)
