import pytest

from maskgan_rl.errors import DataError
from maskgan_rl.vocab import Vocab, check_vocab

CORPUS = [["b", "a", "c", "a"], ["c", "a", "<unk>", "d"]]  # a:3 c:2 b:1 d:1, <unk> is a special


def test_build_orders_specials_then_frequency_then_alphabet():
    assert Vocab.build(CORPUS, max_size=100).tokens == ["<eos>", "<unk>", "a", "c", "b", "d"]


def test_build_applies_size_cap_and_min_freq():
    assert Vocab.build(CORPUS, max_size=4).tokens == ["<eos>", "<unk>", "a", "c"]
    assert Vocab.build(CORPUS, max_size=100, min_freq=2).tokens == ["<eos>", "<unk>", "a", "c"]


def test_encode_decode_and_unknown_words():
    vocab = Vocab.build(CORPUS, max_size=4)
    assert (vocab.eos_id, vocab.unk_id, len(vocab)) == (0, 1, 4)
    assert vocab.encode(["a", "b", "c", "<eos>", "zebra", "<unk>"]) == [2, 1, 3, 0, 1, 1]
    assert vocab.decode([3, 2, 0]) == ["c", "a", "<eos>"]


def test_json_save_load_round_trip(tmp_path):
    vocab = Vocab.build(CORPUS, max_size=100)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    assert Vocab.from_json(vocab.to_json()).tokens == vocab.tokens


def test_fingerprint_changes_with_order():
    assert Vocab(["<eos>", "<unk>", "a", "b"]).fingerprint() != Vocab(["<eos>", "<unk>", "b", "a"]).fingerprint()


@pytest.mark.parametrize("tokens", [["a", "<eos>", "<unk>"], ["<eos>", "<unk>", "a", "a"]])
def test_rejects_malformed_token_lists(tokens):
    with pytest.raises(DataError, match="rebuild"):
        Vocab(tokens)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Vocab.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        Vocab.load(tmp_path / "bad.json")
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="list of token strings"):
        Vocab.load(tmp_path / "dict.json")


def test_check_vocab():
    vocab = Vocab.build(CORPUS, max_size=100)
    check_vocab(Vocab(vocab.tokens), vocab, where="x")
    with pytest.raises(DataError, match="train.parquet uses a different vocabulary"):
        check_vocab(Vocab.build(CORPUS, max_size=4), vocab, where="train.parquet")
