"""Building blocks shared by the four networks: embeddings, a variational-dropout LSTM stack,
Luong attention, the tied vocabulary head, the encoder-decoder body and fast sampling.

Tensor layout everywhere: batch first, [B, T, features]. LSTM state is nn.LSTM's (h, c), each
[layers, B, hidden], so it can be stored and passed around as plain tensors (e.g. by an RL rollout).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from maskgan_rl.config import ModelConfig

LSTMState = tuple[Tensor, Tensor]


class Embedding(nn.Embedding):
    """Token embedding initialised small (uniform +-0.1): a tied softmax starts near uniform."""

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -0.1, 0.1)


class MaskedEmbedding(Embedding):
    """Embedding that maps `missing_id = vocab_size` to a learned "missing" vector.

    As in the authors' code the missing vector is a parameter of its own, not a row of `weight`, so
    `weight` stays [vocab, dim] and can be tied to the softmax (which must never output missing_id).
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__(vocab_size, dim)
        self.missing = nn.Parameter(torch.empty(dim).uniform_(-0.1, 0.1))

    def forward(self, ids: Tensor) -> Tensor:
        is_missing = ids == self.num_embeddings
        vectors = super().forward(ids.masked_fill(is_missing, 0))
        return torch.where(is_missing.unsqueeze(-1), self.missing, vectors)


class OutputLinear(nn.Linear):
    """A network's last layer. Its outputs are float32 even under bfloat16 autocast
    (models/precision.py), so that the softmaxes, losses and returns computed from them are too."""

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features).float()


