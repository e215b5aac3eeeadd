"""The verdict (maskgan_rl/verdict.py) on hand-made cases: the matched-diversity interpolation, the
ratio and its interval, the two-sample test; then the end-of-training summary and training curves."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from maskgan_rl.config import load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.evaluate import checkpoint_argument
from maskgan_rl.masking import make_present
from maskgan_rl.train import adversarial_summary, training_curves
from maskgan_rl.verdict import (
    InFills,
    at_matched_diversity,
    auc,
    diversity_range,
    matched_diversity_verdict,
    pair_checkpoints,
    same_temperature_sentence,
    same_temperature_verdict,
    two_sample_test,
    verdict_sentence,
)

# A baseline temperature curve (x = reverse-LM perplexity, y = eval-LM perplexity) that folds back:
# from T=1.0 to T=1.5 the samples get less diverse again, and worse.
BASELINE = [
    {"temperature": 0.5, "reverse_lm_perplexity": 100.0, "eval_lm_perplexity": 10.0, "two_sample_accuracy": 0.5},
    {"temperature": 1.0, "reverse_lm_perplexity": 50.0, "eval_lm_perplexity": 40.0, "two_sample_accuracy": 0.6},
    {"temperature": 1.5, "reverse_lm_perplexity": 60.0, "eval_lm_perplexity": 80.0, "two_sample_accuracy": 0.9},
]
MIDDLE = math.sqrt(50 * 100)  # halfway between T=1.0 and T=0.5 in log reverse-LM perplexity


def quality(curve, diversity):
    matched = at_matched_diversity(curve, diversity)
    return None if matched is None else math.exp(matched["log_quality"])


def test_interpolation_is_log_linear_between_temperatures_and_never_extrapolates():
    # Halfway in log x between T=1.0 (40) and T=0.5 (10): their geometric mean; accuracy halfway too.
    assert quality(BASELINE, MIDDLE) == pytest.approx(20.0)
    assert at_matched_diversity(BASELINE, MIDDLE)["two_sample_accuracy"] == pytest.approx(0.55)
    assert quality(BASELINE, 50.0) == pytest.approx(40.0) and quality(BASELINE, 100.0) == pytest.approx(10.0)
    assert quality(BASELINE, 49.9) is None and quality(BASELINE, 100.1) is None
    assert diversity_range(BASELINE) == (50.0, 100.0)


def test_where_the_curve_folds_back_the_better_branch_counts():
    # x = 60 is reached from T=0.5-1.0 (log y = log 40 + (log 60 - log 50) / log 2 * (log 10 - log 40))
    # and by T=1.5 itself (80): the lower one, with that branch's accuracy.
    fraction = math.log(60 / 50) / math.log(2)
    assert quality(BASELINE, 60.0) == pytest.approx(40 * 0.25**fraction)
    assert at_matched_diversity(BASELINE, 60.0)["two_sample_accuracy"] == pytest.approx(0.6 - 0.1 * fraction)
    # A curve that only rises on both axes (the coldest point best on both) is interpolated as it is.
    rising = [{"temperature": t, "reverse_lm_perplexity": x, "eval_lm_perplexity": y} for t, x, y in ((0.5, 30, 20), (1.0, 40, 80))]
    assert quality(rising, math.sqrt(30 * 40)) == pytest.approx(40.0)
    single = rising[:1]
    assert quality(single, 30.0) == pytest.approx(20.0) and quality(single, 30.1) is None


def _entry(label, model, points):
    return {"label": label, "model": model, "points": points}


def test_ratio_and_interval_over_evaluation_seeds_on_hand_made_numbers():
    ratios = {0: 0.8, 1: 0.9, 2: 1.0}
    model_points = [
        point
        for seed, ratio in ratios.items()
        for point in (
            {"seed": seed, "temperature": 1.0, "reverse_lm_perplexity": MIDDLE, "eval_lm_perplexity": 20.0 * ratio, "two_sample_accuracy": 0.7},
            {"seed": seed, "temperature": 1.5, "reverse_lm_perplexity": 200.0, "eval_lm_perplexity": 5.0, "two_sample_accuracy": 0.7},
        )
    ]
    checkpoints = [
        _entry("gan", "MaskGAN", model_points),
        _entry("mle", "MaskMLE", [{"seed": seed, **p} for seed in ratios for p in BASELINE]),
    ]
    verdict = matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE")
    logs = np.log(list(ratios.values()))
    mean, sem = logs.mean(), logs.std(ddof=1) / math.sqrt(3)
    t_975_2 = 4.302653  # Student t, 2 degrees of freedom, 97.5% quantile (tables)
    assert verdict["ratio"] == pytest.approx(math.exp(mean))
    assert verdict["ratio_interval"] == pytest.approx([math.exp(mean - t_975_2 * sem), math.exp(mean + t_975_2 * sem)], rel=1e-5)
    assert (verdict["replicates"], verdict["interval_over"]) == (3, "evaluation seeds")
    # The T=1.5 points lie beyond the baseline's range: counted, not extrapolated.
    assert (verdict["matched_points"], verdict["unmatched_points"]) == (3, 3)
    assert [row["ratio"] for row in verdict["points"] if row["temperature"] == 1.5] == [None] * 3
    assert verdict["baseline_range"] == [50.0, 100.0]
    # Held-out D: 0.7 against the baseline's 0.55 at the same diversity, in every seed.
    assert verdict["two_sample_accuracy"] == pytest.approx(0.7)
    assert verdict["baseline_two_sample_accuracy"] == pytest.approx(0.55)
    assert verdict["two_sample_accuracy_difference"] == pytest.approx(0.15)
    assert verdict["two_sample_accuracy_difference_interval"] == pytest.approx([0.15, 0.15])


def test_several_checkpoints_per_model_are_paired_in_order_and_the_interval_is_over_pairs():
    def points(quality):  # one matched point at the frontier's middle, at seeds 0 and 1
        return [{"seed": s, "temperature": 1.0, "reverse_lm_perplexity": MIDDLE, "eval_lm_perplexity": quality} for s in (0, 1)]

    baseline_a = [{"seed": s, **p} for s in (0, 1) for p in BASELINE]
    baseline_b = [{**p, "eval_lm_perplexity": p["eval_lm_perplexity"] * 2} for p in baseline_a]  # 20 -> 40 at MIDDLE
    checkpoints = [
        _entry("gan a", "MaskGAN", points(10.0)), _entry("gan b", "MaskGAN", points(40.0)),
        _entry("mle a", "MaskMLE", baseline_a), _entry("mle b", "MaskMLE", baseline_b),
    ]
    verdict = matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE")
    assert verdict["pairs"] == [["gan a", "mle a"], ["gan b", "mle b"]]
    # Pair a: 10 / 20 = 0.5; pair b: 40 / 40 = 1: geometric mean sqrt(0.5), two replicates.
    assert verdict["ratio"] == pytest.approx(math.sqrt(0.5))
    assert (verdict["replicates"], verdict["interval_over"]) == (2, "checkpoint pairs (training seeds)")
    assert "two_sample_accuracy" not in verdict  # no two-sample numbers given


def test_a_model_with_no_point_in_the_baselines_range_has_no_ratio():
    far = [{"seed": 0, "temperature": 1.0, "reverse_lm_perplexity": 500.0, "eval_lm_perplexity": 5.0}]
    checkpoints = [_entry("gan", "MaskGAN", far), _entry("mle", "MaskMLE", [{"seed": 0, **p} for p in BASELINE])]
    verdict = matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE")
    assert verdict["ratio"] is None and verdict["unmatched_points"] == 1 and verdict["replicates"] == 0


def test_the_oracle_verdict_matches_diversity_in_nats_and_reports_a_ratio_of_oracle_perplexities():
    # The baseline's oracle NLL is 2.0 nats at T=0.5 and 4.0 at T=1.0: halfway in log diversity, 3.0.
    baseline = [{**p, "seed": 0, "oracle_nll": nll} for p, nll in zip(BASELINE, (2.0, 4.0, 5.0))]
    model = [{"seed": 0, "temperature": 1.0, "reverse_lm_perplexity": MIDDLE, "eval_lm_perplexity": 20.0, "oracle_nll": 2.9}]
    checkpoints = [_entry("gan", "MaskGAN", model), _entry("mle", "MaskMLE", baseline)]
    verdict = matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE", quality="oracle_nll")
    (row,) = verdict["points"]
    assert row["baseline_oracle_nll"] == pytest.approx(3.0) and row["oracle_nll"] == 2.9
    assert verdict["ratio"] == pytest.approx(math.exp(-0.1))  # 0.1 nats lower per token
    assert verdict_sentence(verdict).startswith(f"MaskGAN: oracle perplexity {math.exp(-0.1):.3f}x MaskMLE's")
    # The eval-LM verdict of the same points is untouched: 20 against 20.
    assert matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE")["ratio"] == pytest.approx(1.0)


def test_oracle_nll_per_temperature_is_paired_by_training_seed_with_a_t_interval():
    """Three checkpoint pairs; the baseline has a finer grid (T=0.75 only its own, so not compared); pair
    a's two evaluation seeds are averaged first. Differences at T=0.5: -0.20, -0.21, -0.22 (mean -0.21,
    sd 0.01); at T=1.0: -0.1, +0.05, -0.05 (an interval across 0)."""
    differences = {0.5: [(-0.19, -0.21), (-0.21,), (-0.22,)], 1.0: [(-0.1, -0.1), (0.05,), (-0.05,)]}
    checkpoints = []
    for i, name in enumerate("abc"):
        seeds = range(len(differences[0.5][i]))
        base = [{"seed": s, "temperature": t, "oracle_nll": 3.0 + t} for s in seeds for t in (0.5, 0.75, 1.0)]
        model = [{"seed": s, "temperature": t, "oracle_nll": 3.0 + t + differences[t][i][s]} for s in seeds for t in (0.5, 1.0)]
        checkpoints += [_entry(f"gan {name}", "MaskGAN", model), _entry(f"mle {name}", "MaskMLE", base)]
    verdict = same_temperature_verdict(checkpoints, "MaskGAN", "MaskMLE", "oracle_nll")
    t_975_2 = 4.302653  # Student t, 2 degrees of freedom, 97.5% quantile (tables)
    cold, warm = verdict["temperatures"]
    assert (cold["temperature"], cold["replicates"], warm["temperature"]) == (0.5, 3, 1.0)
    assert cold["difference"] == pytest.approx(-0.21)
    assert cold["interval"] == pytest.approx([-0.21 - t_975_2 * 0.01 / math.sqrt(3), -0.21 + t_975_2 * 0.01 / math.sqrt(3)], rel=1e-5)
    assert warm["difference"] == pytest.approx(-0.1 / 3) and warm["interval"][0] < 0 < warm["interval"][1]
    assert verdict["interval_over"] == "checkpoint pairs (training seeds)"
    assert verdict["lower_at_every_temperature"] is False  # T=1.0's interval reaches above 0
    sentence = same_temperature_sentence(verdict)
    assert "T=0.5 -0.210 (-0.235 to -0.185)" in sentence and sentence.endswith("lower at every temperature: no")
    only_cold = [{**c, "points": [p for p in c["points"] if p["temperature"] != 1.0]} for c in checkpoints]
    assert same_temperature_verdict(only_cold, "MaskGAN", "MaskMLE", "oracle_nll")["lower_at_every_temperature"] is True


def test_the_verdict_sentence_says_better_or_worse_only_when_the_interval_excludes_one():
    checkpoints = [
        _entry("gan", "MaskGAN", [{"seed": 0, "temperature": 1.0, "reverse_lm_perplexity": MIDDLE, "eval_lm_perplexity": 18.0}]),
        _entry("mle", "MaskMLE", [{"seed": 0, **p} for p in BASELINE]),
    ]
    verdict = matched_diversity_verdict(checkpoints, "MaskGAN", "MaskMLE")
    assert verdict["ratio"] == pytest.approx(0.9) and verdict["ratio_interval"] is None
    assert "MaskGAN: eval-LM perplexity 0.900x MaskMLE's" in verdict_sentence(verdict)
    assert "one replicate, no interval" in verdict_sentence(verdict)
    assert "; not judged);" in verdict_sentence(verdict)  # 0.9 from one replicate is not called better
    for interval, word in (([0.85, 0.95], "better"), ([0.8, 1.05], "not distinguishable")):
        assert f"; {word});" in verdict_sentence({**verdict, "ratio_interval": interval, "replicates": 3})
    assert "; worse);" in verdict_sentence({**verdict, "ratio": 1.2, "ratio_interval": [1.1, 1.3], "replicates": 3})
    assert "range 50-100 (not extrapolated)" in verdict_sentence(verdict)


def test_checkpoint_pairing_rules():
    assert pair_checkpoints(["g1", "g2"], ["m"], "G", "M") == [("g1", "m"), ("g2", "m")]
    assert pair_checkpoints(["g"], ["m1", "m2"], "G", "M") == [("g", "m1"), ("g", "m2")]
    assert pair_checkpoints(["g1", "g2"], ["m1", "m2"], "G", "M") == [("g1", "m1"), ("g2", "m2")]
    with pytest.raises(ConfigError, match="2 G checkpoints against 3 of M"):
        pair_checkpoints(["g1", "g2"], ["m1", "m2", "m3"], "G", "M")


def test_checkpoint_arguments_name_their_model(tmp_path):
    assert checkpoint_argument("runs/a/checkpoints/mle.pt") == (None, Path("runs/a/checkpoints/mle.pt"))
    name, path = checkpoint_argument("MaskMLE-long:runs/b/mle.pt")
    assert (name, str(path)) == ("MaskMLE-long", "runs/b/mle.pt")
    odd = tmp_path / "a:b.pt"  # an existing file with a colon in its name is a path
    odd.write_bytes(b"")
    assert checkpoint_argument(str(odd)) == (None, odd)


# ---------------------------------------------------------------- two-sample test

VOCAB_SIZE = 6  # real text: tokens 2-5 drawn independently and uniformly; token 1 never occurs


def _two_sample_case(fill):
    """Train and held-out InFills where `fill(windows, present, rng)` gives a model's in-fills."""
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine
    cfg = load_config("synthetic", ["data.seq_len=6", "model.embed=8", "model.hidden=8", "gan.disc_batch_size=32", "pretrain.lr=1e-2"])
    rng = np.random.default_rng(0)
    sets = []
    for rows in (300, 300):
        windows = rng.integers(2, VOCAB_SIZE, size=(rows, 7))
        present = make_present(rows, 6, cfg.mask, rng)
        sets.append(InFills(windows, present, fill(windows, present, rng)))
    return cfg, sets


