"""Evaluation: each metric on hand-computed tiny cases, then the whole `maskgan evaluate` pipeline on
a tiny synthetic run (two MaskMLE checkpoints, two temperatures)."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.config import ModelConfig, load_config
from maskgan_rl.dataset import WindowDataset, prepare_data, write_windows
from maskgan_rl.evaluate import (
    _md_cell,
    discriminator_metrics,
    evaluate_during_training,
    fill_windows,
    lm_perplexity,
    masked_perplexity,
    ngram_metrics,
    oracle_nll,
    render,
)
from maskgan_rl.fitting import lm_loss, load_or_train
from maskgan_rl.loading import load_infiller
from maskgan_rl.masking import make_present, mask_context
from maskgan_rl.metrics import bleu, self_bleu
from maskgan_rl.models import Discriminator, Generator, LanguageModel
from maskgan_rl.oracle import OracleLM
from maskgan_rl.plots import plot_quality_diversity
from maskgan_rl.tracking import Tracker
from maskgan_rl.verdict import at_matched_diversity
from maskgan_rl.train import run_pretraining
from maskgan_rl.vocab import Vocab

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOCAB = Vocab(["<eos>", "<unk>", "a", "b"])


def context_free(head: torch.nn.Linear, probs: list[float]) -> None:
    """Make a vocabulary head ignore its input: logits = log(probs) whatever the context."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.log(torch.tensor(probs)))


# ---------------------------------------------------------------- metrics on models


def test_lm_perplexity_of_a_context_free_lm():
    lm = LanguageModel(3, ModelConfig(embed=4, hidden=4, tie_weights=False))
    context_free(lm.head, [0.5, 0.25, 0.25])
    windows = np.array([[0, 1, 2], [0, 0, 0]])
    # Targets 1, 2, 0, 0: NLL log 4 + log 4 + log 2 + log 2 = 6 log 2 over 4 tokens -> 2 ** 1.5.
    assert lm_perplexity(lm, windows) == pytest.approx(2**1.5, rel=1e-5)


def test_masked_perplexity_counts_every_held_out_window(tmp_path):
    generator = Generator(4, ModelConfig(embed=4, hidden=4, tie_weights=False))
    context_free(generator.head, [0.5, 0.2, 0.2, 0.1])
    path = tmp_path / "valid.parquet"
    # 5 windows > one batch of 2: all of them are scored. Every mask hides 2 targets; the targets of
    # windows 0-3 are all "a" (p = 0.2), those of the last one all "b" (p = 0.1), so whichever targets
    # the masks pick: exp((8 log 5 + 2 log 10) / 10). The first batch alone would give 5.
    windows = np.full((5, 7), 2)
    windows[4, 1:] = 3
    write_windows(path, windows, VOCAB, {"test": True})
    cfg = load_config("synthetic", ["data.seq_len=6", "pretrain.batch_size=2", "pretrain.eval_batches=1"])
    assert masked_perplexity(generator, WindowDataset(path), cfg) == pytest.approx(5**0.8 * 10**0.2, rel=1e-5)


def test_oracle_nll_weighs_every_masked_token_equally():
    oracle = OracleLM(vocab_size=4, hidden=2, seed=0)
    context_free(oracle.output, [0.1, 0.2, 0.3, 0.4])
    windows = np.array([[0, 2, 3], [0, 3, 3], [0, 1, 1]])
    present = np.array([[True, False], [False, False], [True, True]])  # row 3 has nothing masked
    # Masked tokens: 3 (p .4) in row 1, 3 and 3 in row 2 -> -log .4; row 3 adds nothing (and no NaN).
    assert oracle_nll(oracle, windows, present) == pytest.approx(-math.log(0.4), rel=1e-5)
    # Row 1 masks token 2 (p .3), row 2 two tokens 3 (p .4): a token-weighted mean, not a mean of row means.
    present = np.array([[False, True], [False, False], [True, True]])
    expected = (-math.log(0.3) - 2 * math.log(0.4)) / 3
    assert oracle_nll(oracle, windows, present) == pytest.approx(expected, rel=1e-5)


