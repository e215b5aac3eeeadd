"""In-filling for people: text -> window rules, the Python API and `maskgan infill`."""

import io

import pytest
import torch

from maskgan_rl.cli import main
from maskgan_rl.config import DataConfig, ModelConfig
from maskgan_rl.errors import CheckpointError, MaskGANError
from maskgan_rl.infill import Infiller, UnknownWordWarning, infill
from maskgan_rl.models import Generator
from maskgan_rl.vocab import Vocab

VOCAB = Vocab(["<eos>", "<unk>", "the", "stock", "rose", "sharply", "in", "early", "trading", "."])
T = 6


class RecordingGenerator(Generator):
    """A real (untrained) generator whose output bias makes it fill every blank with `fill_id`, and
    which remembers the last batch it was given and the passes it made."""

    def __init__(self, fill_id: int):
        super().__init__(len(VOCAB), ModelConfig(embed=4, hidden=4))
        with torch.no_grad():
            self.head.bias[fill_id] = 100.0
        self.calls = []  # (rows, temperature, seeded) of every pass

    def sample(self, windows, present, temperature=1.0, generator=None):
        self.windows, self.present, self.temperature = windows, present, temperature
        self.calls.append((len(windows), temperature, generator is not None))
        return super().sample(windows, present, temperature, generator)


def recording(fill_id: int = 3, **data) -> Infiller:
    return Infiller(RecordingGenerator(fill_id), VOCAB, DataConfig(seq_len=T, **data))


def test_window_starts_with_eos_and_pads_short_text_with_observed_eos():
    model = recording()
    assert model.fill(["the ___ rose"], temperature=0.5) == [["the stock rose"]]
    g = model.generator
    # <eos>, the, (blank: any id, <eos>), rose, then <eos> padding up to T + 1 = 7 tokens.
    assert g.windows.tolist() == [[0, 2, 0, 4, 0, 0, 0]]
    # Targets are w[1:]: only target 1 ("___") is masked; the padding is observed.
    assert g.present.tolist() == [[True, False, True, True, True, True]]
    assert g.temperature == 0.5


def test_each_blank_is_one_token_and_any_run_of_underscores_is_a_blank():
    model = recording(fill_id=8)
    assert model.tokenize("the ___ _____ rose") == ["the", "___", "___", "rose"]
    assert model.fill(["___ ___ rose"]) == [["trading trading rose"]]
    assert model.generator.present.tolist() == [[False, False, True, True, True, True]]


def test_samples_are_grouped_per_text():
    model = recording()
    result = model.fill(["the ___", "___ rose ."], samples=3)
    assert result == [["the stock"] * 3, ["stock rose ."] * 3]
    assert model.generator.windows.shape == (6, T + 1)


def test_text_of_exactly_seq_len_tokens_fits_and_one_more_is_a_clear_error():
    model = recording()
    assert model.fill(["the stock rose ___ in trading"]) == [["the stock rose stock in trading"]]
    with pytest.raises(MaskGANError, match=r"7 tokens .* at most seq_len=6"):
        model.fill(["the stock rose ___ in early trading"])


def test_text_without_blank_and_bad_settings_are_errors():
    model = recording()
    with pytest.raises(MaskGANError, match="no blank"):
        model.fill(["the stock rose"])
    with pytest.raises(MaskGANError, match="temperature"):
        model.fill(["the ___"], temperature=0.0)
    with pytest.raises(MaskGANError, match="samples"):
        model.fill(["the ___"], samples=0)
    with pytest.raises(MaskGANError, match="finite"):
        model.fill(["the ___"], temperature=float("nan"))
    for seed in (-1, 2**64):
        with pytest.raises(MaskGANError, match=r"seed=.* \[0, 2\*\*63\)"):
            model.fill(["the ___"], seed=seed)


def test_many_samples_are_drawn_in_batches_and_stay_grouped_per_text(monkeypatch):
    monkeypatch.setattr("maskgan_rl.infill.ROWS_PER_BATCH", 4)
    model = recording()
    result = model.fill(["the ___", "___ rose ."], samples=5)
    assert result == [["the stock"] * 5, ["stock rose ."] * 5]
    assert model.generator.windows.shape == (2, T + 1)  # the last of three batches: 4 + 4 + 2 rows


def test_batched_requests_share_passes_only_without_a_seed_and_at_one_temperature():
    model = recording()
    unseeded = [model.request(["the ___", "___ rose ."], temperature=0.5, samples=2), model.request(["___ rose"], temperature=0.5, samples=3)]
    hotter = model.request(["the ___"], temperature=1.0)
    seeded = model.request(["the ___"], temperature=0.5, seed=1)
    results = model.fill_requests([*unseeded, hotter, seeded])
    assert results == [[["the stock"] * 2, ["stock rose ."] * 2], [["stock rose"] * 3], [["the stock"]], [["the stock"]]]
    # 2 texts x 2 samples + 1 text x 3 samples in one pass; the other temperature and the seed alone.
    assert model.generator.calls == [(7, 0.5, False), (1, 1.0, False), (1, 0.5, True)]