def _resample_masked(windows, present, tokens):
    filled = windows.copy()
    filled[:, 1:] = np.where(present, windows[:, 1:], tokens)
    return filled


def test_in_fills_equal_to_the_real_tokens_score_exactly_one_half():
    # Real and filled windows are the same: whatever D learns, it calls each token real in both or in neither.
    cfg, (train, held_out) = _two_sample_case(lambda w, p, rng: w.copy())
    scores = two_sample_test(train, held_out, VOCAB_SIZE, cfg, steps=20, seed=0)
    assert scores["two_sample_accuracy"] == 0.5 and scores["two_sample_auc"] == 0.5


def test_a_model_of_the_data_distribution_is_indistinguishable_and_a_degenerate_one_is_caught():
    # In-fills drawn from the data's own distribution (independent uniform tokens 2-5): any D's expected
    # held-out accuracy is 0.5; 1,200 masked tokens per side put 0.05 at about five standard deviations.
    cfg, (train, held_out) = _two_sample_case(lambda w, p, rng: _resample_masked(w, p, rng.integers(2, VOCAB_SIZE, size=p.shape)))
    same = two_sample_test(train, held_out, VOCAB_SIZE, cfg, steps=150, seed=0)
    assert abs(same["two_sample_accuracy"] - 0.5) < 0.05
    assert same["two_sample_accuracy_low"] <= same["two_sample_accuracy"] <= same["two_sample_accuracy_high"]
    # Always the same token, one real text never has: D learns to call it fake.
    cfg, (train, held_out) = _two_sample_case(lambda w, p, rng: _resample_masked(w, p, np.ones_like(p, dtype=np.int64)))
    degenerate = two_sample_test(train, held_out, VOCAB_SIZE, cfg, steps=150, seed=0)
    assert degenerate["two_sample_accuracy"] > 0.95 and degenerate["two_sample_auc"] > 0.95
    assert degenerate["two_sample_accuracy_low"] > same["two_sample_accuracy_high"]