class TokenIsTwo(torch.nn.Module):
    """A discriminator that calls a token real exactly when it is token 2 (logit +1, else -1)."""

    missing_id = 4

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 1)  # where discriminator_metrics looks for the device

    def forward(self, context, filled):
        return torch.where(filled[:, 1:] == 2, 1.0, -1.0)


def test_discriminator_metrics_on_a_hand_computed_case():
    oracle = OracleLM(vocab_size=4, hidden=2, seed=0)
    context_free(oracle.output, [0.1, 0.2, 0.3, 0.4])
    windows = np.array([[0, 2, 2, 3], [0, 3, 2, 2]])
    present = np.array([[True, False, False], [False, False, True]])
    filled = np.array([[0, 2, 3, 1], [0, 2, 3, 2]])
    # Masked real tokens 2 3 | 3 2: D right on the two 2s. Fakes 3 1 | 2 3: right on all but the 2.
    # The present tokens (2 in both rows) would be right for real and wrong for fake: they must not count.
    metrics = discriminator_metrics(TokenIsTwo(), windows, present, filled, oracle)
    assert metrics["disc_heldout_accuracy"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    low, high = math.log(torch.sigmoid(torch.tensor(-1.0)).item() + 1e-7), math.log(torch.sigmoid(torch.tensor(1.0)).item() + 1e-7)
    rewards, oracle_log_probs = [low, low, high, low], np.log([0.4, 0.2, 0.3, 0.4])
    assert metrics["reward_oracle_corr"] == pytest.approx(np.corrcoef(rewards, oracle_log_probs)[0, 1], abs=1e-5)
    assert "reward_oracle_corr" not in discriminator_metrics(TokenIsTwo(), windows, present, filled, None)
    assert "disc_optimal_corr" not in metrics  # no generator given: what D could know is unknown

    # A generator uniform over the 4 tokens at T=1 (at T=0.5 too: uniform stays uniform): the optimal
    # logit is log(p_oracle / 0.25), positive for tokens 2 and 3 only. Real 2 3 | 3 2 all called real;
    # fakes 3 1 | 2 3: only the 1 called fake.
    generator = Generator(4, ModelConfig(embed=2, hidden=2, tie_weights=False)).eval()
    context_free(generator.head, [0.25] * 4)
    for temperature in (1.0, 0.5):
        metrics = discriminator_metrics(TokenIsTwo(), windows, present, filled, oracle, generator, temperature)
        assert metrics["optimal_disc_accuracy"] == pytest.approx((4 / 4 + 1 / 4) / 2)
        d_logits, optimal_logits = [-1, -1, 1, -1], np.log(np.array([0.4, 0.2, 0.3, 0.4]) / 0.25)
        assert metrics["disc_optimal_corr"] == pytest.approx(np.corrcoef(d_logits, optimal_logits)[0, 1], abs=1e-5)


def test_ngram_metrics_score_the_targets_only():
    # Targets b a b a (w[0] = <eos> is not generated): bigrams ba ab ba -> 2 of 3 unique;
    # trigrams bab aba -> all unique; the one quadgram -> unique.
    metrics = ngram_metrics(np.array([[0, 3, 2, 3, 2]]))
    assert metrics == pytest.approx({"unique_2grams": 200 / 3, "unique_3grams": 100.0, "unique_4grams": 100.0})


def test_render_and_markdown_escaping():
    window, present = np.array([0, 2, 3, 2]), np.array([True, False, True])
    assert render(VOCAB, window, present, blank=True) == "<eos> a ___ a"
    assert render(VOCAB, window, present) == "<eos> a [b] a"
    assert _md_cell("<eos> ___ |") == r"&lt;eos> \_\_\_ \|"
    assert _md_cell(1 / 3) == "0.3333"


# ---------------------------------------------------------------- pipeline on a tiny synthetic run

TINY = [
    "data.oracle_vocab=40", "data.synthetic_train=400", "data.synthetic_valid=80", "data.synthetic_test=20",
    "data.seq_len=8", "model.embed=16", "model.hidden=16", "pretrain.lm_steps=30", "pretrain.batch_size=32",
    "pretrain.lr=1e-2", "pretrain.eval_every=30", "pretrain.eval_batches=2",
]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """MaskMLE after 60 steps and after 0 steps (the LM-initialised generator), on the same data."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for name, steps in (("trained", 60), ("untrained", 0)):
        cfg = load_config("synthetic", TINY + [f"run_dir={root / name}", f"pretrain.mle_steps={steps}", "tracking.enabled=false"])
        paths.append(run_pretraining(cfg).mle_path)
    return paths


def test_evaluate_during_training_reports_cheap_metrics(two_checkpoints):
    from maskgan_rl.loading import load_generator

    cfg = load_config("synthetic", TINY + [f"run_dir={two_checkpoints[0].parent.parent}"])
    generator, _, _ = load_generator(two_checkpoints[0])
    metrics = evaluate_during_training(generator, prepare_data(cfg), cfg)
    assert set(metrics) == {"masked_perplexity", "unique_2grams", "unique_3grams", "unique_4grams", "oracle_nll"}
    discriminator = Discriminator(len(prepare_data(cfg).vocab), cfg.model)
    with_disc = evaluate_during_training(generator, prepare_data(cfg), cfg, discriminator)
    assert with_disc.items() > metrics.items()  # the same in-fills, plus D's numbers
    # D's numbers by their definitions, from the models themselves, on the same seeded in-fills.
    windows = WindowDataset(prepare_data(cfg).valid_path).windows[: cfg.pretrain.batch_size * cfg.pretrain.eval_batches]
    present = make_present(len(windows), cfg.data.seq_len, cfg.mask, np.random.default_rng(cfg.seed))
    filled = fill_windows(generator, windows, present, cfg.gan.temperature, cfg.seed)
    masked, keep = torch.as_tensor(~present), torch.as_tensor(present)
    context = mask_context(torch.as_tensor(windows), keep, discriminator.missing_id)
    oracle = OracleLM(cfg.data.oracle_vocab, cfg.data.oracle_hidden, cfg.data.oracle_seed)
    with torch.no_grad():
        real, fake = discriminator(context, torch.as_tensor(windows)), discriminator(context, torch.as_tensor(filled))
        oracle_log_p = oracle.token_log_probs(filled)
        optimal = oracle_log_p - generator.token_log_probs(context, torch.as_tensor(filled), masked, cfg.gan.temperature)
    right = int((real[masked] > 0).sum()) + int((fake[masked] <= 0).sum())
    assert with_disc["disc_heldout_accuracy"] == pytest.approx(right / (2 * int(masked.sum())))
    log_d = torch.log(torch.sigmoid(fake[masked]) + 1e-7)  # the reward
    assert with_disc["reward_oracle_corr"] == pytest.approx(np.corrcoef(log_d.numpy(), oracle_log_p[masked].numpy())[0, 1], abs=1e-5)
    assert with_disc["disc_optimal_corr"] == pytest.approx(np.corrcoef(fake[masked].numpy(), optimal[masked].numpy())[0, 1], abs=1e-5)
    # What D could know: the optimal D tells the oracle's text from a barely trained generator's well.
    assert with_disc["optimal_disc_accuracy"] > max(0.6, with_disc["disc_heldout_accuracy"])
    # The masked perplexity is MaskMLE's validation perplexity (same batches, same masks) of the kept weights.
    kept = load_checkpoint(two_checkpoints[0])["metrics"]["valid_perplexity"]
    assert metrics["masked_perplexity"] == pytest.approx(kept, rel=1e-5)
    # Real text is what the oracle generates best: its NLL at the same blanks is lower than the in-fills'.
    assert metrics["oracle_nll"] > oracle_nll(oracle, windows, present)
    assert metrics["unique_2grams"] == pytest.approx(100 * len({g for row in filled[:, 1:].tolist() for g in zip(row, row[1:])})
                                                     / sum(len(row) - 2 for row in filled))
    assert evaluate_during_training(generator, prepare_data(cfg), cfg) == metrics  # seeded: same weights, same numbers


def reverse_lm_perplexity(cfg, vocab, windows, references, steps, tmp_path) -> float:
    """By definition: a fresh LM of the evaluated model's size, trained `steps` steps on `windows` alone
    (seeded by the run's seed), scored on every reference window."""
    folder = tmp_path / f"reverse-{len(list(tmp_path.glob('reverse-*')))}"
    folder.mkdir()
    write_windows(folder / "samples.parquet", windows, vocab, {})
    write_windows(folder / "references.parquet", references, vocab, {})
    cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False),
                              pretrain=dataclasses.replace(cfg.pretrain, eval_batches=math.ceil(len(references) / cfg.pretrain.batch_size)))
    torch.manual_seed(cfg.seed)
    lm = LanguageModel(len(vocab), cfg.model)
    return load_or_train("reverse", "language_model", lm, folder / "lm.pt", cfg, vocab, Tracker(cfg, "evaluate"), steps=steps,
                         batch_loss=lambda w, rng: lm_loss(lm, w), train=WindowDataset(folder / "samples.parquet"),
                         valid=WindowDataset(folder / "references.parquet"), device=torch.device("cpu"))


