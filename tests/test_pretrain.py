"""MLE pretraining on the synthetic oracle: MaskMLE must in-fill better than an untrained generator."""

import logging
import re
import shutil

import numpy as np
import pytest
import torch

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.config import load_config
from maskgan_rl.dataset import WindowDataset
from maskgan_rl.errors import CheckpointError
from maskgan_rl.loading import load_generator
from maskgan_rl.masking import make_present
from maskgan_rl.models import Generator
from maskgan_rl.oracle import OracleLM
from maskgan_rl.train import run_pretraining
from maskgan_rl.vocab import Vocab

TINY = [
    "data.oracle_vocab=200", "data.synthetic_train=2000", "data.synthetic_valid=200", "data.synthetic_test=200",
    "data.seq_len=10", "model.embed=32", "model.hidden=32", "pretrain.lm_steps=150", "pretrain.mle_steps=150",
    "pretrain.lr=1e-2", "pretrain.eval_every=50", "tracking.enabled=false",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    cfg = load_config("synthetic", TINY + [f"run_dir={tmp_path_factory.mktemp('run')}"])
    torch.set_num_threads(1)
    return cfg, run_pretraining(cfg)


def test_checkpoints_record_config_vocabulary_and_perplexity(pretrained):
    cfg, result = pretrained
    for path, key in ((result.lm_path, "language_model"), (result.mle_path, "generator")):
        checkpoint = load_checkpoint(path)
        assert key in checkpoint["models"]
        assert checkpoint["config"]["model"]["hidden"] == 32
        assert len(checkpoint["vocab"]) == 200
    # Uniform guessing over 200 tokens is perplexity 200; both stages must have learned something.
    assert result.lm_valid_perplexity < 150 and result.mle_valid_perplexity < 150


def test_maskmle_infills_beat_an_untrained_generator_and_the_oracle_beats_both(pretrained):
    cfg, result = pretrained
    oracle = OracleLM(cfg.data.oracle_vocab, cfg.data.oracle_hidden, cfg.data.oracle_seed)
    windows = torch.as_tensor(WindowDataset(result.mle_path.parent.parent / "data" / "valid.parquet").windows)
    present = torch.as_tensor(make_present(len(windows), cfg.data.seq_len, cfg.mask, np.random.default_rng(0)))
    trained, _, _ = load_generator(result.mle_path)
    untrained = Generator(cfg.data.oracle_vocab, cfg.model).eval()

    def oracle_nll_of_infills(generator: Generator) -> float:
        with torch.no_grad():
            filled, _ = generator.sample(windows, present, generator=torch.Generator().manual_seed(0))
        return oracle.nll(filled, ~present).mean().item()

    own_samples = oracle.nll(oracle.sample(len(windows), cfg.data.seq_len, torch.Generator().manual_seed(1)), ~present)
    assert own_samples.mean().item() < oracle_nll_of_infills(trained) < oracle_nll_of_infills(untrained)


def test_second_run_loads_instead_of_retraining(pretrained, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    cfg, result = pretrained
    again = run_pretraining(cfg)
    assert "[mle] loaded" in caplog.text
    assert again.mle_valid_perplexity == pytest.approx(result.mle_valid_perplexity)


def test_vocabulary_mismatch_is_a_clear_error(pretrained):
    _, result = pretrained
    with pytest.raises(CheckpointError, match="different vocabulary"):
        load_generator(result.mle_path, Vocab(["<eos>", "<unk>", "other"]))


def test_pretraining_in_bf16_mixed_precision_learns_as_float32_does(pretrained, tmp_path):
    cfg, full = pretrained
    mixed = run_pretraining(load_config("synthetic", TINY + [f"run_dir={tmp_path}", "resources.precision=bf16-mixed"]))
    # The same schedule and seed: bfloat16's rounding moves the result a little, not the learning.
    assert mixed.mle_valid_perplexity != full.mle_valid_perplexity
    assert mixed.lm_valid_perplexity == pytest.approx(full.lm_valid_perplexity, rel=0.1)
    assert mixed.mle_valid_perplexity == pytest.approx(full.mle_valid_perplexity, rel=0.1)
    assert load_checkpoint(mixed.mle_path)["models"]["generator"]["seq2seq.embedding.weight"].dtype == torch.float32


def test_pretraining_keeps_the_weights_of_its_best_validation_perplexity(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    # A learning rate far too high: validation perplexity gets worse after its best point.
    cfg = load_config("synthetic", TINY + [f"run_dir={tmp_path}", "pretrain.mle_steps=100", "pretrain.lr=0.3", "pretrain.eval_every=20"])
    torch.set_num_threads(1)
    result = run_pretraining(cfg)
    seen = [float(x) for x in re.findall(r"\[mle\] \d+/100 .*valid_perplexity=([0-9.e+]+)", caplog.text)]
    checkpoint = load_checkpoint(result.mle_path)
    assert len(seen) == 5 and seen[-1] > min(seen)
    assert checkpoint["metrics"]["valid_perplexity"] == pytest.approx(min(seen), rel=1e-3)
    assert checkpoint["metrics"]["best_step"] == 20 * (seen.index(min(seen)) + 1)


def test_mlflow_run_is_continued_only_with_the_config_it_was_started_with(tmp_path):
    from mlflow.tracking import MlflowClient

    from maskgan_rl.tracking import RUN_ID_FILE, tracking_uri

    run_dir = tmp_path / "run"
    small = [o for o in TINY if o != "tracking.enabled=false"] + [
        f"run_dir={run_dir}", "pretrain.lm_steps=5", "pretrain.mle_steps=5", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    torch.set_num_threads(1)

    def pretrain(*overrides: str) -> str:
        cfg = load_config("synthetic", small + list(overrides))
        run_pretraining(cfg)
        return (run_dir / f"{RUN_ID_FILE}.pretrain").read_text(), cfg

    first, cfg = pretrain()
    again, _ = pretrain()  # the same command run again (after an interruption, say): the same run
    assert again == first
    changed, _ = pretrain("model.hidden=16", "model.embed=16")  # another model: a new run, its own params
    assert changed != first
    client = MlflowClient(tracking_uri(cfg))
    assert client.get_run(changed).data.params["model.hidden"] == "16"
    assert client.get_run(first).data.params["model.hidden"] == "32"
    assert [m.step for m in client.get_metric_history(changed, "mle/valid_perplexity")] == [5]


def test_next_steps_names_the_generator_and_commands_that_run(pretrained, tmp_path, capsys):
    import dataclasses
    import shlex
    import shutil

    from maskgan_rl.cli import main
    from maskgan_rl.train import next_steps

    cfg, result = pretrained
    vocab = Vocab(load_checkpoint(result.mle_path)["vocab"])
    lines = next_steps(cfg, result.mle_path, vocab).splitlines()
    assert lines[0] == f"done: generator in {result.mle_path}" and len(lines) == 2  # no compare, no tracking
    command = shlex.split(lines[1].split(":", 1)[1])
    assert command[:3] == ["maskgan", "infill", str(result.mle_path)]
    capsys.readouterr()
    assert main([*command[1:], "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err  # the example uses the model's own words only
    filled, example = out.split(), command[3].split()
    assert (filled[0], filled[-1], len(filled)) == (example[0], example[-1], len(example)) and "___" not in filled

    final = tmp_path / "maskgan.pt"  # an adversarial result beside its MaskMLE, tracked on a server
    shutil.copy(result.mle_path, final)
    tracked = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=True, tracking_uri="http://mlflow:5000"))
    text = next_steps(tracked, final, vocab)
    assert f"maskgan evaluate {final} {result.mle_path}" in text
    assert "runs and curves: http://mlflow:5000" in text


def test_a_longer_schedule_continues_the_checkpoint_instead_of_redoing_its_steps(tmp_path, caplog):
    # The "MaskMLE trained for the same extra steps" baseline: a 30-step MaskMLE's checkpoints copied
    # into a new run_dir, then pretraining asked for 90 MaskMLE steps trains steps 31-90 only.
    short = ["pretrain.lm_steps=30", "pretrain.eval_every=10"]
    torch.set_num_threads(1)
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    first = run_pretraining(load_config("synthetic", TINY + short + [f"run_dir={tmp_path / 'first'}", "pretrain.mle_steps=30"]))
    run_dir = tmp_path / "extra"
    (run_dir / "checkpoints").mkdir(parents=True)
    for path in (first.lm_path, first.mle_path):
        shutil.copy(path, run_dir / "checkpoints" / path.name)
    caplog.clear()
    extra = run_pretraining(load_config("synthetic", TINY + short + [f"run_dir={run_dir}", "pretrain.mle_steps=90"]))
    out = caplog.text
    assert "[lm] loaded" in out and "continuing" in out and "from step 30 to 90" in out
    # The validation points of steps 10, 20 and 30 would be printed again had the first steps been redone.
    assert "[mle] 90/90" in out and not re.search(r"\[mle\] (10|20|30)/90", out)
    before, after = load_checkpoint(first.mle_path), load_checkpoint(extra.mle_path)
    assert after["steps"] == 90 and after["kind"] == "mle"
    assert all(state["step"] == 90 for state in after["optimizer"]["state"].values())  # Adam went on counting
    # 30 steps leave this MaskMLE far from converged: the continued weights are better and are the ones kept.
    assert after["metrics"]["best_step"] > 30
    assert after["metrics"]["valid_perplexity"] < before["metrics"]["valid_perplexity"]
    weights_before, weights_after = before["models"]["generator"], after["models"]["generator"]
    assert any(not torch.equal(weights_before[k], weights_after[k]) for k in weights_before)
