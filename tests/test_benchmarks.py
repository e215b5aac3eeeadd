"""The benchmarks run end to end on a tiny model: both loops train, and they write their reports; the
verdict experiment's driver runs every stage at toy sizes and skips them when run again.
(They measure nothing here: figures belong in benchmarks/README.md, never in tests.)"""

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.config import load_config
from maskgan_rl.dataset import prepare_data
from maskgan_rl.models.generator import Generator
from maskgan_rl.rl.reference import ReferenceLoop

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TINY = ["model.embed=8", "model.hidden=8", "data.oracle_vocab=50", "data.seq_len=8", "gan.episodes_per_iteration=8"]


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_reference_loop_updates_generator_critic_and_discriminator(tmp_path):
    cfg = load_benchmark("throughput").benchmark_config("cpu", tmp_path, TINY)
    data = prepare_data(cfg)
    loop = ReferenceLoop(cfg, data, Generator(len(data.vocab), cfg.model).state_dict(), torch.device("cpu"))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (loop.generator, loop.critic, loop.disc_trainer.model)]
    masked = [loop.train_iteration() for _ in range(3)]
    assert masked == [8 * 3] * 3  # 8 windows, each with the paper's contiguous block of int(0.5 * 8) - 1 = 3 targets
    for old, model in zip(before, (loop.generator, loop.critic, loop.disc_trainer.model)):
        assert any(not torch.equal(old[k], v) for k, v in model.state_dict().items())
    assert loop.disc_trainer.version == 3  # D trained after every iteration (no rollout judged too old)


