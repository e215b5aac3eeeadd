"""Training survives the death of its processes: env runners, the discriminator actor, the driver.

Every kill is a real SIGKILL of a real process during a real (tiny) training run:
- env runner: killed from here between iterations (pid found through RLlib), and by its own
  environment in the middle of sampling; RLlib restarts it with the current weights;
- discriminator actor: killed from here between iterations, and inside a call from an env runner
  in the middle of an iteration; Ray restarts it and it resumes from its saved state;
- a runner that dies in every sample: the run stops with one line instead of retrying for ever;
- driver: see test_command_line_runs.py (a killed `maskgan train` run again); here, that a resumed
  MLflow run never logs a step twice;
Then the divergence guard: NaN metrics or a learner_masked_perplexity past gan.max_masked_perplexity stop
the run with one line naming the last good checkpoint, which is kept.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Callable

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray.rllib.env.env_runner_group import EnvRunnerGroup

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.config import load_config
from maskgan_rl.loading import load_generator
from maskgan_rl.rl.adversarial import AdversarialTrainer
from maskgan_rl.rl.callbacks import MAX_RESTORES_PER_ITERATION, MaskGANCallbacks
from maskgan_rl.tracking import RUN_ID_FILE, Tracker
from maskgan_rl.train import run_training

from runs import logged_metrics, tiny_overrides

pytestmark = pytest.mark.slow


def metric_steps(run_dir: Path) -> dict[str, list[int]]:
    """Every `gan/*` metric of the run's MLflow history -> the steps logged, in logging order."""
    return {key: [step for step, _ in values] for key, values in logged_metrics(run_dir, "gan/").items()}


def metric_values(run_dir: Path, key: str) -> dict[int, float]:
    return dict(logged_metrics(run_dir, key)[key])


def assert_one_value_per_iteration(run_dir: Path, iterations: int) -> None:
    steps = metric_steps(run_dir)
    for key in ("gan/episode_reward_mean", "gan/learner_masked_perplexity", "gan/disc_loss", "gan/env_runner_restarts"):
        assert sorted(steps[key]) == list(range(1, iterations + 1)), (key, steps[key])
    for key, logged in steps.items():
        assert len(logged) == len(set(logged)), f"{key} logged twice at some step: {logged}"


def runner_pids(trainer: AdversarialTrainer) -> list[int]:
    return trainer.algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)


def kill_during_next_sample(runners: EnvRunnerGroup, pid: int | None = None, at_step: int = 3) -> None:
    """The remote runner's environment SIGKILLs process `pid` (default: the runner's own) at its
    `at_step`-th step of the next sample: a death in the middle of an iteration."""

    def arm(runner) -> None:
        env = runner.env.unwrapped
        step, count = env.step, [0]

        def step_and_kill(actions):
            count[0] += 1
            if count[0] == at_step:
                os.kill(pid or os.getpid(), signal.SIGKILL)
            return step(actions)

        env.step = step_and_kill  # an instance attribute: the wrappers around the env call this one

    runners.foreach_env_runner(arm, local_env_runner=False)


def discriminator_pid(trainer: AdversarialTrainer) -> int:
    return ray.get(trainer.disc_actor.__ray_call__.remote(lambda actor: os.getpid()))