class VocabHead(OutputLinear):
    """Hidden state -> vocabulary logits. Tied: the weight *is* the embedding matrix (shared
    Parameter, so also after `.to(device)`), with a bias of its own; when the hidden size differs
    from the embedding size, a linear map without bias (`project`) takes the hidden state to the
    embedding size first, so that `model.hidden` can change alone."""

    def __init__(self, hidden: int, embedding: nn.Embedding, tie: bool):
        width = embedding.embedding_dim if tie else hidden
        super().__init__(width, embedding.num_embeddings)
        nn.init.zeros_(self.bias)
        self.project = nn.Linear(hidden, width, bias=False) if width != hidden else None
        if tie:
            self.weight = embedding.weight

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features if self.project is None else self.project(features))


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani): one mask per sequence, reused at every time step.

    The caller draws the mask once with `mask` and passes it to every call for that sequence, which
    is what keeps it fixed when a sequence is decoded one step at a time.
    """

    def __init__(self, keep_prob: float):
        super().__init__()
        self.keep_prob = keep_prob

    def mask(self, batch: int, size: int, like: Tensor) -> Optional[Tensor]:
        """A [batch, 1, size] keep-mask scaled by 1/keep_prob; None when dropout is off (eval mode or keep_prob 1)."""
        if not self.training or self.keep_prob >= 1.0:
            return None
        return torch.bernoulli(like.new_full((batch, 1, size), self.keep_prob)) / self.keep_prob

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        return x if mask is None else x * mask


class LSTMStack(nn.Module):
    """Stacked single-layer nn.LSTMs with a locked dropout mask on each layer's input and on the output.

    nn.LSTM's own `dropout` would draw a fresh mask at every step, hence one nn.LSTM per layer. The
    paper's code also drops the recurrent state h with a locked mask; fused nn.LSTM kernels cannot do
    that, so it is approximated by the masks on the layer inputs/outputs (keeps cuDNN/oneDNN speed).
    """

    def __init__(self, input_size: int, hidden: int, layers: int, keep_prob: float, layer_norm: bool = False):
        super().__init__()
        sizes = [input_size] + [hidden] * (layers - 1)
        self.layers = nn.ModuleList(nn.LSTM(size, hidden, batch_first=True) for size in sizes)
        self.dropout = LockedDropout(keep_prob)
        # Optional LayerNorm of each layer's outputs, one time step at a time (so decoding step by step
        # gives the same numbers); a layer-normalised LSTM cell would lose the fused kernels.
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in sizes) if layer_norm else None

    def dropout_masks(self, batch: int, like: Tensor) -> list[Optional[Tensor]]:
        """Masks for one batch of sequences: each layer's input, then the stack's output."""
        sizes = [lstm.input_size for lstm in self.layers] + [self.layers[-1].hidden_size]
        return [self.dropout.mask(batch, size, like) for size in sizes]

    def forward(
        self, x: Tensor, state: Optional[LSTMState] = None, masks: Optional[list[Optional[Tensor]]] = None
    ) -> tuple[Tensor, LSTMState]:
        """x [B, T, input] -> (outputs [B, T, hidden], final state). state None = zeros;
        masks None = fresh masks for this call (pass them explicitly when decoding step by step)."""
        if masks is None:
            masks = self.dropout_masks(x.shape[0], x)
        hs, cs = [], []
        for i, lstm in enumerate(self.layers):
            layer_state = None if state is None else (state[0][i : i + 1], state[1][i : i + 1])
            x, (h, c) = lstm(self.dropout(x, masks[i]), layer_state)
            if self.norms is not None:
                x = self.norms[i](x)
            hs.append(h)
            cs.append(c)
        return self.dropout(x, masks[-1]), (torch.cat(hs), torch.cat(cs))


class LuongAttention(nn.Module):
    """Luong "general" attention as in the paper's code: keys = W_k m (no bias), score = <key, h_t>,
    output = tanh(W_o [h_t; context]) (no bias)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(2 * hidden, hidden, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """Computed once per sequence, not once per decoder step."""
        return self.key(memory)

    def forward(self, h: Tensor, keys: Tensor, memory: Tensor) -> Tensor:
        """h [B, T, H] attends over memory [B, S, H] -> [B, T, H]."""
        weights = torch.softmax(h @ keys.transpose(1, 2), dim=-1)
        return torch.tanh(self.out(torch.cat([h, weights @ memory], dim=-1)))


class EncoderState(NamedTuple):
    memory: Tensor  # encoder outputs [B, T, H]: what attention reads
    keys: Optional[Tensor]  # attention keys [B, T, H]; None without attention
    state: LSTMState  # encoder final state: the decoder's initial state
    decoder_masks: list[Optional[Tensor]]  # the decoder's dropout masks, reused at every step of this batch

    def select(self, rows: Tensor) -> "EncoderState":
        """The same for the batch rows `rows` only."""
        return EncoderState(
            self.memory[rows],
            None if self.keys is None else self.keys[rows],
            (self.state[0][:, rows], self.state[1][:, rows]),
            [None if mask is None else mask[rows] for mask in self.decoder_masks],
        )


class Seq2Seq(nn.Module):
    """The encoder-decoder body shared by the generator and the discriminator.

    The encoder reads the masked context `context[:, :T]` (missing_id where a target is masked); the
    decoder starts from the encoder's final state and attends over all encoder outputs at every step.
    Encoder and decoder share one embedding (the decoder never sees missing_id).
    """

    def __init__(self, vocab_size: int, cfg: ModelConfig, layer_norm: bool = False):
        super().__init__()
        self.embedding = MaskedEmbedding(vocab_size, cfg.embed)
        self.encoder = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob, layer_norm)
        self.decoder = LSTMStack(cfg.embed, cfg.hidden, cfg.layers, cfg.keep_prob, layer_norm)
        self.attention = LuongAttention(cfg.hidden) if cfg.attention else None

    def encode(self, context: Tensor) -> EncoderState:
        """context [B, T+1] -> the state the decoder needs, for whole sequences and single steps alike."""
        memory, state = self.encoder(self.embedding(context[:, :-1]))
        keys = self.attention.keys(memory) if self.attention is not None else None
        return EncoderState(memory, keys, state, self.decoder.dropout_masks(context.shape[0], memory))

    def decode(self, enc: EncoderState, inputs: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """inputs [B, t] (t = T for a whole sequence, 1 for one step) -> (features [B, t, H], state)."""
        out, state = self.decoder(self.embedding(inputs), state, enc.decoder_masks)
        if self.attention is not None:
            out = self.attention(out, enc.keys, enc.memory)
        return out, state


def cold_logits(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Logits [N, V] of a colder distribution: softmax(logits / temperature), cut to its top-p nucleus.

    The nucleus of a row is the smallest set of most probable tokens whose probabilities sum to at
    least `top_p` (Holtzman et al. 2020); every other token gets logit -inf, i.e. probability 0.
    The most probable token is always kept. temperature 1 and top_p 1 return `logits` unchanged.
    """
    if temperature != 1.0:
        logits = logits / temperature
    if top_p >= 1.0:
        return logits
    probs, order = torch.softmax(logits.float(), dim=-1).sort(dim=-1, descending=True)
    # A token is outside the nucleus when the more probable tokens before it already reach top_p.
    outside_sorted = probs.cumsum(dim=-1) - probs >= top_p
    outside = torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)
    return logits.masked_fill(outside, float("-inf"))


def sample_logits(
    logits: Tensor, temperature: float = 1.0, generator: Optional[torch.Generator] = None
) -> tuple[Tensor, Tensor]:
    """One token per row of logits [N, V] from softmax(logits / temperature) -> (tokens [N], log-probs [N])."""
    return sample_log_probs(torch.log_softmax(logits.float() / temperature, dim=-1), generator)


def sample_log_probs(logp: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """One token per row of normalised log-probabilities [N, V] -> (tokens [N], their log-probs [N]).

    Inverse-CDF sampling (cumsum + searchsorted on one uniform draw per row), because torch.multinomial
    is much slower at large vocabularies (benchmarks/README.md). u = rand * cdf[-1] < cdf[-1] exactly in float32 (rand < 1), and
    `right=True` picks the first index whose cdf exceeds u, so a zero-probability token is never drawn.
    `generator` must live on the log-probabilities' device.
    """
    cdf = logp.exp().cumsum(dim=-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device, generator=generator) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def sample_left_to_right(
    decode: Callable[[Tensor, Optional[LSTMState], Tensor], tuple[Tensor, LSTMState]],
    head: nn.Module,
    windows: Tensor,
    present: Tensor,
    state: Optional[LSTMState],
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """Sample the masked targets of windows [B, T+1] given present [B, T] -> (filled [B, T+1], logp [B, T]).

    `decode(inputs [n, k], state, rows) -> (features [n, k, H], state)` reads the next k tokens of
    the batch rows `rows` [n] (their state in, theirs out), `head` maps features to vocabulary
    logits. The decoder is fed the real token after a present target and its own sample after a
    masked one, and stops reading a row after its last masked target (nothing later is sampled).
    logp[b, t] is the log-probability of filled[b, t+1] under softmax(logits / temperature) where the
    target is masked, and 0 where it is present (the head runs only for the rows that sample).
    Gradients flow into logp unless the caller uses no_grad.
    """
    masked = ~present
    filled = windows.clone()
    logp = torch.zeros(present.shape, device=windows.device)
    last_of_row = torch.where(masked, torch.arange(present.shape[1], device=present.device), -1).max(dim=1).values
    rows = (last_of_row >= 0).nonzero().squeeze(1)  # the rows with anything to sample
    if rows.numel() == 0:
        return filled, logp
    first, last = int(masked[rows].any(dim=0).nonzero()[0]), int(last_of_row.max())
    if state is not None:
        state = (state[0][:, rows], state[1][:, rows])
    if first > 0:  # nothing is sampled before the first blank: read that prefix in one LSTM call
        _, state = decode(filled[rows, :first], state, rows)
    for t in range(first, last + 1):
        going_on = last_of_row[rows] >= t
        if not going_on.all():
            rows, state = rows[going_on], (state[0][:, going_on], state[1][:, going_on])
        features, state = decode(filled[rows, t : t + 1], state, rows)
        sampling = masked[rows, t]
        if not sampling.any():
            continue
        tokens, token_logp = sample_logits(head(features[sampling, 0]), temperature, generator)
        picked = rows[sampling]
        filled[picked, t + 1] = tokens
        logp[picked, t] = token_logp
    return filled, logp