def test_benchmark_writes_json_and_markdown_for_both_loops(tmp_path, ray_session):
    throughput = load_benchmark("throughput")
    out = tmp_path / "bench"
    # This checkout as its own baseline tree: the mechanism that times an older commit's fused loop.
    throughput.main(["--algos", "reinforce", "--runners", "0", "--envs", "4", "--warmup", "0", "--iterations", "3",
                     "--profile", "--baseline-tree", str(BENCHMARKS.parent), "--baseline-lockstep", "2", "--lockstep-overrides=resources.precision=bf16-mixed", "--out", str(out), *TINY])
    report = json.loads(out.with_suffix(".json").read_text())
    baseline, fused, rl = report["results"]
    assert baseline["loop"].startswith("fused @ ") and fused["loop"] == "fused" and rl["loop"] == "rl" and rl["envs"] == 4
    assert np.isclose(fused["speedup_vs_baseline"], baseline["s_per_iteration"] / fused["s_per_iteration"])
    lockstep = report["baseline_lockstep"]["cpu"]
    (old1, new1), (old2, new2) = lockstep["s_per_iteration"]  # two rounds, each one iteration of either loop
    assert lockstep["speedups"] == [old1 / new1, old2 / new2] and min(old1, new1, old2, new2) > 0
    assert np.isclose(lockstep["geometric_mean_speedup"], np.sqrt(old1 / new1 * old2 / new2))
    low, high = lockstep["speedup_interval"]
    assert low <= lockstep["geometric_mean_speedup"] <= high
    for row in (baseline, fused, rl):
        # 8 windows of 8 tokens, each with the paper's contiguous block of int(0.5 * 8) - 1 = 3 blanks.
        assert row["masked_tokens_per_iteration"] == 8 * 3
        # Every iteration fills the same 24 blanks, so the median rate is 24 over the median time (3 iterations).
        assert np.isclose(row["masked_tokens_per_s"], 24 / row["s_per_iteration"])
        assert np.isclose(row["all_tokens_per_s"], row["masked_tokens_per_s"] * 8 / 3)
    # The RL loop's memory counts its Ray workers too: more than the fused loop's single process.
    assert rl["peak_memory_mb"] > fused["peak_memory_mb"]
    # ... and splits over them: this process (learner, env runner), D's actor, Ray's daemons.
    assert set(fused["peak_memory_by_process"]) == {"driver"}
    assert {"driver", "DiscriminatorTrainer", "Ray daemons"} <= set(rl["peak_memory_by_process"])
    for row in (fused, rl):
        assert np.isclose(sum(p["mb"] for p in row["peak_memory_by_process"].values()), row["peak_memory_mb"])
    assert np.isclose(rl["vs_fused"], rl["masked_tokens_per_s"] / fused["masked_tokens_per_s"])
    parts = report["profiles"]["cpu"]["parts_s_per_iteration"]
    # The profiled parts nest: the module's forward pass is part of sampling, and neither outlasts the iteration.
    assert rl["s_per_iteration"] * 3 > parts["env runner sample(), in all"] > parts["  module forward (generator, cached decoder, sampling)"] > 0
    assert rl["s_per_iteration"] * 3 > parts["learner update, in all"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| cpu | fused | reinforce |" in table and "| cpu | rl | reinforce | 0 | 4 |" in table
    assert "Peak memory by process, cpu rl reinforce runners=0 envs=4 (MB, PSS): " in table
    assert "the fused loop is" in table and "as fast per iteration as the baseline tree's" in table
    assert lockstep["this_overrides"] == ["resources.precision=bf16-mixed"]  # this tree's loop alone, in bfloat16
    assert "this tree (resources.precision=bf16-mixed) stepped in turn, one iteration each" in table and "Speedup: geometric mean" in table


def test_reward_check_oracle_reward_lowers_the_oracle_nll(tmp_path):
    """The generator update follows its reward: with the oracle's own log-probability as the reward
    (and a critic warmed up first), the oracle NLL of in-fills falls well below the MaskMLE start, and
    so it does with MaskGAN's reward log D when D is the Bayes-optimal discriminator."""
    from maskgan_rl.config import load_config
    from maskgan_rl.train import run_pretraining

    reward_check = load_benchmark("reward_check")
    settings = TINY + [f"run_dir={tmp_path / 'run'}", "data.synthetic_train=400", "data.synthetic_valid=64",
                       "pretrain.lm_steps=20", "pretrain.mle_steps=20", "pretrain.eval_batches=4", "gan.gen_lr=3e-2",
                       "gan.episodes_per_iteration=64",
                       "gan.disc_pretrain_steps=4"]
    torch.set_num_threads(1)
    run_pretraining(load_config("synthetic", settings + ["tracking.enabled=false"]))
    out = tmp_path / "check"
    report = reward_check.main(["--preset", "synthetic", "--rewards", "oracle", "optimal", "d", "noise", "--warmups", "5",
                                "--iterations", "60", "--eval-every", "30", "--out", str(out), *settings])
    rows = {(r["reward"], r["iteration"]): r for r in report["rows"]}
    assert set(rows) == {(reward, i) for reward in ("oracle", "optimal", "d", "noise") for i in (0, 30, 60)}
    assert rows["oracle", 60]["oracle_nll"] < rows["oracle", 0]["oracle_nll"] - 0.3
    assert rows["optimal", 60]["oracle_nll"] < rows["optimal", 0]["oracle_nll"] - 0.1
    # Every arm starts from the same MaskMLE generator and D (its warm-up steps the critic and D, on the
    # same in-fills whatever the reward): at iteration 0 all four report the same numbers.
    start = {key: value for key, value in rows["oracle", 0].items() if key != "reward"}
    assert all({key: value for key, value in rows[reward, 0].items() if key != "reward"} == start for reward in ("optimal", "d", "noise"))
    assert all(r["optimal_disc_accuracy"] > 0.5 for r in rows.values())  # what could be known beats a coin
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == report["rows"]
    assert out.with_suffix(".md").read_text().count("\n| oracle | critic | 5 | 0 |") == 3
    assert out.with_suffix(".png").is_file()
    # The figure: per reward, the oracle NLL's change from the start at each evaluated iteration.
    figure_lines = {line.get_label(): line for line in reward_check._oracle_nll_figure(report["rows"]).axes[0].lines}
    for reward in ("oracle", "optimal", "d", "noise"):
        line = next(line for label, line in figure_lines.items() if label.startswith(f"{reward}, critic baseline"))
        assert list(line.get_xdata()) == [0, 30, 60]
        assert list(line.get_ydata()) == pytest.approx([rows[reward, i]["oracle_nll"] - rows[reward, 0]["oracle_nll"] for i in (0, 30, 60)])
    replot = reward_check.main(["--plot", str(out.with_suffix(".json")), "--out", str(tmp_path / "replot")])
    assert replot["rows"] == report["rows"] and (tmp_path / "replot.png").is_file()


def test_reward_check_can_evaluate_the_moving_average_of_the_generator(tmp_path):
    """--evaluate average scores the generator `maskgan train` ships: the moving average of its weights
    (gan.generator_ema). With a slow average the evaluated generator barely moves while the trained one does."""
    import pytest

    from maskgan_rl.config import load_config
    from maskgan_rl.errors import ConfigError

    reward_check = load_benchmark("reward_check")
    with pytest.raises(ConfigError, match="gan.generator_ema"):
        reward_check.main(["--preset", "synthetic", "--evaluate", "average", "gan.generator_ema=0", *TINY])
    cfg = load_config("synthetic", TINY + [f"run_dir={tmp_path}", "data.synthetic_train=200", "data.synthetic_valid=64",
                                           "pretrain.eval_batches=2", "gan.gen_lr=3e-2", "gan.generator_ema=0.999",
                                           "gan.disc_pretrain_steps=0", "tracking.enabled=false"])
    data = prepare_data(cfg)
    start = Generator(len(data.vocab), cfg.model).state_dict()
    trained, averaged = (
        reward_check.reward_check(cfg, data, start, "oracle", 0, 10, 10, evaluate_average=average) for average in (False, True)
    )
    assert trained[0] == averaged[0]  # iteration 0: both are the start
    moved = {name: abs(rows[1]["masked_perplexity"] - rows[0]["masked_perplexity"])
             for name, rows in (("trained", trained), ("averaged", averaged))}
    assert moved["trained"] > 0 and moved["averaged"] < moved["trained"] / 5


def run_verdict_experiment(tmp_path: Path, *args: str) -> str:
    """The experiment driver as a user runs it, in its own process group: on the deadline the driver and
    the maskgan command it runs are killed together."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [sys.executable, str(BENCHMARKS / "verdict_experiment.py"), *(args or ("run", "--experiments", "synthetic-oracle88")),
               "--seeds", "0", "--tiny", "--root", str(tmp_path / "runs"), "--publish", str(tmp_path / "results")]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    try:
        out, _ = driver.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        raise
    assert driver.returncode == 0, out[-3000:]
    return out


def test_verdict_experiment_runs_every_stage_then_skips_them(tmp_path):
    out = run_verdict_experiment(tmp_path)
    stages = ["pretrain-seed0", "maskgan-seed0", "mle-extra-seed0", "evaluate"]
    for stage in stages:
        assert f"synthetic-oracle88/{stage}: finished" in out
    runs = tmp_path / "runs" / "synthetic-oracle88"
    assert (runs / "maskgan-seed0" / "log.txt").read_text().startswith("$ ")  # each stage logs its own command
    # --tiny: 20 MaskMLE steps, then 2 adversarial iterations of 16 windows -> ceil(2 * 16 / 64) = 1 more step.
    assert load_checkpoint(runs / "mle-extra-seed0" / "checkpoints" / "mle.pt")["steps"] == 21
    assert load_checkpoint(runs / "pretrain-seed0" / "checkpoints" / "mle.pt")["steps"] == 20
    # The later stages reuse the pretraining stage's prepared data (hard links), not a copy built again.
    for stage in ("maskgan-seed0", "mle-extra-seed0"):
        assert (runs / stage / "data" / "train.parquet").samefile(runs / "pretrain-seed0" / "data" / "train.parquet")
    published = tmp_path / "results" / "verdict-synthetic-oracle88"
    results = json.loads((published / "results.json").read_text())
    assert sorted(c["model"] for c in results["checkpoints"]) == ["MaskGAN", "MaskMLE", "MaskMLE+extra"]
    assert sorted(results["verdict"]) == ["MaskGAN", "MaskMLE+extra"]
    for verdict in results["verdict"].values():  # a finite ratio, or explicitly none when nothing matched
        assert (verdict["ratio"] is None and verdict["matched_points"] == 0) or math.isfinite(verdict["ratio"])
    assert [s["stage"].split("/")[1] for s in json.loads((published / "experiment.json").read_text())["stages"]] == stages
    # The summary over published experiments: one row per experiment, and on the oracle one per model with
    # the oracle NLL difference at each evaluated temperature.
    summary = (tmp_path / "results" / "verdict.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in summary if line.startswith("| synthetic-oracle88")] == ["| synthetic-oracle88"] * 3
    oracle_header = next(line for line in summary if line.startswith("| experiment | model |"))
    assert "| T=0.7 | T=1 | T=1.4 |" in oracle_header
    gan_row = next(line for line in summary if line.startswith("| synthetic-oracle88 | MaskGAN |")).split(" | ")
    difference = results["verdict"]["MaskGAN"]["oracle"]["by_temperature"]["temperatures"][0]["difference"]
    assert gan_row[3] == f"{difference:+.3f}"  # one training seed: no interval
    # Each stage is its own top-level MLflow run in the experiment's store (evaluate's points nest under its run).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("verdict-synthetic-oracle88")
    top = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(top) == len(stages)

    again = run_verdict_experiment(tmp_path)
    assert [f"synthetic-oracle88/{stage}: done, skipped" in again for stage in stages] == [True] * 4
    assert ": running" not in again


def test_verdict_sweep_screens_each_trial_on_validation_data_and_writes_the_winner(tmp_path):
    levers = tmp_path / "levers.yaml"
    levers.write_text("all:\n  gan.gen_lr: 2.0e-4\nsynthetic:\n  gan.iterations: 7\n"
                      "screen:\n  plain: {}\n  cold:\n    gan.rollout_temperature: 0.7\n")
    out = run_verdict_experiment(tmp_path, "sweep", "--sweep-on", "synthetic-oracle88", "--levers", str(levers))
    runs = tmp_path / "runs"
    for stage in ("synthetic-oracle88/pretrain-seed0", "sweep-synthetic-oracle88/plain", "sweep-synthetic-oracle88/cold",
                  "sweep-synthetic-oracle88/evaluate"):
        assert f"{stage}: finished" in out
    # Every trial starts from the one seed-0 pretraining and differs from the others only by its lever.
    trained = {trial: load_checkpoint(runs / "sweep-synthetic-oracle88" / trial / "checkpoints" / "maskgan.pt")
               for trial in ("plain", "cold")}
    assert {trial: c["config"]["gan"]["rollout_temperature"] for trial, c in trained.items()} == {"plain": 1.0, "cold": 0.7}
    assert {c["config"]["gan"]["gen_lr"] for c in trained.values()} == {2.0e-4}
    results = json.loads((runs / "sweep-synthetic-oracle88" / "eval" / "results.json").read_text())
    assert sorted(c["model"] for c in results["checkpoints"]) == ["MaskMLE", "cold", "plain"]
    assert results["split"] == "valid"
    ranked = sorted((v["ratio"], name) for name, v in results["verdict"].items() if v["ratio"] is not None)
    chosen = load_benchmark("verdict_experiment").read_levers(runs / "sweep-synthetic-oracle88" / "levers.yaml")
    assert "screen" not in chosen and chosen["synthetic"] == {"gan.iterations": 7}
    assert chosen["all"] == {"gan.gen_lr": 2.0e-4, **({"gan.rollout_temperature": 0.7} if ranked[0][1] == "cold" else {})}
    assert f"trial {ranked[0][1]} has the lowest validation ratio" in out
    table = (tmp_path / "results" / "verdict-sweep-synthetic-oracle88" / "screen.md").read_text().splitlines()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table if line.startswith("| ") and not line.startswith("| trial")}
    assert list(rows) == ["MaskMLE (start)", "plain", "cold"]
    assert rows["cold"][1] == "gan.rollout_temperature=0.7" and rows["plain"][1] == "(none)"
    for trial in ("plain", "cold"):
        entry = next(c for c in results["checkpoints"] if c["model"] == trial)
        assert rows[trial][2] == f"{entry['masked_perplexity']:.1f}"
        assert rows[trial][3].startswith("no match" if results["verdict"][trial]["ratio"] is None else f"{results['verdict'][trial]['ratio']:.3f}")


def test_extra_maskmle_steps_match_the_windows_the_adversarial_generator_learned_from():
    experiment = load_benchmark("verdict_experiment")
    cfg = load_config("synthetic", ["gan.iterations=1000", "gan.critic_warmup_iterations=100",
                                    "gan.episodes_per_iteration=128", "pretrain.batch_size=64"])
    assert experiment.extra_mle_steps(cfg) == 1800  # 900 updates x 128 windows / 64 windows per step
    cfg = load_config("synthetic", ["gan.iterations=3", "gan.episodes_per_iteration=16", "pretrain.batch_size=64"])
    assert experiment.extra_mle_steps(cfg) == 1  # 48 windows: one step, rounded up


def test_every_verdict_stage_after_the_first_pretraining_links_prepared_data(tmp_path):
    experiment = load_benchmark("verdict_experiment")
    args = argparse.Namespace(root=tmp_path, seeds=[0, 1], tiny=True, temperatures=None, baseline_temperatures=None)
    training, evaluate = experiment.experiment_stages(experiment.EXPERIMENTS["synthetic-oracle88"], args, {})
    root = tmp_path / "synthetic-oracle88"
    assert {s.name.split("/")[1]: s.data_from for s in training} == {
        "pretrain-seed0": None, "pretrain-seed1": root / "pretrain-seed0",
        "maskgan-seed0": root / "pretrain-seed0", "mle-extra-seed0": root / "pretrain-seed0",
        "maskgan-seed1": root / "pretrain-seed1", "mle-extra-seed1": root / "pretrain-seed1",
    }
    # Linked when the source is complete; an interrupted target (no manifest) is linked anew; a finished one is kept.
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    for name in ("manifest.json", "train.parquet"):
        (source / name).write_text(name)
    target.mkdir()
    (target / "train.parquet").write_text("half-written")
    experiment.share_data(source, target)
    assert (target / "train.parquet").samefile(source / "train.parquet") and (target / "manifest.json").is_file()
    (target / "train.parquet").unlink()
    (target / "train.parquet").write_text("rebuilt by maskgan")
    experiment.share_data(source, target)
    assert (target / "train.parquet").read_text() == "rebuilt by maskgan" and (source / "train.parquet").read_text() == "train.parquet"
    experiment.share_data(tmp_path / "missing", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_verdict_experiment_refuses_levers_that_change_pretraining(tmp_path, capsys):
    levers = tmp_path / "levers.yaml"
    experiment = load_benchmark("verdict_experiment")
    for section, where in (("ptb:\n  pretrain.mle_steps: 10\n", "ptb.pretrain.mle_steps"),
                           ("screen:\n  bigger:\n    model.hidden: 256\n", "screen.bigger.model.hidden")):
        levers.write_text("all:\n  gan.gen_lr: 1.0e-4\n" + section)
        assert experiment.main(["plan", "--levers", str(levers), "--root", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{where} changes pretraining" in err


def test_critic_designs_trains_each_design_from_one_pretraining_and_reports_them(tmp_path):
    critic_designs = load_benchmark("critic_designs")
    verdict_tiny = load_benchmark("verdict_experiment").TINY
    overrides = [*verdict_tiny, "gan.iterations=2", "resources.num_cpus=2"]
    # The second design is a named set of overrides: the value head, trained in bfloat16.
    args = ["--preset", "synthetic", "--designs", "lstm", "stop-bf16:gan.critic=head_stop_gradient,resources.precision=bf16-mixed",
            "--root", str(tmp_path / "runs"),
            "--out", str(tmp_path / "critic"), *overrides]
    critic_designs.main(args)
    rows = {r["design"]: r for r in json.loads((tmp_path / "critic.json").read_text())["results"]}
    assert sorted(rows) == ["lstm", "stop-bf16"]
    for row in rows.values():
        assert row["status"] == "finished" and row["iterations"] == 2
        assert -1.0 <= row["explained_variance_second_half"] <= 1.0 and row["value_loss_second_half"] > 0
        assert math.isfinite(row["oracle_nll_end"])
    # Both designs start from the one MaskMLE, and each trains the critic its config names.
    runs = tmp_path / "runs"
    starts = {d: load_checkpoint(runs / d / "checkpoints" / "mle.pt")["models"]["generator"] for d in rows}
    assert all(torch.equal(starts["lstm"][k], v) for k, v in starts["stop-bf16"].items())
    shipped = {d: load_checkpoint(runs / d / "checkpoints" / "maskgan.pt") for d in rows}
    critics = {d: checkpoint["models"]["critic"] for d, checkpoint in shipped.items()}
    assert "lstm.layers.0.weight_ih_l0" in critics["lstm"] and sorted(critics["stop-bf16"]) == ["head.bias", "head.weight"]
    assert [shipped[d]["config"]["resources"]["precision"] for d in ("lstm", "stop-bf16")] == ["auto", "bf16-mixed"]
    # Run again: every stage is found done, nothing retrains.
    before = (runs / "lstm" / "checkpoints" / "maskgan.pt").stat().st_mtime_ns
    critic_designs.main(args)
    assert (runs / "lstm" / "checkpoints" / "maskgan.pt").stat().st_mtime_ns == before


def test_arithmetic_limit_counts_lstm_and_product_operations_by_hand():
    limit = load_benchmark("arithmetic_limit")
    lstm, x = torch.nn.LSTM(16, 32, batch_first=True), torch.randn(4, 7, 16, requires_grad=True)
    a, b = torch.randn(3, 5), torch.randn(5, 2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profiler:
        lstm(x)[0].sum().backward()
        a @ b
    counts = limit.operation_counts(profiler.events())
    forward = 2 * 7 * 4 * (4 * 32 * 16 + 4 * 32 * 32)  # 28 tokens through the input and recurrent weights
    assert counts["lstm forward"] == pytest.approx(forward / 1e9)
    assert counts["lstm backward"] == pytest.approx(2 * forward / 1e9)
    assert counts["matrix products"] == pytest.approx(2 * 3 * 5 * 2 / 1e9)


def test_arithmetic_limit_reports_each_precision_against_its_gemm_rate(tmp_path):
    limit = load_benchmark("arithmetic_limit")
    out = tmp_path / "limit"
    limit.main(["--sizes", "cpu", "--warmup", "1", "--iterations", "1", "--out", str(out), *TINY])
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    assert [r["precision"] for r in rows] == ["32", "bf16-mixed"]
    assert rows[0]["gflop_per_iteration"] == rows[1]["gflop_per_iteration"]  # the same arithmetic, counted once
    for r in rows:
        assert all(g > 0 for g in r["gflop_per_iteration"].values()), r
        assert r["limit_s"] == pytest.approx(r["gflop_total"] / r["gemm_gflop_per_s"])
        assert r["share_of_limit"] == pytest.approx(r["limit_s"] / r["s_per_iteration"])
    assert "| cpu | bf16-mixed |" in out.with_suffix(".md").read_text()


def test_compare_trees_summarises_rounds_by_hand(tmp_path):
    # Two rounds already run: RL/fused within runs is 0.5 and 0.5 (baseline), 0.8 and 0.2 (this), so this
    # over baseline is 1.6 and 0.4 per round, geometric mean 0.8; RL time this / baseline 1 and 2 -> sqrt(2).
    compare = load_benchmark("compare_trees")
    out = tmp_path / "compare"
    runs = tmp_path / "compare-runs"
    runs.mkdir()
    timings = {"baseline": [(1.0, 2.0), (2.0, 4.0)], "this": [(1.6, 2.0), (1.6, 8.0)]}  # (fused, rl) s/iteration
    for name, rounds in timings.items():
        for r, (fused, rl) in enumerate(rounds):
            rows = [{"loop": "fused", "s_per_iteration": fused}, {"loop": "rl", "s_per_iteration": rl}]
            (runs / f"{name}-{r}.json").write_text(json.dumps({"results": rows}))
    out.with_suffix(".json").write_text(json.dumps({"commits": {"baseline": "aaa", "this": "bbb"}}))
    compare.main(["--baseline-tree", str(tmp_path), "--rounds", "2", "--out", str(out), "--summarise"])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["rl_over_fused"]["baseline"]["mean"] == pytest.approx(0.5)
    assert summary["rl_over_fused"]["this"]["mean"] == pytest.approx(0.4)
    assert summary["rl_over_fused_this_over_baseline"]["mean"] == pytest.approx(0.8)
    assert summary["rl_time_this_over_baseline"]["mean"] == pytest.approx(2 ** 0.5)
    low, high = summary["rl_over_fused_this_over_baseline"]["low"], summary["rl_over_fused_this_over_baseline"]["high"]
    assert low < 0.4 and high > 1.6  # two rounds this far apart: a wide interval
    assert "bbb against aaa" in out.with_suffix(".md").read_text() and out.with_suffix(".png").stat().st_size > 0


def test_weight_transfer_loads_the_actors_d_both_ways_and_reports_them(tmp_path, ray_session):
    import ray

    from maskgan_rl.models.discriminator import Discriminator
    from maskgan_rl.rl.discriminator_actor import DiscriminatorTrainer

    weight_transfer = load_benchmark("weight_transfer")
    cfg = load_config("synthetic", TINY + [f"run_dir={tmp_path / 'run'}"])
    actor = ray.remote(DiscriminatorTrainer).remote(cfg, 50, Generator(50, cfg.model).state_dict())
    expected, _ = ray.get(actor.weights.remote())
    for method in weight_transfer.METHODS.values():
        local = Discriminator.from_config(50, cfg)
        assert not all(torch.equal(value, expected[name]) for name, value in local.state_dict().items())
        times = weight_transfer.transfer_seconds(actor, method, local, repeats=2)
        assert len(times) == 2 and min(times) > 0
        assert all(torch.equal(value, expected[name]) for name, value in local.state_dict().items())
    ray.kill(actor)

    out = tmp_path / "weights"
    weight_transfer.main(["--sizes", "cpu", "--repeats", "2", "--out", str(out)])
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    assert [row["as"] for row in rows] == ["torch tensors", "numpy arrays"]
    assert rows[0]["megabytes"] == rows[1]["megabytes"] > 0 and all(row["repeats"] == 2 for row in rows)
    assert all(row["min_s"] <= row["median_s"] <= row["max_s"] for row in rows)
    assert "| cpu | numpy arrays |" in out.with_suffix(".md").read_text()