def test_env_runner_and_discriminator_deaths_are_survived(ray_session, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    run_dir = tmp_path / "run"
    cfg = load_config("synthetic", tiny_overrides(run_dir, iterations=6))
    seen: dict[str, object] = {}
    faults: dict[int, Callable[[AdversarialTrainer], None]] = {}

    def kill_runner_from_outside(trainer: AdversarialTrainer) -> None:
        seen["runner_pid"] = runner_pids(trainer)[0]
        os.kill(seen["runner_pid"], signal.SIGKILL)

    def kill_discriminator_from_outside(trainer: AdversarialTrainer) -> None:
        before = ray.get(trainer.disc_actor.get_state.remote())
        seen["disc_pid"] = discriminator_pid(trainer)
        os.kill(seen["disc_pid"], signal.SIGKILL)
        # The next call waits for the restarted actor, which must hold exactly the state it had.
        after = ray.get(trainer.disc_actor.get_state.remote())
        assert discriminator_pid(trainer) != seen["disc_pid"]
        assert after["version"] == before["version"] >= 1
        assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
        seen["restored_version"] = after["version"]

    faults.update({
        2: kill_runner_from_outside,  # idle: the next call to it fails
        3: lambda trainer: kill_during_next_sample(trainer.algo.env_runner_group),  # busy: dies half-way through the sample
        4: kill_discriminator_from_outside,
        # While the runner samples: its episodes reach D only once D is back.
        5: lambda trainer: kill_during_next_sample(trainer.algo.env_runner_group, pid=discriminator_pid(trainer)),
    })
    real_train_iteration = AdversarialTrainer.train_iteration

    def train_iteration_with_faults(trainer: AdversarialTrainer) -> dict:
        fault = faults.get(trainer.iteration + 1)
        if fault is not None:
            fault(trainer)
        metrics = real_train_iteration(trainer)
        # The (restarted) runner samples with the learner's generator and the actor's current D.
        learner = trainer.generator_state_dict()
        on_runner = trainer.algo.env_runner_group.foreach_env_runner(
            lambda runner: ({k: v.clone() for k, v in runner.module.generator.state_dict().items()},
                            runner.env.unwrapped.discriminator_version),
            local_env_runner=False,
        )[0]
        assert all(torch.equal(on_runner[0][k], learner[k]) for k in learner)
        assert on_runner[1] == metrics["disc_version"]
        seen.setdefault("metrics", []).append(metrics)
        return metrics

    monkeypatch.setattr(AdversarialTrainer, "train_iteration", train_iteration_with_faults)
    final = run_training(cfg)

    metrics = seen["metrics"]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert [m["env_runner_restarts"] for m in metrics] == [0, 1, 1, 0, 0, 0]
    assert [m["disc_actor_restarts"] for m in metrics] == [0, 0, 0, 1, 1, 0]
    # Every iteration sampled and learned as usual, and D carried on from its saved state
    # (a D started afresh would count its versions from 0 again).
    assert all(m["masked_tokens"] > 0 and "episode_reward_mean" in m and "policy_loss" in m for m in metrics)
    assert [m["disc_version"] for m in metrics] == list(range(1, 7))
    assert seen["restored_version"] == 3

    # The log line of the iteration and MLflow both say what happened.
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("[gan] ")]
    assert any(line.startswith("[gan] 2/6") and "env_runner_restarts=1" in line for line in lines), lines
    assert any(line.startswith("[gan] 4/6") and "disc_actor_restarts=1" in line for line in lines), lines
    # The evaluated (last) iteration's line also says how good the in-fills are and what D knows.
    assert any(line.startswith("[gan] 6/6") and "eval/oracle_nll=" in line and "eval/disc_heldout_accuracy=" in line
               for line in lines), lines
    assert metric_values(run_dir, "gan/env_runner_restarts") == {1: 0, 2: 1, 3: 1, 4: 0, 5: 0, 6: 0}
    assert metric_values(run_dir, "gan/disc_actor_restarts") == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 0}
    assert_one_value_per_iteration(run_dir, 6)
    generator, _, checkpoint = load_generator(final)
    assert checkpoint["iteration"] == 6

    # The run ends by saying what the adversarial stage did to the shipped generator against its MaskMLE start.
    start, end = checkpoint["history"][0], checkpoint["history"][-1]
    assert (start["iteration"], end["iteration"]) == (0, 6)
    change = end["eval/oracle_nll"] - start["eval/oracle_nll"]
    (summary,) = [line for line in lines if "against its MaskMLE start" in line]
    assert f"oracle NLL {start['eval/oracle_nll']:.4g} -> {end['eval/oracle_nll']:.4g}" in summary
    assert ("worse" if change > 0 else "better" if change < 0 else "unchanged") in summary.split("oracle NLL")[1].split(";")[0]
    assert metric_values(run_dir, "gan/eval/delta_oracle_nll") == {6: pytest.approx(change)}
    run_id = (run_dir / f"{RUN_ID_FILE}.train").read_text().strip()
    tags = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["maskgan.adversarial_summary"] == summary.removeprefix("[gan] ")


