import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maskgan_rl import dataset
from maskgan_rl.config import Config, DataConfig, MaskConfig
from maskgan_rl.dataset import WindowDataset, prepare_data, write_windows
from maskgan_rl.errors import DataError
from maskgan_rl.vocab import Vocab

VOCAB = Vocab(["<eos>", "<unk>", "a", "b", "c"])


def _text_config(tmp_path, corpus, **data):
    (tmp_path / "train.txt").write_text(corpus)
    data = DataConfig(dataset="text", train_path=str(tmp_path / "train.txt"), **data)
    return Config(run_dir=str(tmp_path / "run"), data=data)


def test_parquet_round_trip_with_metadata(tmp_path):
    windows = np.array([[0, 2, 3], [3, 4, 2], [2, 2, 1]])
    write_windows(tmp_path / "w.parquet", windows, VOCAB, {"dataset": "test"})
    schema = pq.read_schema(tmp_path / "w.parquet")
    assert schema.field("window").type == pa.list_(pa.int32(), 3)
    assert json.loads(schema.metadata[b"vocab"]) == VOCAB.tokens and schema.metadata[b"seq_len"] == b"2"
    ds = WindowDataset(tmp_path / "w.parquet", expect_vocab=VOCAB)
    assert ds.windows.dtype == np.int64 and np.array_equal(ds.windows, windows)
    assert (len(ds), ds.seq_len, ds.vocab, ds.provenance) == (3, 2, VOCAB, {"dataset": "test"})
    batch = ds.sample(10, np.random.default_rng(0))
    assert batch.shape == (10, 3) and all(any((row == w).all() for w in windows) for row in batch)


def test_window_file_is_read_memory_mapped(tmp_path, monkeypatch):
    write_windows(tmp_path / "w.parquet", np.array([[0, 2, 3]]), VOCAB, {})
    opened = []
    real_memory_map = pa.memory_map
    monkeypatch.setattr(dataset.pa, "memory_map", lambda path: opened.append(path) or real_memory_map(path))
    WindowDataset(tmp_path / "w.parquet")
    assert opened == [str(tmp_path / "w.parquet")]


def test_text_windows_have_stride_t_and_valid_is_held_out(tmp_path):
    # 20 sentences of 3 words + <eos>: a stream of 80 tokens -> (80 - 1) // 4 = 19 windows of 5.
    corpus = "".join(f"a b {'c' if i % 2 else 'd'}\n" for i in range(20))
    prepared = prepare_data(_text_config(tmp_path, corpus, seq_len=4, vocab_size=4))
    assert prepared.vocab.tokens == ["<eos>", "<unk>", "a", "b"]  # c and d (10 each) did not fit
    assert prepared.counts == {"vocab_size": 4, "train_tokens": 80, "train_windows": 18, "valid_windows": 1}
    assert prepared.test_path is None
    train = WindowDataset(prepared.train_path, expect_vocab=prepared.vocab).windows
    valid = WindowDataset(prepared.valid_path).windows
    windows = np.concatenate([train, valid])
    assert np.array_equal(windows[1:, 0], windows[:-1, 4])  # consecutive: stride T
    stream = np.concatenate([windows[:, :4].ravel(), windows[-1:, 4]])
    assert np.array_equal(stream[:8], [2, 3, 1, 0, 2, 3, 1, 0])
    assert Vocab.load(tmp_path / "run" / "data" / "vocab.json") == prepared.vocab
    assert WindowDataset(prepared.train_path).provenance["counts"] == {"tokens": 80, "windows": 18, "vocab_size": 4}


