"""`maskgan tune`: the search space's parsing and its one-line errors, and a real sweep on Ray Tune.

The sweep test runs the command line in a subprocess on a tiny synthetic config: 4 trials, one of
which ASHA stops, a driver SIGKILLed after two trials finished and then resumed; it checks Tune's
record of the trials, the MLflow parent and children, the shared pretraining, the table and the
best config that `--preset` reads back.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from maskgan_rl.cli import main
from maskgan_rl.config import load_config, with_values
from maskgan_rl.errors import ConfigError
from maskgan_rl.tune import parse_search_space, pretraining_configs, trial_resources


@pytest.fixture(scope="module")
def base():
    return load_config("synthetic", [])


def test_each_distribution_becomes_its_tune_domain(base):
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

    dims = parse_search_space({
        "gan.gen_lr": {"loguniform": [1e-5, 1e-3]},
        "gan.disc_lr": {"uniform": [1e-4, 2e-3]},
        "gan.disc_steps": {"randint": [1, 4]},
        "gan.algo": {"choice": ["reinforce", "ppo"]},
        "seed": {"grid": [0, 1]},
    }, base)
    domains = {dim.key: dim.domain() for dim in dims}
    log_lr = domains["gan.gen_lr"]
    assert isinstance(log_lr, Float) and (log_lr.lower, log_lr.upper) == (1e-5, 1e-3)
    assert isinstance(log_lr.get_sampler(), LogUniform)
    assert (domains["gan.disc_lr"].lower, domains["gan.disc_lr"].upper) == (1e-4, 2e-3)
    steps = domains["gan.disc_steps"]
    assert isinstance(steps, Integer) and (steps.lower, steps.upper) == (1, 4)
    assert isinstance(domains["gan.algo"], Categorical) and domains["gan.algo"].categories == ["reinforce", "ppo"]
    assert domains["seed"] == {"grid_search": [0, 1]}
    # randint's upper end is exclusive, as in Tune: the largest value checked against the config is 3
    assert [dim.values() for dim in dims if dim.key == "gan.disc_steps"] == [[1, 3]]


@pytest.mark.parametrize("space, words", [
    ({"gan.gen_rate": {"uniform": [0.1, 0.2]}}, ["unknown key 'gan.gen_rate'", "gen_lr"]),
    ({"gan.gen_lr": {"normal": [0.0, 1.0]}}, ["unknown distribution 'normal'", "loguniform"]),
    ({"gan.gen_lr": {"uniform": [1e-3, 1e-4]}}, ["gan.gen_lr", "low < high"]),
    ({"gan.gen_lr": {"uniform": [1e-3, 1e-3]}}, ["gan.gen_lr", "low < high"]),
    ({"gan.gen_lr": {"loguniform": [0.0, 1e-3]}}, ["gan.gen_lr", "low > 0"]),
    ({"gan.gamma": {"uniform": [0.5, 1.5]}}, ["gan.gamma at 1.5", "out of range", "[0, 1]"]),
    ({"gan.algo": {"choice": ["ppo", "sac"]}}, ["gan.algo at 'sac'", "reinforce | ppo"]),
    ({"gan.disc_steps": {"randint": [1, 2.5]}}, ["gan.disc_steps", "two integers"]),
    ({"gan.disc_steps": {"uniform": [1, 3]}}, ["gan.disc_steps is an integer", "randint"]),
    ({"gan.disc_steps": {"randint": [-1, 2]}}, ["gan.disc_steps at -1", ">= 0"]),
    ({"model.hidden": {"randint": [8, 64]}}, ["model.hidden changes pretraining", "choice or grid"]),
    ({"run_dir": {"choice": ["a", "b"]}}, ["run_dir cannot be swept"]),
    ({"gan.gen_lr": 1e-4}, ["gan.gen_lr", "one distribution"]),
    ({"gan.gen_lr": {"choice": []}}, ["gan.gen_lr", "takes a list"]),
    ([], ["a mapping of dotted keys"]),
])
def test_a_bad_search_space_is_one_line_naming_the_problem(base, space, words):
    with pytest.raises(ConfigError) as err:
        parse_search_space(space, base)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_pretraining_runs_once_per_distinct_pretraining_config(base):
    dims = parse_search_space({
        "pretrain.mle_steps": {"grid": [5, 5, 0, 5]},  # two distinct values
        "gan.gen_lr": {"loguniform": [1e-5, 1e-3]},  # adversarial only: shares pretraining
        "gan.algo": {"choice": ["reinforce", "ppo"]},
    }, base)
    configs = pretraining_configs(base, dims)
    assert sorted(cfg.pretrain.mle_steps for cfg in configs) == [0, 5]
    assert all(cfg.gan.gen_lr == base.gan.gen_lr for cfg in configs)
    assert pretraining_configs(base, dims[1:]) == [base]


def test_a_trial_reserves_its_process_and_every_actor_it_starts(base):
    cfg = with_values(base, {"resources.num_env_runners": 2, "resources.num_cpus_per_env_runner": 0.5,
                             "resources.disc_num_cpus": 0.25, "resources.disc_resources": {"gpu_node": 1}})
    assert trial_resources(cfg).bundles == [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.25, "gpu_node": 1.0}]
    # a GPU learner in the trial's own process (num_learners=0) asks its bundle for the GPU
    gpu = with_values(base, {"resources.num_gpus_per_learner": 1, "resources.disc_num_cpus": 0})
    assert trial_resources(gpu).bundles == [{"CPU": 1.0, "GPU": 1.0}]


def test_the_command_line_refuses_a_bad_space_before_anything_runs(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("gan.gen_lr: {loguniform: [-1.0e-4, 1.0e-3]}\n")
    assert main(["tune", "--space", str(space), f"run_dir={tmp_path / 'sweep'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskgan tune: error: search space") and "loguniform needs low > 0" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


# ------------------------------------------------------------------------------------- a real sweep

TRIAL_STEPS = [30, 0, 30, 30]  # pretrain.mle_steps of the 4 trials, in Tune's grid order


def tiny_sweep_args(sweep: Path, space: Path) -> list[str]:
    """4 trials of 2 iterations on a 30-word oracle, one at a time (the trial's process samples and
    learns on 1 CPU, D has half of the other)."""
    return [
        "tune", "--preset", "synthetic", "--space", str(space),
        "--metric", "eval/masked_perplexity", "--mode", "min", "--max-concurrent", "1",
        f"run_dir={sweep}",
        "data.seq_len=8", "data.oracle_vocab=30", "data.oracle_hidden=8",
        "data.synthetic_train=200", "data.synthetic_valid=40", "data.synthetic_test=40",
        "model.embed=8", "model.hidden=8",
        "pretrain.lm_steps=0", "pretrain.lr=0.03", "pretrain.batch_size=16", "pretrain.eval_every=10", "pretrain.eval_batches=1",
        "gan.iterations=2", "gan.episodes_per_iteration=16", "gan.disc_batch_size=16",
        "gan.checkpoint_every=1", "gan.eval_every=1000",
        "resources.num_env_runners=0", "resources.num_envs_per_env_runner=4",
        "resources.num_cpus=2", "resources.disc_num_cpus=0.5",
        "tracking.log_model=false",  # MLflow's default store: <run_dir>/../mlflow.db, for the trials too
    ]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # its own Ray; the experiment state saved after every step, so a kill leaves the latest one
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0"
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "maskgan_rl.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _kill_group(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its Ray, trials included
    except ProcessLookupError:
        pass


def tune_trials(sweep: Path) -> dict[str, tuple[str, dict]]:
    """{trial id: (status, last result)} as Ray Tune's saved experiment state has them; {} before there is one."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(sweep / "tune"))
    except (ValueError, OSError):  # not written yet, or caught half-written
        return {}
    return {trial.trial_id: (trial.status, trial.last_result) for trial in analysis.trials}