def test_a_resumed_run_never_logs_a_step_it_already_holds(tmp_path):
    """E.g. a driver killed during pretraining: the rerun repeats its first steps."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("synthetic", [f"run_dir={tmp_path / 'run'}", f"tracking.tracking_uri={uri}"])
    with Tracker(cfg, "train") as first:
        for step in (1, 2):
            first.log_metrics({"lm/train_loss": 10.0 + step}, step=step)
    with Tracker(cfg, "train") as again:
        for step in (1, 2, 3):
            again.log_metrics({"lm/train_loss": 20.0 + step}, step=step)
        with again.nested("evaluation", params={}, tags={}):  # a nested run is a new run: all logged
            again.log_metrics({"lm/train_loss": 30.0}, step=1)
    assert again.run_id == first.run_id
    client = MlflowClient(uri)
    history = client.get_metric_history(first.run_id, "lm/train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 11.0), (2, 12.0), (3, 23.0)]
    children = client.search_runs([client.get_run(first.run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert [run.data.metrics["lm/train_loss"] for run in children] == [30.0]


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(ray_session, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    args = tiny_overrides(run_dir, iterations=2)
    assert main(["train", *args]) == 0
    folder = run_dir / "checkpoints"
    good = folder / "gan-000002.pt"
    capsys.readouterr()

    # A learner_masked_perplexity past the limit: the next iteration stops the run.
    # A runtime failure, not a usage error: exit status 1.
    assert main(["train", "--resume", *args, "gan.iterations=4", "gan.max_masked_perplexity=1.0001"]) == 1
    err = capsys.readouterr().err  # progress lines, then the error as one line
    message = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert message.startswith("maskgan train: error: training diverged at iteration 3 (learner_masked_perplexity")
    assert f"the last good checkpoint is {good}" in message and "gan.gen_lr" in message

    # NaN in any metric (a loss, here) does the same.
    real_train_iteration = AdversarialTrainer.train_iteration

    def nan_loss(trainer: AdversarialTrainer) -> dict:
        return {**real_train_iteration(trainer), "policy_loss": float("nan")}

    monkeypatch.setattr(AdversarialTrainer, "train_iteration", nan_loss)
    assert main(["train", "--resume", *args, "gan.iterations=4"]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged at iteration 3 (non-finite policy_loss)" in message
    assert f"the last good checkpoint is {good}" in message

    # Nothing was written over the good checkpoint, and nothing past it was logged.
    assert sorted(p.name for p in folder.glob("gan-*.pt")) == ["gan-000001.pt", "gan-000002.pt"]
    assert load_checkpoint(good)["iteration"] == 2
    assert max(metric_steps(run_dir)["gan/learner_masked_perplexity"]) == 2


@pytest.mark.timeout(300)  # without the guard the run retries for ever
def test_a_runner_that_fails_every_time_stops_the_run_with_one_line(ray_session, tmp_path, monkeypatch, capsys):
    """RLlib retries an iteration whose runner died for as long as it keeps dying; a runner that dies in
    every sample (here: re-armed after each restore) must stop the run, not hang it."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(run_dir, iterations=3)
    real_train_iteration = AdversarialTrainer.train_iteration

    def dies_from_iteration_2(trainer: AdversarialTrainer) -> dict:
        if trainer.iteration == 1:
            kill_during_next_sample(trainer.algo.env_runner_group)
        return real_train_iteration(trainer)

    real_recreated = MaskGANCallbacks.on_env_runners_recreated
    restores = []

    def recreated_and_rearmed(callbacks: MaskGANCallbacks, *, algorithm, env_runner_group, **kwargs) -> None:
        restores.append(1)
        real_recreated(callbacks, algorithm=algorithm, env_runner_group=env_runner_group, **kwargs)
        kill_during_next_sample(env_runner_group)  # the restored runner dies in its next sample too

    monkeypatch.setattr(AdversarialTrainer, "train_iteration", dies_from_iteration_2)
    monkeypatch.setattr(MaskGANCallbacks, "on_env_runners_recreated", recreated_and_rearmed)
    assert main(["train", *args]) == 1  # a runtime failure
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"maskgan train: error: env runners failed {MAX_RESTORES_PER_ITERATION + 1} times in a row")
    assert "--resume" in message
    assert len(restores) == MAX_RESTORES_PER_ITERATION + 1
    # The iteration before the failures is the last checkpoint, intact.
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("gan-*.pt")) == ["gan-000001.pt"]
    assert load_checkpoint(run_dir / "checkpoints" / "gan-000001.pt")["iteration"] == 1
