import gzip
import hashlib
import json

import pytest

from maskgan_rl.corpora import read_imdb, read_text_corpus, source_sha256
from maskgan_rl.errors import DataError

TEXT = " the cat <unk> sat \n\n The Dog ran\n"


def test_text_corpus_keeps_unk_and_skips_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    assert read_text_corpus(path) == [["the", "cat", "<unk>", "sat"], ["The", "Dog", "ran"]]
    assert read_text_corpus(path, lowercase=True)[1] == ["the", "dog", "ran"]


def test_text_corpus_reads_gzip(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(TEXT.encode()))
    assert read_text_corpus(tmp_path / "c.txt.gz") == read_text_corpus(tmp_path / "c.txt")


def _jsonl(texts):
    return "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))


def test_imdb_removes_breaks_lowercases_and_splits_punctuation(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(_jsonl(["Great film!<br /><br />I don't regret it.", "Bad.", "One two three four"]))
    assert read_imdb(path) == [
        ["great", "film", "!", "i", "don't", "regret", "it", "."], ["bad", "."], ["one", "two", "three", "four"],
    ]
    assert read_imdb(path, max_words=3, max_reviews=2) == [["great", "film", "!"], ["bad", "."]]


def test_imdb_reads_gzip(tmp_path):
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(_jsonl(["A<br/>b"]).encode()))
    assert read_imdb(tmp_path / "r.jsonl.gz") == [["a", "b"]]


def test_source_sha256_hashes_the_stored_bytes(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    assert source_sha256(tmp_path / "c.txt") == hashlib.sha256(TEXT.encode()).hexdigest()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"\n  \n", "empty.txt: the corpus is empty"),
        ("bin.txt", b"abc\x00\x01def", "bin.txt: looks like a binary file"),
        ("latin.txt", b"ok\nstill ok\ncaf\xe9\n", "latin.txt: line 3 is not valid UTF-8"),
        ("fake.txt.gz", b"plain text, not gzip", "fake.txt.gz: not a valid gzip file"),
    ],
)
def test_text_corpus_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text_corpus(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt: corpus file not found"):
        read_text_corpus(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="corpus file not found"):
        source_sha256(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "lines, message",
    [
        ('{"text": "fine"}\n{"text": oops}\n', "r.jsonl: line 2 is not valid JSON"),
        ('{"text": "fine"}\n\n["a list"]\n', 'line 3 has no "text" string field'),
        ('{"text": "<br />"}\n', "the corpus is empty"),
    ],
)
def test_imdb_errors(tmp_path, lines, message):
    (tmp_path / "r.jsonl").write_text(lines)
    with pytest.raises(DataError, match=message):
        read_imdb(tmp_path / "r.jsonl")
