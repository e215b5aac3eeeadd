"""Readers for the real corpora: plain text (PTB style) and IMDB reviews (JSONL).

Both return sentences/reviews as token lists and turn every problem with the file (missing,
binary, not UTF-8, bad gzip, bad JSON, empty) into a one-line DataError naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from pathlib import Path

from maskgan_rl.errors import DataError

# IMDB reviews keep the HTML line breaks of the scraped pages (`<br /><br />`).
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# A word (letters/digits, with inner apostrophes as in "don't") or a single punctuation mark.
_IMDB_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def read_text_corpus(path: str | Path, lowercase: bool = False) -> list[list[str]]:
    """One sentence per non-blank line, split on whitespace; `<unk>` stays a token of its own."""
    lines = _read_text(path).splitlines()
    sentences = [(line.lower() if lowercase else line).split() for line in lines]
    sentences = [s for s in sentences if s]  # a blank line is not a sentence: no stray <eos>
    if not sentences:
        raise DataError(f"{path}: the corpus is empty: give a text file with one sentence per line")
    return sentences


def tokenize_review(text: str) -> list[str]:
    """IMDB tokens: `<br />` removed, lower-cased, punctuation split off ("don't" stays one token)."""
    return _IMDB_TOKEN.findall(_HTML_BREAK.sub(" ", text).lower())


def read_imdb(path: str | Path, max_words: int = 0, max_reviews: int = 0) -> list[list[str]]:
    """The lower-cased tokens of each review's "text" (first `max_words`; 0 = all), in file order.

    `max_reviews` keeps the first reviews of the file (0 = all). Reviews with no words are skipped.
    """
    reviews = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:  # also: integers too long to convert, nesting too deep
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err).splitlines()[0]
            raise DataError(f"{path}: line {number} is not valid JSON ({reason}): fix or remove that line") from None
        if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
            raise DataError(f'{path}: line {number} has no "text" string field: each line must be {{"text": "..."}}')
        tokens = tokenize_review(record["text"])
        if tokens:
            reviews.append(tokens[:max_words] if max_words > 0 else tokens)
        if max_reviews and len(reviews) == max_reviews:
            break
    if not reviews:
        raise DataError(f'{path}: the corpus is empty: give a JSONL file with one {{"text": ...}} review per line')
    return reviews


def source_sha256(path: str | Path) -> str:
    """sha256 of the file as stored: identifies the exact corpus a dataset was built from."""
    return hashlib.sha256(_existing(path).read_bytes()).hexdigest()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found: check data.train_path / valid_path / test_path")
    return path


def _read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text, transparently un-gzipped when the name ends in .gz."""
    path = _existing(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a valid gzip file ({err}): recompress it or drop the .gz suffix") from None
    if b"\0" in data:  # text never holds NUL bytes; binary files almost always do
        raise DataError(f"{path}: looks like a binary file (NUL bytes), not text: give a UTF-8 text corpus")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8: convert the file to UTF-8 text") from None
