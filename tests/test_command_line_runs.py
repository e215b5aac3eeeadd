"""Whole runs through the command line, as a user or a cluster job runs them.

- Every algorithm: `maskgan train` -> `maskgan.pt` -> `maskgan evaluate`.
- A killed driver: `maskgan train` in a process of its own SIGKILLs itself at a fixed point (in
  adversarial iteration k, after its metrics are logged and before its checkpoint is written; or
  between the two pretraining stages), then the same command is run again (`--resume auto`, what a
  cluster job's retries run, or `--resume`). The finished run must equal an uninterrupted one: the
  same final weights and, in MLflow, exactly the same value at every step of every metric (timings
  aside). The killed driver's Ray processes must all end with it.

The uninterrupted runs are shared by both tests (one per algorithm, in this process's Ray). The
env runner is a remote one (resources.num_env_runners=1) and the learner the driver's.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.config import ALGORITHM_NAMES
from maskgan_rl.tracking import RUN_ID_FILE

from processes import send_signal, session_processes
from runs import logged_metrics, tiny_overrides

pytestmark = pytest.mark.slow

ITERATIONS = 5
RUN_TIMEOUT_S = 600  # one `maskgan train` of these tiny runs takes well under a minute
# Wall-clock measurements differ between any two runs; every other metric must repeat exactly.
TIMINGS = re.compile(r"(^|/)time_|_s$")
# Of RLlib's own results (rllib/*), the learning statistics must repeat exactly; its bookkeeping
# (timers, weight sequence numbers, one-off model sizes) lives in the algorithm object, which a resumed
# run builds anew, so those are only held to one value per step.
RLLIB_LEARNING_STATS = re.compile(r"^rllib/.*/(entropy|policy_loss|vf_loss|total_loss|vf_explained_var|curr_lr|"
                                  r"mean_kl_loss|episode_return_mean|episode_len_mean)$")


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{key: value for key, value in record.items() if not TIMINGS.search(key)} for record in history]


def overrides(run_dir: Path, algo: str) -> list[str]:
    # device=cpu on a machine with a GPU too: runs in different processes repeat bit for bit on CPU
    # kernels, which GPU ones (cuDNN's LSTM) do not promise.
    return [*tiny_overrides(run_dir, ITERATIONS), f"gan.algo={algo}", "gan.eval_every=2", "device=cpu"]


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory) -> Callable[[str], Path]:
    """algo -> run_dir of a finished uninterrupted run (trained on first use)."""
    runs: dict[str, Path] = {}

    def run(algo: str) -> Path:
        if algo not in runs:
            run_dir = tmp_path_factory.mktemp(f"uninterrupted-{algo}") / "run"
            assert main(["train", *overrides(run_dir, algo)]) == 0
            runs[algo] = run_dir
        return runs[algo]

    return run


@pytest.mark.parametrize("algo", ALGORITHM_NAMES)
def test_every_algorithm_trains_and_evaluates_through_the_command_line(uninterrupted, algo, capsys):
    run_dir = uninterrupted(algo)
    folder = run_dir / "checkpoints"
    final, mle = load_checkpoint(folder / "maskgan.pt"), load_checkpoint(folder / "mle.pt")
    assert final["kind"] == "maskgan" and final["config"]["gan"]["algo"] == algo and final["iteration"] == ITERATIONS
    # Adversarial training moved the generator away from its MaskMLE start.
    assert any(not torch.equal(value, mle["models"]["generator"][name]) for name, value in final["models"]["generator"].items())
    assert [record["iteration"] for record in final["history"]] == list(range(ITERATIONS + 1))
    capsys.readouterr()

    out = run_dir / "eval"
    assert main([
        "evaluate", str(folder / "maskgan.pt"), str(folder / "mle.pt"), "--out", str(out), "tracking.enabled=false",
        "--samples", "20", "--temperatures", "1.0", "--bleu-references", "10", "--reverse-lm-steps", "0", "--table-rows", "2",
    ]) == 0
    gan_entry, mle_entry = json.loads((out / "results.json").read_text())["checkpoints"]
    assert (gan_entry["kind"], mle_entry["kind"]) == ("maskgan", "mle")
    # Both fill in better than a uniform guess over the 30 words (+ <unk>, <eos>...), and differently.
    vocab = len(final["vocab"])
    assert 1 < gan_entry["masked_perplexity"] < vocab and 1 < mle_entry["masked_perplexity"] < vocab
    assert gan_entry["masked_perplexity"] != mle_entry["masked_perplexity"]
    assert all(math.isfinite(point["oracle_nll"]) and point["oracle_nll"] > 0 for point in gan_entry["points"])


# The command a killed driver was started with and the one run again.
RESUME_AUTO, RESUME = ["--resume", "auto"], ["--resume"]
DRIVER_KILLED_AT = """
import os, signal, sys
from maskgan_rl.cli import main

stage, at = sys.argv[1], int(sys.argv[2])
if stage == "gan":  # in iteration `at`, once its metrics are logged: when its checkpoint is asked for
    from maskgan_rl.rl.adversarial import AdversarialTrainer

    get_state = AdversarialTrainer.get_state

    def get_state_or_die(trainer):
        if trainer.iteration == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return get_state(trainer)

    AdversarialTrainer.get_state = get_state_or_die
