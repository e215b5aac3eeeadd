"""Bad input never ends in a traceback: the command line prints one line naming the problem and the
fix, and exits with status 2 (`maskgan_rl.cli.main`, and the installed `maskgan` for a few), or 1 where the
run's own files went bad (a runtime failure, maskgan_rl/errors.py)."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskgan_rl.checkpoint import load_checkpoint, save_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.config import load_config, to_dict
from maskgan_rl.dataset import WindowDataset

MASKGAN = str(Path(sys.executable).with_name("maskgan"))  # the console script of this environment


def tiny(run_dir: Path) -> list[str]:
    """A synthetic run that pretrains in seconds: 30 words, T=8, 8-unit LSTMs, 5 steps per stage."""
    return [
        f"run_dir={run_dir}", "data.seq_len=8", "data.oracle_vocab=30", "data.oracle_hidden=8",
        "data.synthetic_train=200", "data.synthetic_valid=40", "data.synthetic_test=40",
        "model.embed=8", "model.hidden=8", "pretrain.lm_steps=5", "pretrain.mle_steps=5",
        "pretrain.batch_size=16", "pretrain.eval_every=5", "pretrain.eval_batches=1", "tracking.enabled=false",
    ]


def fails(capsys, argv: list[str], *words: str, status: int = 2) -> str:
    """Runs the command line in-process: exit `status` and one line holding every one of `words`."""
    assert main(argv) == status
    message = capsys.readouterr().err.strip().splitlines()[-1]  # warnings, if any, come before it
    assert message.startswith(f"maskgan {argv[0]}: error: "), message
    for word in words:
        assert word in message, (word, message)
    return message


def fails_in_subprocess(argv: list[str], *words: str, cwd: Path) -> str:
    done = subprocess.run([MASKGAN, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"maskgan {argv[0]}: error: "), done.stderr
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A run folder with data and a MaskMLE checkpoint (checkpoints/mle.pt)."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    assert main(["pretrain", *tiny(run_dir)]) == 0
    return run_dir


class Marker:
    """Unpickling this writes a file: proof, if the file appears, that a checkpoint ran code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def untrusted_checkpoints(folder: Path, marker: Path) -> list[Path]:
    """The payload as torch.save writes it, and as a plain (protocol 2) pickle."""
    as_torch, as_pickle = folder / "untrusted.pt", folder / "untrusted-pickle.pt"
    torch.save({"format_version": 1, "config": {}, "vocab": [], "models": {"generator": Marker(marker)}}, as_torch)
    as_pickle.write_bytes(pickle.dumps({"format_version": 1, "models": Marker(marker)}, protocol=2))
    return [as_torch, as_pickle]


# -- corpora -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, dataset, words",
    [
        ("empty.txt", b"", "text", ["empty.txt", "the corpus is empty"]),
        ("blank.txt", b"\n  \n\t\n", "text", ["the corpus is empty"]),
        ("binary.txt", bytes(range(256)) * 4, "text", ["binary file (NUL bytes)"]),
        ("latin1.txt", "café crème\n".encode("latin-1"), "text", ["line 1 is not valid UTF-8"]),
        ("short.txt", b"only four words here\n", "text", ["5 tokens, fewer than one window", "data.seq_len"]),
        ("bad.txt.gz", b"not gzip at all", "text", ["not a valid gzip file"]),
        ("reviews.jsonl", b'{"text": "fine"}\n{"text": "broken\n', "imdb", ["line 2 is not valid JSON"]),
        ("reviews.jsonl.gz", gzip.compress(b'{"text": "fine"}\n[1, 2]\n', mtime=0), "imdb", ['line 2 has no "text" string field']),
        ("huge.jsonl", b'{"text": "x"}\n' + b"9" * 5000 + b"\n", "imdb", ["line 2 is not valid JSON"]),
    ],
)
def test_bad_corpus(capsys, tmp_path, name, content, dataset, words):
    corpus = tmp_path / name
    corpus.write_bytes(content)
    argv = ["prepare", f"run_dir={tmp_path / 'run'}", f"data.dataset={dataset}", f"data.train_path={corpus}"]
    fails(capsys, argv, *words)
    assert not (tmp_path / "run" / "data" / "manifest.json").exists()