def test_prepare_reuses_files_until_data_or_source_changes(tmp_path):
    cfg = _text_config(tmp_path, "a b c\n" * 30, seq_len=4)
    first = prepare_data(cfg)
    stamp = first.train_path.stat().st_mtime_ns
    cfg.mask = MaskConfig("random", 0.3)  # masking is not part of the data files
    assert prepare_data(cfg).counts == first.counts and first.train_path.stat().st_mtime_ns == stamp
    (tmp_path / "train.txt").write_text("a b c\n" * 40)
    assert prepare_data(cfg).counts["train_tokens"] == 160
    cfg.data.seq_len = 5
    assert WindowDataset(prepare_data(cfg).train_path).seq_len == 5
    assert not list((tmp_path / "run" / "data").glob(".*.tmp"))


def test_imdb_windows_are_review_prefixes_padded_with_eos(tmp_path):
    reviews = ["A b c d e f.", "b<br />a", "c"] + ["a"] * 17
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in reviews))
    (tmp_path / "v.jsonl").write_text(json.dumps({"text": "b b"}) + "\n")
    cfg = Config(run_dir=str(tmp_path / "run"), data=DataConfig(
        dataset="imdb", train_path=str(tmp_path / "r.jsonl"), valid_path=str(tmp_path / "v.jsonl"), seq_len=3))
    prepared = prepare_data(cfg)
    decoded = {tuple(prepared.vocab.decode(w)) for w in WindowDataset(prepared.train_path).windows}
    assert decoded == {("a", "b", "c", "d"), ("b", "a", "<eos>", "<eos>"), ("c", "<eos>", "<eos>", "<eos>"),
                       ("a", "<eos>", "<eos>", "<eos>")}
    assert prepared.counts["train_tokens"] == 4 + 2 + 1 + 17 and prepared.counts["valid_windows"] == 1


def test_synthetic_data_is_deterministic_oracle_samples(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    data = DataConfig(
        seq_len=6, oracle_vocab=20, oracle_hidden=4, synthetic_train=30, synthetic_valid=5, synthetic_test=4
    )
    first = prepare_data(Config(run_dir=str(tmp_path / "one"), data=data))
    assert "[data] 39/39 " in caplog.text  # sampling shows progress over all three splits
    second = prepare_data(Config(run_dir=str(tmp_path / "two"), data=data))
    windows = WindowDataset(first.train_path).windows
    assert windows.shape == (30, 7) and (windows[:, 0] == 0).all()
    assert np.array_equal(windows, WindowDataset(second.train_path).windows)
    assert first.counts == {"vocab_size": 20, "train_windows": 30, "train_tokens": 180, "valid_windows": 5,
                            "valid_tokens": 30, "test_windows": 4, "test_tokens": 24}
    assert len(first.vocab) == 20 and first.vocab.tokens[2] == "w2"


def test_corpus_shorter_than_one_window(tmp_path):
    with pytest.raises(DataError, match="train.txt: 4 tokens, fewer than one window"):
        prepare_data(_text_config(tmp_path, "a b c\n", seq_len=20))


def test_too_few_windows_to_hold_out_validation(tmp_path):
    with pytest.raises(DataError, match="too few to hold out validation: give data.valid_path"):
        prepare_data(_text_config(tmp_path, "a b c d e\n", seq_len=4))


def test_vocab_mismatch(tmp_path):
    write_windows(tmp_path / "w.parquet", np.array([[0, 2, 3]]), VOCAB, {})
    with pytest.raises(DataError, match="w.parquet uses a different vocabulary"):
        WindowDataset(tmp_path / "w.parquet", expect_vocab=Vocab(["<eos>", "<unk>", "a", "b", "z"]))


def test_unreadable_window_files(tmp_path):
    with pytest.raises(DataError, match="window file not found"):
        WindowDataset(tmp_path / "missing.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="text.parquet: not a readable Parquet file"):
        WindowDataset(tmp_path / "text.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    with pytest.raises(DataError, match="other.parquet: not a window file"):
        WindowDataset(tmp_path / "other.parquet")
    write_windows(tmp_path / "ids.parquet", np.array([[0, 2, 7]]), VOCAB, {})
    with pytest.raises(DataError, match="ids outside its vocabulary"):
        WindowDataset(tmp_path / "ids.parquet")