def test_evaluate_two_checkpoints_writes_tables_plots_and_mlflow_runs(two_checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plotted = {}  # path -> the curves drawn there

    def plot_and_record(curves, x, y, path, *args, **kwargs):
        plotted[path] = curves
        return plot_quality_diversity(curves, x, y, path, *args, **kwargs)

    monkeypatch.setattr("maskgan_rl.evaluate.plot_quality_diversity", plot_and_record)
    trained, untrained = two_checkpoints
    out = tmp_path / "eval"
    db = tmp_path / "mlflow.db"
    code = main([
        # device=cpu also on a machine with a GPU: the numbers are recomputed below on the CPU, whose
        # sampling streams and sums a GPU's do not repeat.
        "evaluate", str(trained), str(untrained), "device=cpu", "tracking.enabled=true", f"tracking.tracking_uri=sqlite:///{db}",
        "--out", str(out), "--samples", "30", "--temperatures", "0.7,1.0",
        "--bleu-references", "20", "--reverse-lm-steps", "5", "--two-sample-steps", "5", "--table-rows", "3",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["prompts"], results["references"], results["bleu_references"]) == (30, 50, 20)
    trained_entry, untrained_entry = results["checkpoints"]
    assert trained_entry["label"] != untrained_entry["label"] and trained_entry["kind"] == "mle"
    # MLE training lowers the masked perplexity it minimises.
    assert trained_entry["masked_perplexity"] < untrained_entry["masked_perplexity"] < 40
    assert [p["temperature"] for p in trained_entry["points"]] == [0.7, 1.0]

    # Each number recomputed from its definition: the first 30 held-out windows are the prompts, the
    # rest the references; seed 0's masks; the trained checkpoint's in-fills; the saved eval LM.
    cfg = load_config("synthetic", TINY + [f"run_dir={trained.parent.parent}"])
    vocab = prepare_data(cfg).vocab
    held = WindowDataset(prepare_data(cfg).valid_path).windows
    prompts, references = held[:30], held[30:]
    present = make_present(30, cfg.data.seq_len, cfg.mask, np.random.default_rng(0))
    stored = load_checkpoint(out / "eval_lm.pt")
    eval_lm = LanguageModel(len(stored["vocab"]), cfg.model)
    eval_lm.load_state_dict(stored["models"]["language_model"])
    assert results["eval_lm"]["valid_perplexity"] == stored["metrics"]["valid_perplexity"]
    oracle = OracleLM(cfg.data.oracle_vocab, cfg.data.oracle_hidden, cfg.data.oracle_seed)
    generator, _, _ = load_infiller(trained)
    texts = [(results["real"], prompts)] + [
        (point, fill_windows(generator, prompts, present, point["temperature"], 0)) for point in trained_entry["points"]
    ]
    for point, windows in texts:
        sentences = windows[:, 1:].tolist()
        assert point["bleu4"] == pytest.approx(bleu(sentences, references[:, 1:].tolist(), 4, num_references=20, seed=0))
        assert point["self_bleu4"] == pytest.approx(self_bleu(sentences, 4, num_references=20, seed=0))
        assert point["eval_lm_perplexity"] == pytest.approx(lm_perplexity(eval_lm, windows), rel=1e-5)
        assert point["oracle_nll"] == pytest.approx(oracle_nll(oracle, windows, present), rel=1e-5)
        assert {k: point[k] for k in ngram_metrics(windows)} == pytest.approx(ngram_metrics(windows))
        assert point["reverse_lm_perplexity"] == pytest.approx(reverse_lm_perplexity(cfg, vocab, windows, references, 5, tmp_path), rel=1e-5)

    # The tables hold results.json's numbers: a row for real data, then one per checkpoint and temperature.
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    expected = [("real data", "", results["real"])] + [
        (entry["label"], str(point["temperature"]), {"masked_perplexity": entry["masked_perplexity"], **point})
        for entry in results["checkpoints"] for point in entry["points"]
    ]
    assert [(row["model"], row["temperature"]) for row in rows] == [(label, t) for label, t, _ in expected]
    for row, (_, _, values) in zip(rows, expected):
        assert {k: float(row[k]) for k in values if k not in ("seed", "temperature")} == {
            k: pytest.approx(v) for k, v in values.items() if k not in ("seed", "temperature")}
    markdown = (out / "metrics.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in markdown[2:2 + len(expected)]] == ["| " + _md_cell(label) for label, _, _ in expected]

    # The plots: one MaskMLE curve (both checkpoints are MaskMLE), each point the mean of the two at its temperature.
    for name, x, y in (("lm", "eval_lm_perplexity", "reverse_lm_perplexity"), ("bleu", "self_bleu4", "bleu4"),
                       ("oracle", "oracle_nll", "reverse_lm_perplexity")):
        assert (out / f"quality_diversity_{name}.png").read_bytes().startswith(PNG_MAGIC)
        ((model, curve),) = plotted[out / f"quality_diversity_{name}.png"].items()
        assert model == "MaskMLE" and [p["temperature"] for p in curve] == [0.7, 1.0]
        for point, a, b in zip(curve, trained_entry["points"], untrained_entry["points"]):
            assert (point[x], point[y]) == (pytest.approx((a[x] + b[x]) / 2), pytest.approx((a[y] + b[y]) / 2))
    # Real data is, by definition, what the oracle generates best.
    assert results["real"]["oracle_nll"] < min(p["oracle_nll"] for p in untrained_entry["points"])

    samples = list(csv.reader((out / "samples.csv").open()))
    assert len(samples) == 1 + 3 and len(samples[0]) == 4  # masked input, real text, two checkpoints
    assert [row[1] for row in samples[1:]] == [" ".join(vocab.decode(window)) for window in prompts[:3]]
    assert "___" in samples[1][0] and "[" in samples[1][2]
    assert "real data" in capsys.readouterr().out  # the metrics table is printed

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("maskgan").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["maskgan.command"] == "evaluate"
    assert len(children) == 4  # two checkpoints x two temperatures
    assert {r.data.params["temperature"] for r in children} == {"0.7", "1.0"}
    assert all("bleu4" in r.data.metrics and "masked_perplexity" in r.data.metrics for r in children)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "evaluation")}
    assert "evaluation/results.json" in artifacts and "evaluation/quality_diversity_bleu.png" in artifacts


def test_an_lm_checkpoint_is_evaluated_as_the_left_context_baseline(two_checkpoints, tmp_path):
    trained = two_checkpoints[0]
    lm_path = trained.parent / "lm.pt"
    out = tmp_path / "eval"
    code = main([
        "evaluate", str(lm_path), str(trained), "device=cpu", "tracking.enabled=false", "--out", str(out), "--samples", "20",
        "--temperatures", "1.0", "--bleu-references", "10", "--reverse-lm-steps", "0", "--two-sample-steps", "0", "--table-rows", "2",
    ])
    assert code == 0
    lm_entry, mle_entry = json.loads((out / "results.json").read_text())["checkpoints"]
    assert lm_entry["kind"] == "lm" and lm_entry["label"].startswith("LM ") and mle_entry["kind"] == "mle"
    # The LM fills each blank from the left context alone: its numbers are those of lm.pt as an in-filler.
    cfg = load_config("synthetic", TINY + [f"run_dir={trained.parent.parent}"])
    held = WindowDataset(prepare_data(cfg).valid_path)
    lm, _, _ = load_infiller(lm_path)
    assert isinstance(lm, LanguageModel)
    assert lm_entry["masked_perplexity"] == pytest.approx(masked_perplexity(lm, held, cfg), rel=1e-6)
    assert lm_entry["masked_perplexity"] != pytest.approx(mle_entry["masked_perplexity"], rel=1e-3)
    present = make_present(20, cfg.data.seq_len, cfg.mask, np.random.default_rng(0))
    oracle = OracleLM(cfg.data.oracle_vocab, cfg.data.oracle_hidden, cfg.data.oracle_seed)
    filled = fill_windows(lm, held.windows[:20], present, 1.0, 0)
    assert lm_entry["points"][0]["oracle_nll"] == pytest.approx(oracle_nll(oracle, filled, present), rel=1e-5)


def test_the_baseline_alone_is_scored_on_its_finer_temperature_grid_and_matched_along_it(two_checkpoints, tmp_path):
    trained = two_checkpoints[0]
    out = tmp_path / "eval"
    code = main([
        "evaluate", str(trained), f"Copy:{trained}", "tracking.enabled=false", "--out", str(out), "--samples", "30",
        "--temperatures", "0.7,1.3", "--baseline-temperatures", "0.7,0.85,1.0,1.15,1.3", "--bleu-references", "20",
        "--reverse-lm-steps", "5", "--two-sample-steps", "0", "--table-rows", "2",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    mle, copy = results["checkpoints"]
    assert [p["temperature"] for p in mle["points"]] == [0.7, 0.85, 1.0, 1.15, 1.3]
    assert [p["temperature"] for p in copy["points"]] == [0.7, 1.3]
    assert results["baseline_temperatures"] == [0.7, 0.85, 1.0, 1.15, 1.3]
    # Each of Copy's points is matched along the baseline's five-point curve, not a chord between its two ends.
    for row, point in zip(results["verdict"]["Copy"]["points"], copy["points"]):
        matched = at_matched_diversity(mle["points"], point["reverse_lm_perplexity"])
        assert row["baseline_eval_lm_perplexity"] == pytest.approx(math.exp(matched["log_quality"]))


def test_baseline_temperatures_must_include_the_others(two_checkpoints, tmp_path, capsys):
    trained = two_checkpoints[0]
    code = main(["evaluate", str(trained), f"Copy:{trained}", "tracking.enabled=false", "--out", str(tmp_path / "eval"),
                 "--temperatures", "0.7,1.3", "--baseline-temperatures", "0.7,1.0"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline-temperatures [0.7, 1.0]" in err[0] and "missing: [1.3]" in err[0]


def test_the_verdict_of_a_checkpoint_against_itself_is_exactly_one(two_checkpoints, tmp_path, monkeypatch, capsys):
    """The trained MaskMLE checkpoint, and the same file named as another model: every number matches,
    so at every baseline point on its frontier the ratio is 1 and the held-out D accuracies agree."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trained = two_checkpoints[0]
    out, db = tmp_path / "eval", tmp_path / "mlflow.db"
    code = main([
        "evaluate", str(trained), f"Copy:{trained}", "tracking.enabled=true", f"tracking.tracking_uri=sqlite:///{db}",
        "--out", str(out), "--samples", "30", "--temperatures", "0.7,1.0,1.3", "--seeds", "0,1",
        "--bleu-references", "20", "--reverse-lm-steps", "5", "--two-sample-steps", "5", "--table-rows", "2",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    mle, copy = results["checkpoints"]
    assert (mle["model"], copy["model"]) == ("MaskMLE", "Copy") and copy["label"] == "Copy (trained)"
    assert [(p["seed"], p["temperature"]) for p in copy["points"]] == [(s, t) for s in (0, 1) for t in (0.7, 1.0, 1.3)]
    for point, same in zip(copy["points"], mle["points"]):
        assert point["two_sample_accuracy_low"] <= point["two_sample_accuracy"] <= point["two_sample_accuracy_high"]
        # The same file: the same in-fills and the same seeded two-sample discriminator, so the same numbers.
        two_sample = [k for k in point if k.startswith("two_sample_")]
        assert len(two_sample) >= 4 and [point[k] for k in two_sample] == [same[k] for k in two_sample]

    verdict = results["verdict"]["Copy"]
    assert verdict["pairs"] == [[copy["label"], mle["label"]]] and verdict["interval_over"] == "evaluation seeds"
    assert verdict["unmatched_points"] == 0  # every point lies on the baseline's own curve
    for seed in (0, 1):
        rows = [r for r in verdict["points"] if r["seed"] == seed]
        baseline = [p for p in mle["points"] if p["seed"] == seed]
        assert [r["eval_lm_perplexity"] for r in rows] == [p["eval_lm_perplexity"] for p in baseline]  # same fills, same numbers
        # Each point is on the baseline's curve, so the curve does at least as well there; exactly as well
        # at its best-quality point, and everywhere when the curve does not fold back on itself.
        assert all(r["ratio"] >= 1.0 for r in rows)
        best = min(rows, key=lambda r: r["eval_lm_perplexity"])
        assert best["ratio"] == 1.0 and best["two_sample_accuracy"] == best["baseline_two_sample_accuracy"]
        diversities = [p["reverse_lm_perplexity"] for p in sorted(baseline, key=lambda p: p["temperature"])]
        if diversities in (sorted(diversities), sorted(diversities, reverse=True)):
            assert [r["ratio"] for r in rows] == [1.0] * len(rows)
    # The headline: the geometric mean over each seed's matched points, then over seeds.
    per_seed = [np.mean([math.log(r["ratio"]) for r in verdict["points"] if r["seed"] == s and r["ratio"] is not None]) for s in (0, 1)]
    assert verdict["ratio"] == pytest.approx(math.exp(np.mean(per_seed))) and verdict["ratio"] >= 1.0
    assert verdict["ratio_interval"][0] <= verdict["ratio"] <= verdict["ratio_interval"][1]

    # On the oracle (synthetic data): the same in-fills, so a difference of exactly 0 at every temperature,
    # which is not "lower", and an oracle-perplexity ratio of at least 1 along the baseline's own curve.
    by_temperature = verdict["oracle"]["by_temperature"]
    assert [(r["temperature"], r["difference"], r["interval"]) for r in by_temperature["temperatures"]] == [
        (t, 0.0, [0.0, 0.0]) for t in (0.7, 1.0, 1.3)]
    assert by_temperature["lower_at_every_temperature"] is False
    assert verdict["oracle"]["matched"]["ratio"] >= 1.0 and verdict["oracle"]["matched"]["quality"] == "oracle_nll"

    printed = capsys.readouterr().out
    assert "Copy: eval-LM perplexity" in printed and "Copy: oracle perplexity" in printed
    assert "lower at every temperature: no" in printed
    metrics_md = (out / "metrics.md").read_text()
    assert "## Verdict: against MaskMLE" in metrics_md and "## Verdict on the oracle: against MaskMLE" in metrics_md
    assert (out / "oracle_nll_difference.png").read_bytes().startswith(b"\x89PNG")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("maskgan").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.metrics["verdict/Copy/eval_lm_perplexity_ratio"] == pytest.approx(verdict["ratio"])
    assert "verdict/Copy/two_sample_accuracy" in parent.data.metrics
    assert parent.data.metrics["verdict/Copy/oracle_nll_difference/T0.7"] == 0.0
    assert parent.data.metrics["verdict/Copy/oracle_perplexity_ratio"] == pytest.approx(verdict["oracle"]["matched"]["ratio"])
    assert len(runs) == 1 + 2 * 3 * 2  # parent + checkpoints x temperatures x seeds