def test_missing_and_empty_corpus_through_the_installed_command(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    fails_in_subprocess(["prepare", "data.dataset=text", "data.train_path=empty.txt", "run_dir=run"],
                        "empty.txt: the corpus is empty", cwd=tmp_path)
    fails_in_subprocess(["prepare", "data.dataset=text", "data.train_path=nope.txt", "run_dir=run"],
                        "nope.txt: corpus file not found", cwd=tmp_path)


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.hiden=16", ["unknown key 'model.hiden'", "hidden"]),
        ("gan.iterationz=3", ["unknown key 'gan.iterationz'"]),
        ("model.hidden=big", ["bad value for 'model.hidden'", "big"]),
        ("data.lowercase=[1]", ["bad value for 'data.lowercase'"]),
        ("gan.gamma=1.5", ["gan.gamma=1.5 is out of range", "[0, 1]"]),
        ("seed=-1", ["seed=-1 is out of range"]),
        ("gan.disc_batch_size=0", ["gan.disc_batch_size=0 is out of range"]),
        ("gan.algo=[ppo", ["override 'gan.algo=[ppo'", "not valid YAML"]),
        ("seed=${nope}", ["'seed'", "nope"]),
        ("model.hidden", ["not of the form key=value"]),
    ],
)
def test_bad_config_override(capsys, tmp_path, override, words):
    fails(capsys, ["prepare", f"run_dir={tmp_path}", override], *words)


