"""Step-by-step decoding of growing prefixes, with the encoder and the LSTM state kept between calls.

An in-filling episode asks two networks one question per step: the generator (which token next?) and
the discriminator (is the token just placed real?). Asked afresh, each question reruns the encoder
and the decoder over the whole prefix: O(T) LSTM steps per token, O(T^2) per episode, where one
batched pass over the window needs O(T) (see benchmarks/README.md). `IncrementalDecoder` keeps, per slot (a
sub-environment, a batch row), the encoder's outputs and the decoder state after the tokens read so
far, and reads only the new ones: O(1) LSTM steps per token.

The cache never changes a result. Every call compares each slot's context and already-read tokens
with what it is given, and starts the slot afresh when they differ (a new episode, rows in another
order), so the features always equal those of the stateless computation. Call `clear()` whenever
the weights change: cached states computed with old weights would otherwise be reused.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from maskgan_rl.models.layers import EncoderState, Seq2Seq


class IncrementalDecoder:
    """Decoder features of `seq2seq` for prefixes that grow between calls (inference only: no dropout, no grad)."""

    def __init__(self, seq2seq: Seq2Seq) -> None:
        self.seq2seq = seq2seq
        self.clear()

    def clear(self) -> None:
        self._context: Optional[Tensor] = None  # [slots, T+1]; -1 marks a slot never used
        self._inputs: Optional[Tensor] = None  # [slots, T]: the decoder inputs read so far (first `_read`)
        self._read: Optional[Tensor] = None  # [slots]
        self._memory: Optional[Tensor] = None  # [slots, T, H] encoder outputs
        self._keys: Optional[Tensor] = None  # [slots, T, H] attention keys (None without attention)
        self._state: Optional[tuple[Tensor, Tensor]] = None  # (h, c), each [layers, slots, H]

    @torch.no_grad()
    def features(self, slots: Tensor, context: Tensor, inputs: Tensor, upto: Tensor) -> Tensor:
        """Decoder output [B, H] after reading inputs[b, 0..upto[b]] of slot slots[b], given context[b].

        Equals `seq2seq.decode(seq2seq.encode(context), inputs)[0][b, upto[b]]`.
        context [B, T+1], inputs [B, T] (long), upto [B]; slots [B] distinct slot ids.
        """
        if self.seq2seq.training:
            raise RuntimeError("IncrementalDecoder runs without dropout: call .eval() on the network first")
        slots, upto = slots.long(), upto.long()
        self._reserve(int(slots.max()) + 1, context, inputs)
        self._restart_stale(slots, context, inputs, upto)

        read = self._read[slots]
        count = upto + 1 - read  # >= 1 for every slot after _restart_stale
        out = context.new_empty((len(slots), self.seq2seq.decoder.layers[-1].hidden_size), dtype=self._memory.dtype)
        h, c = self._state
        # Rows that read the same number of new tokens share one decoder call (usually all read one).
        for n in count.unique().tolist():
            sel = (count == n).nonzero().squeeze(1)
            rows = slots[sel]
            tokens = inputs[sel].gather(1, read[sel, None] + torch.arange(n, device=inputs.device))
            enc = EncoderState(self._memory[rows], None if self._keys is None else self._keys[rows], None, None)
            features, (h_new, c_new) = self.seq2seq.decode(enc, tokens, (h[:, rows], c[:, rows]))
            h[:, rows], c[:, rows] = h_new, c_new
            out[sel] = features[:, -1]
        self._inputs[slots] = inputs
        self._read[slots] = upto + 1
        return out

    def _reserve(self, slots: int, context: Tensor, inputs: Tensor) -> None:
        """Room for `slots` slots of sequences shaped like `context`/`inputs`, in the dtype the LSTMs
        output here (bfloat16 under autocast, models/precision.py). A cache too small or of another
        shape or dtype starts over empty: the slot count is fixed per env runner, so this is rare."""
        device, steps = context.device, inputs.shape[1]
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else self.seq2seq.embedding.weight.dtype
        if (self._context is not None and len(self._context) >= slots and self._context.shape[1] == context.shape[1]
                and self._memory.dtype == dtype):
            return
        layers, hidden = len(self.seq2seq.decoder.layers), self.seq2seq.decoder.layers[-1].hidden_size
        self._context = torch.full((slots, context.shape[1]), -1, dtype=torch.long, device=device)
        self._inputs = torch.full((slots, steps), -1, dtype=torch.long, device=device)
        self._read = torch.zeros(slots, dtype=torch.long, device=device)
        self._memory = torch.zeros(slots, steps, hidden, dtype=dtype, device=device)
        self._keys = torch.zeros_like(self._memory) if self.seq2seq.attention is not None else None
        self._state = (
            torch.zeros(layers, slots, hidden, dtype=dtype, device=device),
            torch.zeros(layers, slots, hidden, dtype=dtype, device=device),
        )

    def _restart_stale(self, slots: Tensor, context: Tensor, inputs: Tensor, upto: Tensor) -> None:
        """Encode afresh (and read nothing yet) every slot whose cache does not continue this call."""
        read = self._read[slots]
        unread = torch.arange(inputs.shape[1], device=inputs.device) >= read[:, None]
        continues = (
            (self._context[slots] == context).all(1)
            & ((self._inputs[slots] == inputs) | unread).all(1)
            & (read <= upto)
        )
        stale = (~continues).nonzero().squeeze(1)
        if stale.numel() == 0:
            return
        rows = slots[stale]
        enc = self.seq2seq.encode(context[stale])
        self._context[rows] = context[stale]
        self._read[rows] = 0
        self._memory[rows] = enc.memory
        if self._keys is not None:
            self._keys[rows] = enc.keys
        self._state[0][:, rows], self._state[1][:, rows] = enc.state