def test_auc_counts_ties_as_half():
    # Pairs (positive, negative): 3>1, 3>2, 2>1, 2=2 -> (3 + 0.5) / 4.
    assert auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)


# ---------------------------------------------------------------- end of adversarial training


def _history():
    return [
        {"iteration": 0, "eval/oracle_nll": 10.02, "eval/masked_perplexity": 183.0, "eval/disc_heldout_accuracy": 0.52},
        {"iteration": 1, "disc_loss": 0.69},
        {"iteration": 2, "disc_loss": 0.68, "eval/oracle_nll": 10.10, "eval/masked_perplexity": 182.0, "eval/disc_heldout_accuracy": 0.55},
        {"iteration": 3, "disc_loss": 0.67, "eval/oracle_nll": 10.14, "eval/masked_perplexity": 181.7, "eval/disc_heldout_accuracy": 0.54},
    ]


def test_the_end_of_training_summary_says_better_or_worse_against_the_mle_start():
    sentence, deltas = adversarial_summary(_history())
    assert deltas == pytest.approx({"oracle_nll": 0.12, "masked_perplexity": -1.3, "disc_heldout_accuracy": 0.02})
    assert "iteration 3 against its MaskMLE start" in sentence
    assert "oracle NLL 10.02 -> 10.14 (+0.12, worse)" in sentence
    assert "masked perplexity 183 -> 181.7 (-1.3, better)" in sentence
    assert "held-out D accuracy 0.52 -> 0.54 (+0.02)" in sentence  # two different Ds: no judgement
    assert adversarial_summary(_history()[1:]) is None  # no MaskMLE start (an old resumed history)


def test_training_curves_mark_the_mle_start_on_evaluation_panels_with_whole_iteration_ticks():
    fig = training_curves(_history())
    panels = {ax.get_ylabel(): ax for ax in fig.axes}
    assert set(panels) == {"disc_loss", "eval/oracle_nll", "eval/masked_perplexity", "eval/disc_heldout_accuracy"}
    fig.canvas.draw()
    for key, ax in panels.items():
        references = [line for line in ax.get_lines() if line.get_label() == "MaskMLE start"]
        if key.startswith("eval/"):
            (line,) = references
            assert set(line.get_ydata()) == {_history()[0][key]}
        else:
            assert references == []
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    # Four panels in a grid of three columns: two rows, not one column of four.
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    columns = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(rows) == 2 and len(columns) == 3