def test_run_dir_that_cannot_be_written_to(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for command in ("prepare", "pretrain", "train"):
        fails(capsys, [command, f"run_dir={a_file / 'run'}"], f"run_dir={a_file / 'run'}", "cannot write to",
              "choose a folder you can write to")


@pytest.mark.parametrize(
    "yaml_text, words",
    [
        ("data:\n  seq_lenn: 5\n", ["unknown key 'data.seq_lenn'", "seq_len"]),
        ("model:\n  layers: two\n", ["bad value for 'model.layers'"]),
        ("- data\n- model\n", ["expected a mapping of sections", "ListConfig"]),
        ("data: {seq_len: 5\n", ["not valid YAML"]),
        ("gan: *anchor\n", ["not valid YAML"]),
    ],
)
def test_bad_config_file(capsys, tmp_path, yaml_text, words):
    preset = tmp_path / "mine.yaml"
    preset.write_text(yaml_text)
    fails(capsys, ["prepare", "--preset", str(preset), f"run_dir={tmp_path / 'run'}"], str(preset), *words)


# -- checkpoints that do not match what they are used with ---------------------------------------


def fake_gan_checkpoint(run_dir: Path, overrides: list[str], vocab: list[str]) -> Path:
    """An adversarial checkpoint as train.py writes one, trained with `overrides` and `vocab`."""
    cfg = load_config("synthetic", overrides)
    payload = {"kind": "maskgan", "config": to_dict(cfg), "vocab": vocab, "iteration": 1, "models": {}, "trainer": {}}
    return save_checkpoint(run_dir / "checkpoints" / "gan-000001.pt", payload)


def test_resume_refuses_a_checkpoint_of_another_vocabulary_or_model(capsys, tmp_path):
    run_dir = tmp_path / "run"
    oracle_vocab = ["<eos>", "<unk>"] + [f"w{i}" for i in range(2, 30)]
    fake_gan_checkpoint(run_dir, tiny(run_dir), ["<eos>", "<unk>", "the", "cat"])
    # Refused before any pretraining or Ray: the run folder gets no model checkpoint.
    fails(capsys, ["train", "--resume", *tiny(run_dir)], "gan-000001.pt was trained with another vocabulary",
          "4 tokens there, 30 here", "resume with the data it was trained on")
    assert not (run_dir / "checkpoints" / "lm.pt").exists()

    # Another data setting: refused before the run's data are rebuilt for it.
    fake_gan_checkpoint(run_dir, tiny(run_dir), oracle_vocab)
    manifest = (run_dir / "data" / "manifest.json").read_text()
    fails(capsys, ["train", "--resume", *tiny(run_dir), "data.oracle_vocab=60"], "data.oracle_vocab (30 there, 60 here)")
    assert (run_dir / "data" / "manifest.json").read_text() == manifest

    fake_gan_checkpoint(run_dir, [*tiny(run_dir), "model.embed=16", "model.hidden=16", "gan.algo=ppo"], oracle_vocab)
    fails(capsys, ["train", "--resume", *tiny(run_dir)],
          "model.embed (16 there, 8 here)", "model.hidden (16 there, 8 here)", "gan.algo (ppo there, reinforce here)")
    # The discriminator's own shape is part of the trainer state too (gan.disc_*; its regularisation is not).
    fake_gan_checkpoint(run_dir, [*tiny(run_dir), "gan.disc_hidden=16", "gan.disc_layer_norm=true", "gan.disc_weight_decay=0.1"], oracle_vocab)
    message = fails(capsys, ["train", "--resume", *tiny(run_dir)], "gan.disc_hidden (16 there, None here)",
                    "gan.disc_layer_norm (True there, False here)")
    assert "disc_weight_decay" not in message
    fails(capsys, ["train", *tiny(run_dir)], "already holds adversarial checkpoints", "--resume")
    fails(capsys, ["train", "--resume", *tiny(run_dir), "gan.iterations=0"],
          "gan-000001.pt is at iteration 1, past gan.iterations=0", "set gan.iterations=1 or more")


def test_resume_says_which_settings_changed():
    from maskgan_rl.train import _changed_settings

    before = load_config("synthetic", [])
    checkpoint = {"config": to_dict(before)}
    assert _changed_settings(checkpoint, Path("gan-000001.pt"), before) == ""
    after = load_config("synthetic", ["gan.gen_lr=0.003", "gan.iterations=40"])
    assert _changed_settings(checkpoint, Path("gan-000001.pt"), after) == ", with gan.iterations 20 -> 40, gan.gen_lr 0.0005 -> 0.003"


def test_evaluate_refuses_data_of_another_vocabulary(capsys, tmp_path, pretrained):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat .\n" * 40)
    fails(capsys, ["evaluate", str(pretrained / "checkpoints" / "mle.pt"), "data.dataset=text",
                   f"data.train_path={corpus}", f"run_dir={tmp_path / 'other'}", "--out", str(tmp_path / "eval")],
          "was trained with a different vocabulary (30 tokens", "than the data (8 tokens")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--samples", "0"], ["--samples 0", "at least 2"]),
        (["--temperatures", "hot"], ["--temperatures 'hot'"]),
        (["--seeds", "0,x"], ["--seeds '0,x'", "comma-separated ints"]),
        (["--seeds", "1,1"], ["--seeds [1, 1]", "different seeds"]),
        (["--two-sample-steps", "-1"], ["--two-sample-steps -1", "give 0"]),
        (["--baseline", "MaskGAN"], ["--baseline 'MaskGAN' names no model", "MaskMLE"]),
        (["model.hiden=3"], ["override 'model.hiden=3'", "unknown key"]),
        (["data.seq_len=["], ["not valid YAML"]),
    ],
)
def test_evaluate_bad_options(capsys, tmp_path, pretrained, argv, words):
    fails(capsys, ["evaluate", str(pretrained / "checkpoints" / "mle.pt"), *argv, "--out", str(tmp_path)], *words)


# -- infill --------------------------------------------------------------------------------------


def test_infill_refuses_more_tokens_than_the_model_reads(capsys, pretrained):
    mle = str(pretrained / "checkpoints" / "mle.pt")
    fails(capsys, ["infill", mle, "w2 " * 6 + "___ ___ ___"], "has 9 tokens", "at most seq_len=8", "shorten the text")
    fails(capsys, ["infill", mle, "w2 w3 w4"], "no blank")