else:  # between the stages: the LM is saved, MaskMLE not started
    from maskgan_rl.models.generator import Generator

    Generator.init_from_language_model = lambda generator, lm: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(main(["train", *sys.argv[3:]]))
"""


def run_driver(args: list[str], log: Path, killed_at: tuple[str, int] | None = None) -> int:
    """`maskgan train ARGS` in a session of its own (its Ray processes stay in it); its exit status,
    once every process of its Ray has ended."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    command = [sys.executable, "-m", "maskgan_rl.cli", "train", *args]
    if killed_at is not None:
        command = [sys.executable, "-c", DRIVER_KILLED_AT, killed_at[0], str(killed_at[1]), *args]
    with log.open("ab") as out:
        driver = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        code = driver.wait(timeout=RUN_TIMEOUT_S)
        # The driver's Ray (gcs, raylet, workers: the env runner and D actors) ends with it, killed
        # or not. Except Ray's two agents: they see their raylet die at once, then spend 60 s (a fixed
        # timeout of ray._private.utils.publish_error_to_driver) reporting it to the dead GCS before
        # they exit by themselves; they are killed below instead of waited for.
        deadline = time.monotonic() + 60
        while (left := _not_agents(session_processes([driver.pid]))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes left behind by the driver: {left}"
        return code
    finally:
        driver.kill()
        for pid in session_processes([driver.pid]):
            send_signal(pid, signal.SIGKILL)


def _not_agents(processes: dict[int, str]) -> dict[int, str]:
    return {pid: command for pid, command in processes.items() if not command.startswith(RAY_AGENTS)}


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.mark.timeout(1800)  # three or four `maskgan train` processes, and the uninterrupted run
@pytest.mark.parametrize("algo, first, again, kills, ruined", [
    # A job that always runs `--resume auto`: killed between the pretraining stages, then in
    # iteration 3; the newest checkpoint is then ruined on top, as a disk without atomic renames could
    # leave it, so the last run goes back to iteration 1.
    ("reinforce", RESUME_AUTO, RESUME_AUTO, [("mle", 0), ("gan", 3)], True),
    ("ppo", [], RESUME, [("gan", 3)], False),
], ids=["reinforce-resume-auto", "ppo-resume"])
def test_a_killed_driver_run_again_finishes_as_an_uninterrupted_run(uninterrupted, tmp_path, algo, first, again, kills, ruined):
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    folder = run_dir / "checkpoints"
    args = overrides(run_dir, algo)

    first_run_id = None
    for attempt, killed_at in enumerate(kills):
        log.write_text("")
        assert run_driver([*(again if attempt else first), *args], log, killed_at) == -signal.SIGKILL, log.read_text()[-3000:]
        output = log.read_text()
        run_id = (run_dir / f"{RUN_ID_FILE}.train").read_text()
        assert first_run_id in (None, run_id)  # one MLflow run throughout
        first_run_id = run_id
        if attempt:  # (after a kill between the pretraining stages) the LM is loaded, MaskMLE trained
            assert "[lm] loaded" in output and "[mle] " in output and "[mle] loaded" not in output
        assert not (folder / "maskgan.pt").exists()
        kept = sorted(path.name for path in folder.glob("gan-*.pt"))
        stage, at = killed_at
        if stage == "gan":
            assert kept == [f"gan-{at - 2:06d}.pt", f"gan-{at - 1:06d}.pt"]  # the newest two
            # Iteration `at` was logged before the kill (and must not be logged again).
            assert max(step for step, _ in logged_metrics(run_dir)["gan/disc_loss"]) == at
        else:
            assert kept == [] and (folder / "lm.pt").is_file() and not (folder / "mle.pt").exists()
    if ruined:
        newest = folder / kept[-1]
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    log.write_text("")
    assert run_driver([*again, *args], log) == 0, log.read_text()[-3000:]
    output = log.read_text()
    resumed_from = folder / kept[0 if ruined else -1]
    assert f"resumed from {resumed_from} at iteration {int(resumed_from.stem.split('-')[1])}" in output, output[-3000:]
    assert ("skipping corrupt checkpoint" in output) == ruined
    assert (run_dir / f"{RUN_ID_FILE}.train").read_text() == first_run_id

    reference = uninterrupted(algo)
    expected, resumed = load_checkpoint(reference / "checkpoints" / "maskgan.pt"), load_checkpoint(folder / "maskgan.pt")
    for network in ("generator", "critic"):
        for name, value in expected["models"][network].items():
            assert torch.equal(resumed["models"][network][name], value), (network, name)
    assert untimed(resumed["history"]) == untimed(expected["history"])  # the training curves

    logged, expected_logged = logged_metrics(run_dir), logged_metrics(reference)
    assert set(logged) == set(expected_logged)
    assert any(RLLIB_LEARNING_STATS.search(key) for key in logged)  # RLlib's statistics are compared too
    for key, values in logged.items():
        steps = [step for step, _ in values]
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"
        if key.startswith("rllib/") and not RLLIB_LEARNING_STATS.search(key):
            continue
        if not TIMINGS.search(key):
            assert sorted(values) == sorted(expected_logged[key]), key
        else:
            assert sorted(steps) == sorted(step for step, _ in expected_logged[key]), key