def test_unknown_words_become_unk_with_a_warning_and_are_kept_in_the_output():
    model = recording()
    with pytest.warns(UnknownWordWarning, match="Shares"):
        result = model.fill(["Shares ___ sharply"])
    assert model.generator.windows[0, 1].item() == VOCAB.unk_id
    assert result == [["Shares stock sharply"]]


def test_tokenization_follows_the_training_corpus():
    assert recording(lowercase=True).tokenize("The ___ Rose") == ["the", "___", "rose"]
    assert recording().tokenize("The ___ Rose") == ["The", "___", "Rose"]
    # IMDB reviews were lower-cased with punctuation split off.
    assert recording(dataset="imdb", train_path="x").tokenize("Great ___, really.") == ["great", "___", ",", "really", "."]


# ------------------------------- with a real (untrained) generator: conftest's tiny_checkpoint, same 10 words, T = 6


def test_api_on_a_checkpoint_is_reproducible_with_a_seed(tiny_checkpoint):
    first = infill(tiny_checkpoint, ["the ___ ___ sharply", "___ trading"], samples=4, seed=7)
    again = infill(Infiller.from_checkpoint(tiny_checkpoint), ["the ___ ___ sharply", "___ trading"], samples=4, seed=7)
    assert first == again
    for text in first[0]:
        words = text.split()
        assert len(words) == 4 and words[0] == "the" and words[3] == "sharply"
        assert all(w in VOCAB.tokens for w in words[1:3])
    assert infill(tiny_checkpoint, "the ___", seed=1)[0][0].startswith("the ")  # one string is one text


def test_cli_reads_arguments_file_and_stdin(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    assert main(["infill", str(tiny_checkpoint), "the ___ rose", "--seed", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("the ") and line.endswith(" rose") and len(line.split()) == 3

    texts = tmp_path / "texts.txt"
    texts.write_text("the ___\n\n___ rose\n")
    assert main(["infill", str(tiny_checkpoint), "--file", str(texts), "--samples", "2", "--seed", "3"]) == 0
    groups = capsys.readouterr().out.strip().split("\n\n")
    assert [len(g.splitlines()) for g in groups] == [2, 2]

    monkeypatch.setattr("sys.stdin", io.StringIO("stock ___ Nasdaq\n"))
    assert main(["infill", str(tiny_checkpoint), "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("stock ") and captured.out.strip().endswith("Nasdaq")
    assert "warning" in captured.err and "Nasdaq" in captured.err


def test_cli_takes_texts_before_between_and_after_options(tiny_checkpoint, capsys):
    assert main(["infill", str(tiny_checkpoint), "the ___", "--seed", "3", "___ rose", "--samples", "2", "stock ___"]) == 0
    groups = capsys.readouterr().out.strip().split("\n\n")
    assert [len(g.splitlines()) for g in groups] == [2, 2, 2]
    assert groups[1].splitlines()[0].endswith(" rose") and groups[2].startswith("stock ")


def test_cli_reports_too_long_text_in_one_line(tiny_checkpoint, capsys):
    assert main(["infill", str(tiny_checkpoint), "a b c d e f ___"]) == 2
    err = capsys.readouterr().err
    assert "at most seq_len=6" in err and len(err.strip().splitlines()) == 1


def test_a_seeded_request_gets_the_same_fills_whatever_it_is_batched_with(tiny_checkpoint):
    model = Infiller.from_checkpoint(tiny_checkpoint)
    alone = model.fill(["the ___ ___ sharply"], temperature=1.3, samples=5, seed=11)
    assert len(set(alone[0])) > 1  # the samples differ, so a shared stream of randomness would show
    seeded = model.request(["the ___ ___ sharply"], temperature=1.3, samples=5, seed=11)
    others = [
        model.request(["___ trading", "the ___ ___ sharply"], temperature=1.3, samples=4),
        model.request(["the ___ ___ sharply"], temperature=1.3, samples=5, seed=12),
    ]
    assert model.fill_requests([*others, seeded])[2] == alone
    assert model.fill_requests([seeded, *others])[0] == alone
    assert model.fill_requests([seeded, seeded]) == [alone, alone]


def test_a_checkpoint_whose_config_this_version_cannot_read_is_one_line_naming_it(tiny_checkpoint, tmp_path, capsys):
    from maskgan_rl.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    checkpoint["config"]["data"]["retired_option"] = 1  # a key this version does not know
    old = tmp_path / "old.pt"
    save_checkpoint(old, checkpoint)
    with pytest.raises(CheckpointError) as raised:
        Infiller.from_checkpoint(old)
    assert str(old) in str(raised.value) and "retired_option" in str(raised.value)
    assert main(["infill", str(old), "the ___"]) == 2
    err = capsys.readouterr().err
    assert str(old) in err and len(err.strip().splitlines()) == 1