def test_infill_bad_files_and_checkpoints(capsys, tmp_path, pretrained):
    mle = pretrained / "checkpoints" / "mle.pt"
    texts = tmp_path / "texts.bin"
    texts.write_bytes(b"w2 \xff\xfe ___\n")
    fails(capsys, ["infill", str(mle), "--file", str(texts)], "not UTF-8 text")
    fails(capsys, ["infill", str(pretrained / "checkpoints" / "lm.pt"), "w2 ___"], "holds no generator")

    payload = load_checkpoint(mle)
    del payload["format_version"]
    without_vocab = save_checkpoint(tmp_path / "no-vocab.pt", {k: v for k, v in payload.items() if k != "vocab"})
    fails(capsys, ["infill", str(without_vocab), "w2 ___"], "holds no vocab")
    resized = dict(payload, config={**payload["config"], "model": {**payload["config"]["model"], "hidden": 16, "embed": 16}})
    fails(capsys, ["infill", str(save_checkpoint(tmp_path / "resized.pt", resized)), "w2 ___"],
          "generator weights do not fit its own config", "size mismatch")
    foreign = dict(payload, config={**payload["config"], "gan": {**payload["config"]["gan"], "warp_drive": 1}})
    fails(capsys, ["infill", str(save_checkpoint(tmp_path / "foreign.pt", foreign)), "w2 ___"],
          "foreign.pt", "unknown key 'gan.warp_drive'", "another version of maskgan-rl")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(mle.read_bytes()[:200])
    fails(capsys, ["infill", str(truncated), "w2 ___"], "truncated or corrupt")


# -- untrusted checkpoints -----------------------------------------------------------------------


def test_the_marker_payload_does_run_code_when_unpickled_unsafely(tmp_path):
    """So that the tests below, where the marker never appears, prove something."""
    marker = tmp_path / "ran"
    as_torch, as_pickle = untrusted_checkpoints(tmp_path, marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(as_torch)!r}, weights_only=False)"], check=True)
    assert marker.read_text() == "pwned"
    marker.unlink()
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(as_pickle)!r}, 'rb').read())"], check=True)
    assert marker.read_text() == "pwned"


def test_untrusted_checkpoints_are_refused_without_running_their_code(capsys, tmp_path, pretrained):
    marker = tmp_path / "ran"
    as_torch, as_pickle = untrusted_checkpoints(tmp_path, marker)
    fails_in_subprocess(["infill", str(as_torch), "w2 ___"], "contains pickled Python objects (exec)",
                        "never loaded", cwd=tmp_path)
    fails(capsys, ["infill", str(as_pickle), "w2 ___"], "cannot be read")
    fails(capsys, ["evaluate", str(as_torch), "--out", str(tmp_path / "eval")], "pickled Python objects")
    fails(capsys, ["evaluate", str(pretrained / "checkpoints" / "mle.pt"), str(as_pickle), "--out", str(tmp_path / "eval")],
          "cannot be read")

    # Dropped into a run folder as its only adversarial checkpoint: skipped with a warning, and
    # --resume refuses to start over on top of it.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "gan-000003.pt").write_bytes(as_torch.read_bytes())
    with pytest.warns(UserWarning, match="gan-000003.pt cannot be read: it contains pickled Python objects"):
        fails(capsys, ["train", "--resume", *tiny(run_dir)], "no adversarial checkpoint", "can be read (gan-000003.pt)", status=1)
    assert not marker.exists()


def test_overrides_may_come_before_between_and_after_options(capsys, tmp_path):
    run_dir = tmp_path / "run"
    settings = tiny(run_dir)  # run_dir and data.seq_len=8 before --preset, the rest after it
    assert main(["prepare", *settings[:2], "--preset", "synthetic", *settings[2:]]) == 0
    windows = WindowDataset(run_dir / "data" / "train.parquet")
    assert windows.seq_len == 8 and len(windows) == 200
    for stray in ("stray", "--stray"):  # after an option: neither is taken for an override
        with pytest.raises(SystemExit):
            main(["prepare", *settings, "--preset", "synthetic", stray])
        assert f"unrecognized arguments: {stray}" in capsys.readouterr().err
    fails(capsys, ["prepare", "stray", *settings], "override 'stray'")


def test_json_vocabulary_file_that_is_not_a_list(capsys, tmp_path):
    """A damaged data folder: prepare_data reuses it only while its manifest matches; vocab.json is checked."""
    run_dir = tmp_path / "run"
    assert main(["prepare", *tiny(run_dir)]) == 0
    (run_dir / "data" / "vocab.json").write_text(json.dumps({"not": "a list"}))
    fails(capsys, ["prepare", *tiny(run_dir)], "vocab.json: expected a JSON list of token strings")
