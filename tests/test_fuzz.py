"""Fuzzing the two ways users hand the project input: corpus files and config overrides.

Whatever comes in, the outcome is either success or the project's own MaskGANError with a one-line
message (what the command line prints before exiting with status 2), never another exception.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maskgan_rl.config import Config, DataConfig, flatten, load_config
from maskgan_rl.dataset import WindowDataset, prepare_data
from maskgan_rl.errors import MaskGANError

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_KEYS = sorted(flatten(Config()))


def _succeeds_or_one_line_error(action: Callable[[], object]) -> object | None:
    """The action's result, or None after a MaskGANError whose message is one non-empty line."""
    try:
        return action()
    except MaskGANError as err:
        message = str(err)
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
        return None


# -- corpora -------------------------------------------------------------------------------------

WORDS = st.sampled_from(["the", "cat", "sat", "<unk>", "<eos>", "A", "é", "...", "don't", "___", "<br />"])
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r", "\u2028", ""])


@st.composite
def structured_text(draw: st.DrawFn) -> str:
    """Lines of words, blank lines and odd line ends: what a sentence-per-line corpus may look like."""
    lines = draw(st.lists(st.lists(WORDS, max_size=8).map(" ".join), max_size=12))
    return "".join(line + draw(LINE_ENDS) for line in lines)


@st.composite
def jsonl_text(draw: st.DrawFn) -> str:
    """IMDB-style lines: mostly {"text": ...}, some with other shapes or not JSON at all."""
    review = st.one_of(
        structured_text().map(lambda text: json.dumps({"text": text})),
        st.text(max_size=40).map(lambda text: json.dumps({"text": text, "label": 1}, ensure_ascii=False)),
        st.sampled_from(['{"text": 5}', "[1, 2]", "null", '"just a string"', "{", '{"txt": "x"}', "NaN", ""]),
        st.text(max_size=20),
    )
    return "\n".join(draw(st.lists(review, max_size=8)))


CORPUS_BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    structured_text().map(str.encode),
    jsonl_text().map(str.encode),
)


@FUZZ
@given(
    content=CORPUS_BYTES,
    dataset=st.sampled_from(["text", "imdb"]),
    compression=st.sampled_from(["none", "gzip", "gz-suffix-only", "truncated-gzip"]),
    seq_len=st.integers(2, 4),
    lowercase=st.booleans(),
)
@example(content=b"1" * 5000, dataset="imdb", compression="none", seq_len=2, lowercase=False)  # int too long
@example(content=b"[" * 5000, dataset="imdb", compression="none", seq_len=2, lowercase=False)  # deep nesting
@example(content="\ud800 x".encode("utf-8", "surrogatepass"), dataset="text", compression="none", seq_len=2, lowercase=False)
def test_any_corpus_file_prepares_or_fails_with_a_one_line_error(content, dataset, compression, seq_len, lowercase):
    name = "corpus.jsonl" if dataset == "imdb" else "corpus.txt"
    if compression == "gzip":
        content, name = gzip.compress(content), name + ".gz"
    elif compression == "gz-suffix-only":
        name += ".gz"
    elif compression == "truncated-gzip":
        content, name = gzip.compress(content)[:-5], name + ".gz"
    with tempfile.TemporaryDirectory() as tmp:  # one fresh folder per example (tmp_path is per test)
        corpus = Path(tmp) / name
        corpus.write_bytes(content)
        data = DataConfig(dataset=dataset, train_path=str(corpus), seq_len=seq_len, vocab_size=20, lowercase=lowercase)
        prepared = _succeeds_or_one_line_error(lambda: prepare_data(Config(run_dir=str(Path(tmp) / "run"), data=data)))
        if prepared is not None:
            windows = WindowDataset(prepared.train_path, expect_vocab=prepared.vocab).windows
            assert windows.shape[1] == seq_len + 1 and len(windows) >= 1
            assert windows.min() >= 0 and windows.max() < len(prepared.vocab)


# -- config overrides ----------------------------------------------------------------------------

GARBAGE_KEYS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(VALID_KEYS).map(lambda key: key.upper()),
    st.sampled_from(VALID_KEYS).map(lambda key: key + ".sub"),
    st.sampled_from(VALID_KEYS).map(lambda key: key.replace(".", "..")),
    st.sampled_from(["data", "gan", "model", "", ".", "a[0]", "resources.env_runner_resources.cpu_node"]),
)
VALUES = st.one_of(
    st.integers(-3, 100).map(str),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "", "~", "nan", "-inf", "1e-400", "0x10", "1_000"]),
    st.sampled_from(["reinforce", "ppo", "dqn", "text", "imdb", "random", "blanks", "cpu", "cuda"]),
    st.sampled_from(["[", "]", "{", "{a: 1}", "[1, 2]", ":", "*alias", "&anchor 1", "%x", "@", "`", "!!python/object:os.system"]),
    st.sampled_from(["${seed}", "${nope}", "${oc.env:MASKGAN_FUZZ_UNSET}", "${oc.decode:'[1'}", "${data.seq_len}"]),
    st.text(max_size=12),
)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(VALID_KEYS), VALUES).map("=".join),
    st.tuples(GARBAGE_KEYS, VALUES).map("=".join),
    st.text(max_size=12).filter(lambda item: "=" not in item),
)


@FUZZ
@given(overrides=st.lists(OVERRIDE, max_size=4), preset=st.sampled_from([None, "synthetic", "ptb", "imdb"]))
def test_any_overrides_load_or_fail_with_a_one_line_error(overrides, preset):
    cfg = _succeeds_or_one_line_error(lambda: load_config(preset, overrides))
    if cfg is not None:
        assert isinstance(cfg, Config)
        assert isinstance(cfg.data.seq_len, int) and cfg.data.seq_len >= 2
        assert 0.0 < cfg.mask.present_rate < 1.0 and np.isfinite(cfg.mask.present_rate)


@pytest.mark.parametrize("item", ["seed=[", "seed=*a", "seed=%x", "seed=${nope}", "run_dir=${oc.env:MASKGAN_FUZZ_UNSET}"])
def test_overrides_that_once_escaped_as_tracebacks(item):
    with pytest.raises(MaskGANError, match="seed|run_dir"):
        load_config(None, [item])