def child_runs(sweep: Path) -> list:
    """The MLflow runs nested under the sweep's run: trials (train-<trial id>) and shared pretrainings."""
    client = MlflowClient(f"sqlite:///{sweep.parent / 'mlflow.db'}")
    parent = (sweep / "mlflow_run_id.tune").read_text().strip()
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


@pytest.mark.slow
def test_a_sweep_stops_the_worse_trial_nests_its_runs_and_resumes_after_its_driver_dies(tmp_path, capsys):
    sweep, space, log = tmp_path / "sweep", tmp_path / "space.yaml", tmp_path / "tune.log"
    # The trial without MaskMLE training has the worst masked perplexity from iteration 0 on, where
    # the other three tie exactly (one shared MaskMLE): ASHA at iteration 1 (grace period 1) stops it.
    space.write_text(f"pretrain.mle_steps: {{grid: {TRIAL_STEPS}}}\n")
    args = tiny_sweep_args(sweep, space)

    first = _start(args, log)
    deadline = time.monotonic() + 600
    try:
        while sum(status == "TERMINATED" for status, _ in tune_trials(sweep).values()) < 2:
            assert first.poll() is None, f"the sweep ended before it could be killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no two trials finished in 600 s:\n{log.read_text()}"
            time.sleep(0.5)
    finally:
        _kill_group(first)
    before = tune_trials(sweep)
    done_before = sorted(trial for trial, (status, _) in before.items() if status == "TERMINATED")
    assert 2 <= len(done_before) < 4
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs_before = {run.info.run_name: run for run in child_runs(sweep)}
    history_before = {name: steps(client, run.info.run_id, "gan/disc_loss") for name, run in runs_before.items()}
    files_before = {trial: sorted((p.name, p.stat().st_mtime_ns) for p in (sweep / "trials" / trial / "checkpoints").iterdir())
                    for trial in done_before}

    assert main(args) == 2  # the sweep exists: continuing it takes --resume
    assert "pass --resume" in capsys.readouterr().err
    second = _start([*args, "--resume"], log)
    try:
        assert second.wait(timeout=600) == 0, log.read_text()
    finally:
        _kill_group(second)
    output = log.read_text()

    # Ray Tune: 4 trials, all ended; the one without MaskMLE stopped by ASHA after 1 iteration
    after = tune_trials(sweep)
    assert len(after) == 4 and all(status == "TERMINATED" for status, _ in after.values())
    iterations = {trial: int(result["iteration"]) for trial, (_, result) in after.items()}
    steps_of = {trial: result["config"]["pretrain.mle_steps"] for trial, (_, result) in after.items()}
    assert sorted(steps_of.values()) == sorted(TRIAL_STEPS)
    assert iterations == {trial: (1 if steps_of[trial] == 0 else 2) for trial in after}

    # Finished trials were not run again: same checkpoint files, same MLflow history
    for trial in done_before:
        assert sorted((p.name, p.stat().st_mtime_ns) for p in (sweep / "trials" / trial / "checkpoints").iterdir()) == files_before[trial]
    runs = {run.info.run_name: run for run in child_runs(sweep)}
    for name in history_before:
        if name.removeprefix("train-") in done_before:
            assert history_before[name], name  # a finished trial had logged its iterations
            assert steps(client, runs[name].info.run_id, "gan/disc_loss") == history_before[name]

    # MLflow: one parent, 4 trial children (none twice) + one pretraining per distinct config
    parent = (sweep / "mlflow_run_id.tune").read_text().strip()
    children = child_runs(sweep)
    by_command = {}
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent
        by_command.setdefault(run.data.tags["maskgan.command"], []).append(run)
    assert sorted(run.info.run_name for run in by_command["train"]) == sorted(f"train-{trial}" for trial in after)
    assert len(by_command["pretrain"]) == 2 and set(by_command) == {"train", "pretrain"}
    for run in by_command["train"]:
        trial = run.info.run_name.removeprefix("train-")
        logged = steps(client, run.info.run_id, "gan/disc_loss")
        assert logged == list(range(1, iterations[trial] + 1)), (trial, logged)
        assert run.info.status == ("KILLED" if steps_of[trial] == 0 else "FINISHED")
        assert run.data.params["pretrain.mle_steps"] == str(steps_of[trial])
    assert client.get_run(parent).info.status == "FINISHED"

    # Pretraining ran once per distinct config: every trial's MaskMLE is a link to the shared file
    shared = sorted((sweep / "pretrain").iterdir())
    assert len(shared) == 2
    shared_inodes = {(d / "checkpoints" / "mle.pt").stat().st_ino for d in shared}
    assert {(sweep / "trials" / t / "checkpoints" / "mle.pt").stat().st_ino for t in after} == shared_inodes

    # The table (file and printed), the plot, and the best config
    with (sweep / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["trial"] for row in rows) == sorted(after)
    stopped = [row for row in rows if row["status"] == "stopped early"]
    assert [(row["pretrain.mle_steps"], row["iterations"]) for row in stopped] == [("0", "1")]
    values = [float(row["eval/masked_perplexity"]) for row in rows]
    assert values == sorted(values)  # best first
    assert (sweep / "trials.md").read_text().splitlines()[0] in output
    assert (sweep / "trials.png").read_bytes().startswith(b"\x89PNG")
    best_trial = rows[0]["trial"]
    best = load_config(str(sweep / "best.yaml"))
    trial_cfg = load_config(str(sweep / "trials" / best_trial / "config.yaml"))
    assert best == with_values(trial_cfg, {"run_dir": str(sweep / "best"), "tracking.parent_run_id": None})
    assert best.pretrain.mle_steps == 30
    assert main(["train", "--preset", str(sweep / "best.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == (sweep / "best.yaml").read_text()


@pytest.mark.slow
def test_a_metric_training_never_reports_is_one_line(tmp_path):
    sweep, space, log = tmp_path / "sweep", tmp_path / "space.yaml", tmp_path / "tune.log"
    space.write_text("gan.gen_lr: {grid: [1.0e-3]}\n")
    args = [arg.replace("eval/masked_perplexity", "eval/masked_perplexty") for arg in tiny_sweep_args(sweep, space)]
    process = _start([*args, "gan.iterations=1"], log)
    try:
        assert process.wait(timeout=600) == 2, log.read_text()
    finally:
        _kill_group(process)
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("maskgan tune: error: every trial failed; the first: --metric 'eval/masked_perplexty' "
                           "is not reported by training; it reports "), last
    assert "eval/masked_perplexity" in last  # what it could have been
