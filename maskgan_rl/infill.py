"""Fill in the blanks of people's text with a trained generator: `maskgan infill` and the Python API.

How a text becomes a model window (the rules users see in `maskgan infill --help`):
- Words are split as the training corpus was: on whitespace (lower-cased when the model was trained
  with `data.lowercase`); IMDB models lower-case and split punctuation off, as their reviews were.
- Each blank `___` (three or more underscores, standing alone) is ONE masked token: `___ ___` asks
  for two words. The model never chooses how long a blank is.
- The window starts with the boundary token `<eos>` (every corpus puts it before a sentence), so
  the text may hold at most `seq_len` tokens; a longer one is a MaskGANError saying so.
- A shorter text is padded after its end with observed `<eos>` tokens, up to the seq_len + 1 tokens
  the model was trained on: the model then knows the text ends there. Padding is never returned.
- Words outside the vocabulary reach the model as `<unk>` (an `UnknownWordWarning` names them); the
  returned text keeps the words as typed, only the blanks change.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from maskgan_rl.config import DataConfig
from maskgan_rl.corpora import tokenize_review
from maskgan_rl.errors import MaskGANError
from maskgan_rl.loading import load_generator, stored_config
from maskgan_rl.models.generator import Generator
from maskgan_rl.vocab import EOS, SPECIALS, Vocab

log = logging.getLogger(__name__)

BLANK = "___"
ROWS_PER_BATCH = 1024  # filled windows sampled at once: bounds memory whatever --samples asks
_BLANK_TOKEN = re.compile(r"_{3,}")


def example_text(tokens: Sequence[str]) -> str:
    """Two words of a vocabulary around two blanks: a text every model with that vocabulary reads
    without unknown words (shown after training, and MLflow's serving example)."""
    words = [token for token in tokens if token not in SPECIALS]
    return f"{words[0]} {BLANK} {BLANK} {words[-1]}"


class UnknownWordWarning(UserWarning):
    """A word of the user's text is not in the model's vocabulary and was read as `<unk>`."""


@dataclass(frozen=True)
class FillRequest:
    """Texts that passed a model's checks (`Infiller.request`), with how to sample them."""

    token_lists: list[list[str]]  # each text's tokens, every blank as `___`
    temperature: float
    samples: int
    seed: Optional[int]
    unknown: list[str]  # words outside the vocabulary, read as <unk>

    def blanks(self, text: int) -> list[int]:
        """Positions of the blanks among the words of text number `text` (and of its filled versions)."""
        return [i for i, token in enumerate(self.token_lists[text]) if token == BLANK]

    def unknown_message(self, vocab_size: int) -> str:
        shown = ", ".join(self.unknown[:10]) + (f" (+{len(self.unknown) - 10} more)" if len(self.unknown) > 10 else "")
        return f"{len(self.unknown)} word(s) not in the model's {vocab_size}-word vocabulary, read as <unk>: {shown}"


class Infiller:
    """A generator with the vocabulary and data settings needed to turn text into windows and back."""

    def __init__(self, generator: Generator, vocab: Vocab, data: DataConfig):
        self.generator = generator.eval()
        self.vocab = vocab
        self.data = data

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Infiller":
        generator, vocab, checkpoint = load_generator(path, device=device)
        return cls(generator, vocab, stored_config(checkpoint, path).data)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    def tokenize(self, text: str) -> list[str]:
        """The text's tokens, split as the training corpus was; every blank becomes exactly `___`."""
        if self.data.dataset == "imdb":
            tokens = tokenize_review(text)  # `___` is one \w+ run, so blanks survive
        else:
            tokens = (text.lower() if self.data.lowercase else text).split()
        return [BLANK if _BLANK_TOKEN.fullmatch(token) else token for token in tokens]

    def request(
        self, texts: Sequence[str], temperature: float = 1.0, samples: int = 1, seed: Optional[int] = None
    ) -> "FillRequest":
        """The texts checked against this model's rules, with the sampling settings: a MaskGANError
        names the first problem (no blank, too many tokens, a bad setting)."""
        if not 0 < temperature < math.inf:
            raise MaskGANError(f"temperature={temperature} must be > 0 and finite (1 samples the model as trained; lower is greedier)")
        if samples < 1:
            raise MaskGANError(f"samples={samples} must be >= 1")
        if seed is not None and not 0 <= seed < 2**63:
            raise MaskGANError(f"seed={seed} must be an integer in [0, 2**63)")
        token_lists = [self._checked_tokens(text) for text in texts]
        unknown = sorted({t for tokens in token_lists for t in tokens if t != BLANK and self._is_unknown(t)})
        return FillRequest(token_lists, temperature, samples, seed, unknown)

    def fill(
        self, texts: Sequence[str], temperature: float = 1.0, samples: int = 1, seed: Optional[int] = None
    ) -> list[list[str]]:
        """For each text, `samples` filled-in versions (tokens joined by single spaces)."""
        request = self.request(texts, temperature, samples, seed)
        if request.unknown:
            warnings.warn(request.unknown_message(len(self.vocab)), UnknownWordWarning, stacklevel=2)
        return self.fill_requests([request])[0]

    def fill_requests(self, requests: Sequence["FillRequest"]) -> list[list[list[str]]]:
        """Each request's filled texts (per text, `samples` versions), sampled together only where that
        cannot change a result: requests without a seed at the same temperature share the generator's
        passes; a request with a seed is sampled alone from its own seed, so it gets what `fill` gives
        it on its own whatever it arrives with (a server batches concurrent requests this way)."""
        groups: dict[object, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(i if request.seed is not None else ("no seed", request.temperature), []).append(i)
        results: list[list[list[str]]] = [[] for _ in requests]
        for members in groups.values():
            first = requests[members[0]]
            token_lists = [tokens for i in members for tokens in requests[i].token_lists]
            repeats = [requests[i].samples for i in members for _ in requests[i].token_lists]
            filled = iter(self._sample(token_lists, repeats, first.temperature, first.seed))
            for i in members:
                results[i] = [next(filled) for _ in requests[i].token_lists]
        return results

    @torch.no_grad()
    def _sample(
        self, token_lists: list[list[str]], repeats: list[int], temperature: float, seed: Optional[int]
    ) -> list[list[str]]:
        """`repeats[i]` filled versions of each checked token list, in one stream of randomness."""
        if not token_lists:
            return []
        windows, present = self._windows(token_lists)
        device = next(self.generator.parameters()).device
        rng = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        counts = torch.tensor(repeats)
        windows, present = windows.repeat_interleave(counts, 0), present.repeat_interleave(counts, 0)
        filled = torch.cat([
            self.generator.sample(w.to(device), p.to(device), temperature=temperature, generator=rng)[0].cpu()
            for w, p in zip(windows.split(ROWS_PER_BATCH), present.split(ROWS_PER_BATCH))
        ])
        results, start = [], 0
        for tokens, count in zip(token_lists, repeats):
            rows, start = filled[start : start + count], start + count
            # Target t is window position t + 1 (position 0 is the <eos> boundary).
            results.append([
                " ".join(self.vocab.decode([row[t + 1]])[0] if token == BLANK else token for t, token in enumerate(tokens))
                for row in rows
            ])
        return results

    def _checked_tokens(self, text: str) -> list[str]:
        tokens = self.tokenize(text)
        if BLANK not in tokens:
            raise MaskGANError(f"no blank in {_preview(text)}: mark each word to fill in with {BLANK} (one {BLANK} per word)")
        if len(tokens) > self.seq_len:
            raise MaskGANError(
                f"{_preview(text)} has {len(tokens)} tokens but this model reads at most seq_len={self.seq_len} "
                f"(its window is <eos> + {self.seq_len} tokens): shorten the text or split it into pieces of "
                f"<= {self.seq_len} tokens around each blank"
            )
        return tokens

    def _is_unknown(self, token: str) -> bool:
        return self.vocab.encode([token])[0] == self.vocab.unk_id and token != self.vocab.tokens[self.vocab.unk_id]

    def _windows(self, token_lists: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """windows [N, T+1] (<eos>, the tokens, <eos> padding) and present [N, T] (False at blanks)."""
        T = self.seq_len
        windows = torch.full((len(token_lists), T + 1), self.vocab.eos_id, dtype=torch.long)
        present = torch.ones(len(token_lists), T, dtype=torch.bool)
        for i, tokens in enumerate(token_lists):
            # A blank's id is irrelevant (the model never reads a masked target); <eos> keeps it valid.
            ids = self.vocab.encode([EOS if t == BLANK else t for t in tokens])
            windows[i, 1 : len(ids) + 1] = torch.tensor(ids)
            present[i, : len(tokens)] = torch.tensor([t != BLANK for t in tokens])
        return windows, present


def infill(
    model: Infiller | str | os.PathLike,
    texts: Sequence[str] | str,
    temperature: float = 1.0,
    samples: int = 1,
    seed: Optional[int] = None,
) -> list[list[str]]:
    """Fill the `___` blanks of each text: `samples` versions per text. `model` is an Infiller or a checkpoint path."""
    if not isinstance(model, Infiller):
        model = Infiller.from_checkpoint(model)
    if isinstance(texts, str):  # one text, not a sequence of one-character texts
        texts = [texts]
    return model.fill(texts, temperature=temperature, samples=samples, seed=seed)


def infill_command(args: argparse.Namespace) -> None:
    """`maskgan infill CHECKPOINT [TEXT...] [--file F]`; with neither, one text per line of stdin."""
    texts = _read_texts(args)
    model = Infiller.from_checkpoint(args.checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownWordWarning)
        results = model.fill(texts, temperature=args.temperature, samples=args.samples, seed=args.seed)
    for warning in caught:
        log.warning(f"maskgan infill: warning: {warning.message}")
    for i, filled in enumerate(results):
        if i and args.samples > 1:
            print()  # a blank line between the groups of samples of different texts
        print("\n".join(filled))


def _preview(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.text:
        return list(args.text)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise MaskGANError(f"--file {path}: no such file: give a text file with one text per line")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise MaskGANError(f"--file {path}: not UTF-8 text: give a text file with one text per line") from None
    else:
        if sys.stdin.isatty():
            log.info("maskgan infill: reading texts from stdin, one per line (Ctrl-D to end)")
        lines = sys.stdin.read().splitlines()
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise MaskGANError('no text given: pass "the ___ rose" as an argument, --file FILE, or lines on stdin')
    return texts
