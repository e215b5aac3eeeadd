"""The word vocabulary: token <-> id, stored next to the data and inside every checkpoint.

Ids are positions in one token list, so the list alone (as JSON) is the whole vocabulary; its
sha256 fingerprint lets a data file or checkpoint prove it was built with the same ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from maskgan_rl.errors import DataError

EOS = "<eos>"
UNK = "<unk>"
SPECIALS = (EOS, UNK)


class Vocab:
    eos_id = 0
    unk_id = 1

    def __init__(self, tokens: list[str]) -> None:
        if list(tokens[:2]) != list(SPECIALS):
            raise DataError(f"vocabulary must start with {list(SPECIALS)}, got {list(tokens[:2])}: rebuild it")
        self._tokens = list(tokens)
        self._index = {token: i for i, token in enumerate(self._tokens)}
        if len(self._index) != len(self._tokens):
            dupes = sorted(t for t, n in Counter(self._tokens).items() if n > 1)[:5]
            raise DataError(f"vocabulary has duplicate tokens {dupes}: rebuild it")

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], max_size: int, min_freq: int = 1) -> Vocab:
        """Specials first, then the `max_size - 2` most frequent tokens seen at least `min_freq` times.

        Ties are broken alphabetically so the same corpus always gives the same ids.
        """
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in SPECIALS:  # always present, wherever the corpus mentions them
            counts.pop(special, None)
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + ranked[: max(0, max_size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, fingerprint {self.fingerprint()[:12]})"

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self._index.get(token, self.unk_id) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[int(i)] for i in ids]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The token list as JSON: the form used in vocab.json, Parquet metadata and checkpoints."""
        return json.dumps(self._tokens, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str = "vocabulary") -> Vocab:
        try:
            tokens = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg}): rebuild it") from None
        if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise DataError(f"{where}: expected a JSON list of token strings: rebuild it")
        return cls(tokens)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found: run data preparation again or fix the path")
        return cls.from_json(path.read_text(encoding="utf-8"), where=str(path))


def check_vocab(found: Vocab, expected: Vocab, where: str) -> None:
    """Refuse to mix ids from two vocabularies: the same id would mean different words."""
    if found != expected:
        raise DataError(
            f"{where} uses a different vocabulary ({len(found)} tokens, fingerprint {found.fingerprint()[:12]}) "
            f"than expected ({len(expected)} tokens, fingerprint {expected.fingerprint()[:12]}): "
            "rebuild the data (delete <run_dir>/data) or use the checkpoint that matches it"
        )
