"""The synthetic benchmark's "real" data source: a randomly initialised LSTM language model.

As in SeqGAN, every weight is drawn from N(0, 1), which makes the oracle's next-token distributions
peaked enough to have structure worth learning. Because the oracle is known, the quality of any
generated sequence is measured exactly by its NLL under the oracle.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from maskgan_rl.vocab import SPECIALS, Vocab

BOUNDARY_ID = 0  # every oracle sequence starts after this token (the `<eos>` id)
_ROWS_PER_CHUNK = 256  # rows scored at once: bounds the memory of the [rows, T, V] logits


class OracleLM(nn.Module):
    def __init__(self, vocab_size: int = 5000, hidden: int = 32, seed: int = 88) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        # The layers' default initialisation is overwritten below; it must not consume the global RNG
        # either (a cached oracle would make the first run of a session draw differently from the next).
        with torch.random.fork_rng(devices=[]):
            self.embedding = nn.Embedding(vocab_size, hidden)
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
            self.output = nn.Linear(hidden, vocab_size)
        # Draw weights on the CPU from a private generator in a fixed parameter order, so the same
        # seed gives the same oracle on every machine, whatever else consumed the global RNG.
        weights = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=weights))
        self.requires_grad_(False)

    def logits(self, inputs: torch.Tensor, state: Optional[tuple] = None) -> tuple[torch.Tensor, tuple]:
        """Next-token logits [N, T, V] after each input token [N, T], and the LSTM state after them."""
        out, state = self.lstm(self.embedding(inputs), state)
        return self.output(out), state

    @torch.no_grad()
    def sample(
        self, n: int, length: int, generator: Optional[torch.Generator] = None, on_rows: Optional[Callable[[int], None]] = None
    ) -> torch.Tensor:
        """n sequences [n, length + 1]: the boundary token, then `length` tokens sampled from the oracle.

        All uniforms are drawn up front, so the result depends only on `generator`, not on chunking.
        `on_rows(count)` is called after each chunk of rows is sampled (progress for large n).
        """
        device = self.output.weight.device
        uniforms = torch.rand(n, length, generator=generator, device="cpu").to(device)
        seqs = torch.full((n, length + 1), BOUNDARY_ID, dtype=torch.long, device=device)
        for rows in torch.split(torch.arange(n, device=device), _ROWS_PER_CHUNK):
            state = None
            for t in range(length):
                logits, state = self.logits(seqs[rows, t : t + 1], state)
                seqs[rows, t + 1] = inverse_cdf_sample(torch.softmax(logits[:, 0], dim=-1), uniforms[rows, t])
            if on_rows is not None:
                on_rows(len(rows))
        return seqs

    @torch.no_grad()
    def nll(
        self, windows: torch.Tensor | np.ndarray, weights: Optional[torch.Tensor | np.ndarray] = None
    ) -> torch.Tensor:
        """Per-window mean of -log p(w[t+1] | w[:t+1]) in nats, over all targets or where `weights` is True.

        A row whose weights are all False has no targets to average and gives NaN.
        """
        token_nll = -self.token_log_probs(windows)
        if weights is None:
            return token_nll.mean(1)
        mask = torch.as_tensor(weights, device=token_nll.device).to(token_nll.dtype)
        return (token_nll * mask).sum(1) / mask.sum(1)

    @torch.no_grad()
    def token_log_probs(self, windows: torch.Tensor | np.ndarray) -> torch.Tensor:
        """log p(w[t+1] | w[:t+1]) of every target of windows [N, T+1]: [N, T], in nats."""
        windows = torch.as_tensor(windows, dtype=torch.long, device=self.output.weight.device)
        return torch.cat([
            torch.log_softmax(self.logits(chunk[:, :-1])[0], dim=-1).gather(-1, chunk[:, 1:, None])[..., 0]
            for chunk in torch.split(windows, _ROWS_PER_CHUNK)
        ])


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One category per row of `probs` [N, V] from uniforms [N] in [0, 1): the first index whose CDF exceeds u.

    Cheaper than torch.multinomial for many rows; the clamp guards against the CDF's rounding
    ending just below 1.
    """
    cdf = probs.cumsum(dim=-1)
    picked = torch.searchsorted(cdf, uniforms[:, None], right=True)[:, 0]
    return picked.clamp_max(probs.shape[-1] - 1)


def oracle_vocab(vocab_size: int) -> Vocab:
    """Vocabulary whose ids are the oracle's ids: the two specials, then w2 ... w{V-1}."""
    return Vocab(list(SPECIALS) + [f"w{i}" for i in range(len(SPECIALS), vocab_size)])
