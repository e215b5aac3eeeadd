"""`maskgan tune`: a hyperparameter sweep on Ray Tune over the same config and presets.

The search space is a YAML file of dotted config keys, each with one distribution:

    gan.gen_lr: {loguniform: [1.0e-5, 1.0e-3]}   # Tune's loguniform(low, high)
    gan.disc_lr: {uniform: [1.0e-4, 1.0e-3]}
    gan.disc_steps: {randint: [1, 5]}             # low <= x < high, as tune.randint
    gan.algo: {choice: [reinforce, ppo]}          # sampled, once per trial
    seed: {grid: [0, 1, 2]}                       # every value (times --num-samples)

More: docs/design.md, "Sweeps (`maskgan_rl/tune.py`)".
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from maskgan_rl.config import Config, config_from_dict, flatten, to_dict, to_yaml, with_values
from maskgan_rl.errors import ConfigError, MaskGANError, RunFailure
from maskgan_rl.resources import check_cluster_resources, demands_of
from maskgan_rl.tracking import RUN_ID_FILE, Tracker, tracking_uri

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
# What pretraining reads: trials that agree on these share one pretraining.
PRETRAINING_KEYS = ("seed", "device", "data.", "mask.", "model.", "pretrain.")
NOT_SWEPT = ("run_dir", "tracking.")  # every trial has its own run_dir and MLflow run
TUNE_DIR = "tune"  # Ray Tune's experiment folder inside the sweep's run_dir


@dataclass(frozen=True)
class Dimension:
    """One swept key: `distribution` (one of DISTRIBUTIONS) over `args` (its values, or [low, high])."""

    key: str
    distribution: str
    args: tuple

    def domain(self) -> Any:
        """The Ray Tune search-space object for this dimension."""
        from ray import tune

        if self.distribution == "grid":
            return tune.grid_search(list(self.args))
        if self.distribution == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.distribution)(*self.args)  # uniform, loguniform, randint: (low, high)

    def values(self) -> list[Any]:
        """Every value a trial can get (choice, grid), else the values checked against the config."""
        if self.distribution in ("choice", "grid"):
            return list(self.args)
        low, high = self.args
        if self.distribution == "randint":
            return [low, high - 1]
        return [low, high]

    def describe(self) -> str:
        return f"{self.distribution}{list(self.args)}"

    @property
    def changes_pretraining(self) -> bool:
        return any(self.key == k or (k.endswith(".") and self.key.startswith(k)) for k in PRETRAINING_KEYS)


def load_search_space(path: str | Path, base: Config) -> list[Dimension]:
    """The search space in the YAML file `path`, checked against the config `base`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space {path}: no such file: pass --space path/to/space.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"search space {path}: not valid YAML ({' '.join(str(err).split())})") from None
    return parse_search_space(raw, base, where=f"search space {path}: ")


def parse_search_space(raw: Any, base: Config, where: str = "search space: ") -> list[Dimension]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}expected a mapping of dotted keys to distributions, e.g. gan.gen_lr: {{loguniform: [1.0e-5, 1.0e-3]}}")
    dimensions = [_dimension(str(key), spec, f"{where}{key}: ") for key, spec in raw.items()]
    for dim in dimensions:
        if any(dim.key == k or (k.endswith(".") and dim.key.startswith(k)) for k in NOT_SWEPT):
            raise ConfigError(f"{where}{dim.key} cannot be swept: every trial gets its own run_dir and MLflow run")
        if dim.changes_pretraining and dim.distribution not in ("choice", "grid"):
            raise ConfigError(
                f"{where}{dim.key} changes pretraining: sweep it with choice or grid, so that each distinct "
                "pretraining runs once before the trials"
            )
        current = flatten(base).get(dim.key)
        if dim.distribution in ("uniform", "loguniform") and isinstance(current, int) and not isinstance(current, bool):
            raise ConfigError(f"{where}{dim.key} is an integer: sweep it with randint, choice or grid")
        for value in dim.values():  # the config's own checks, at each end of the range
            with_values(base, {dim.key: value}, where=f"{where}{dim.key} at {value!r}: ")
    return dimensions


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(f"{where}expected one distribution, e.g. {{uniform: [0.1, 0.9]}}; got {spec!r}")
    (name, args), = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}unknown distribution {name!r}: use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}{name} takes a list, e.g. {name}: {'[a, b, c]' if name in ('choice', 'grid') else '[low, high]'}")
    if name in ("choice", "grid"):
        return Dimension(key, name, tuple(args))
    numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if len(args) != 2 or not numbers or (name == "randint" and not all(isinstance(a, int) for a in args)):
        kind = "integers" if name == "randint" else "numbers"
        raise ConfigError(f"{where}{name} takes two {kind} [low, high]; got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{where}{name} needs low < high; got [{low}, {high}]")
    if name == "loguniform" and low <= 0:
        raise ConfigError(f"{where}loguniform needs low > 0; got {low}")
    return Dimension(key, name, (low, high))


def pretraining_key(cfg: Config) -> str:
    """A short hash of everything pretraining reads (trials with the same one share their pretraining)."""
    relevant = {k: v for k, v in flatten(cfg).items() if any(k == p or (p.endswith(".") and k.startswith(p)) for p in PRETRAINING_KEYS)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretraining_configs(base: Config, dimensions: Sequence[Dimension]) -> list[Config]:
    """One config per distinct pretraining the trials can need: every combination of the swept
    pretraining keys' values (all choice or grid)."""
    swept = [dim for dim in dimensions if dim.changes_pretraining]
    configs: dict[str, Config] = {}
    for values in itertools.product(*(dim.values() for dim in swept)):
        cfg = with_values(base, {dim.key: value for dim, value in zip(swept, values)})
        configs.setdefault(pretraining_key(cfg), cfg)
    return list(configs.values())


def trial_resources(cfg: Config) -> Any:
    """A trial's placement group: a bundle for its own process (the pipeline's driver, which also
    samples when resources.num_env_runners=0 and learns when resources.num_learners=0), then one per
    env runner, learner and the discriminator actor, as `resources.demands_of` counts them."""
    from ray.tune import PlacementGroupFactory

    head: dict[str, float] = {"CPU": 1.0}
    others: list[dict[str, float]] = []
    for demand in demands_of(cfg.resources):
        if demand.in_driver:
            head.update(demand.bundle)
        elif demand.bundle:
            others.extend(dict(demand.bundle) for _ in range(demand.count))
    return PlacementGroupFactory([head, *others])


def _trial_config(base: dict[str, Any], params: dict[str, Any], run_dir: Path, parent_run_id: Optional[str]) -> Config:
    return with_values(config_from_dict(base), {**params, "run_dir": str(run_dir), "tracking.parent_run_id": parent_run_id})


def _run_trial(params: dict[str, Any], base: dict[str, Any], sweep_dir: str, metric: str, parent_run_id: Optional[str]) -> None:
    """One trial, inside a Tune worker: the ordinary pipeline, reporting every iteration."""
    from ray import tune

    from maskgan_rl.train import run_training

    run_dir = Path(sweep_dir) / "trials" / tune.get_context().get_trial_id()
    cfg = _trial_config(base, params, run_dir, parent_run_id)
    _link_pretraining(Path(sweep_dir) / "pretrain" / pretraining_key(cfg), run_dir)

    def report(history: list[dict[str, float]]) -> None:
        latest: dict[str, float] = {}
        for record in history:  # evaluation metrics come every gan.eval_every iterations: the latest one
            latest.update(record)
        if metric not in latest:
            raise ConfigError(f"--metric {metric!r} is not reported by training; it reports {', '.join(sorted(latest))}")
        tune.report(latest)

    resume = any((run_dir / "checkpoints").glob("gan-*.pt"))  # a trial restored after its driver died
    run_training(cfg, resume=resume, on_iteration=report)


def _link_pretraining(shared: Path, run_dir: Path) -> None:
    """The shared data and LM/MaskMLE checkpoints into a trial's run_dir (hard links where possible)."""
    for source in [*(shared / "data").iterdir(), shared / "checkpoints" / "lm.pt", shared / "checkpoints" / "mle.pt"]:
        target = run_dir / source.relative_to(shared)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system
            shutil.copy2(source, target)


def run_sweep(
    base: Config,
    space_path: str | Path,
    metric: str,
    mode: str = "min",
    num_samples: int = 1,
    max_concurrent: Optional[int] = None,
    grace_period: int = 1,
    reduction_factor: int = 4,
    resume: bool = False,
) -> Config:
    """Run (or with `resume`, continue) the sweep in `base.run_dir`; returns the best trial's config."""
    from maskgan_rl.train import init_ray, run_pretraining

    if mode not in ("min", "max"):
        raise ConfigError(f"--mode {mode!r}: use min or max")
    for name, value, least in (("--num-samples", num_samples, 1), ("--max-concurrent", max_concurrent or 1, 1),
                               ("--grace-period", grace_period, 1), ("--reduction-factor", reduction_factor, 2)):
        if value < least:
            raise ConfigError(f"{name}={value}: must be an integer >= {least}")
    if base.gan.iterations < 1:
        raise ConfigError("gan.iterations=0: a sweep compares adversarial training, set gan.iterations >= 1")
    sweep_dir = Path(base.run_dir).resolve()
    # Trials and pretrainings have run_dirs of their own: the store is the sweep's, for all of them.
    tracking = {"tracking.tracking_uri": tracking_uri(with_values(base, {"run_dir": str(sweep_dir)}))} if base.tracking.enabled else {}
    base = with_values(base, {"run_dir": str(sweep_dir), **tracking, **_absolute_data_paths(base)})
    dimensions = load_search_space(space_path, base)
    tune_dir = sweep_dir / TUNE_DIR
    if tune_dir.exists() and not resume:
        raise ConfigError(f"{sweep_dir} already holds a sweep: pass --resume to continue it, or set run_dir=... for a new one")
    resume = resume and tune_dir.exists()  # --resume with no sweep yet starts one, as `maskgan train --resume` does

    init_ray(base)
    check_cluster_resources(base)  # a trial that can never be placed would wait forever
    with Tracker(base, "tune", tags={"maskgan.tune.metric": metric}, reopen="always" if resume else "never") as sweep:
        sweep.log_params({f"tune.space.{dim.key}": dim.describe() for dim in dimensions}
                         | {"tune.metric": metric, "tune.mode": mode, "tune.num_samples": num_samples})
        for cfg in pretraining_configs(base, dimensions):
            shared = sweep_dir / "pretrain" / pretraining_key(cfg)
            run_pretraining(with_values(cfg, {"run_dir": str(shared), "tracking.parent_run_id": sweep.run_id}))
        results = _fit(base, dimensions, sweep_dir, metric, mode, num_samples, max_concurrent, grace_period,
                       reduction_factor, resume, sweep.run_id)
        best = _summarise(base, dimensions, results, sweep_dir, metric, mode, sweep)
    return best


def _absolute_data_paths(cfg: Config) -> dict[str, str]:
    """Trials run in Tune's own working folders: relative corpus paths are made absolute first."""
    paths = {f"data.{k}": getattr(cfg.data, k) for k in ("train_path", "valid_path", "test_path")}
    return {key: str(Path(value).resolve()) for key, value in paths.items() if value}


def _fit(base: Config, dimensions: Sequence[Dimension], sweep_dir: Path, metric: str, mode: str, num_samples: int,
         max_concurrent: Optional[int], grace_period: int, reduction_factor: int, resume: bool,
         parent_run_id: Optional[str]) -> Any:
    """Ray Tune's ResultGrid of the sweep, started or restored."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    base_dict = to_dict(base)
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, base=base_dict, sweep_dir=str(sweep_dir), metric=metric, parent_run_id=parent_run_id),
        lambda params: trial_resources(_trial_config(base_dict, params, sweep_dir, parent_run_id)),
    )
    tune_dir = sweep_dir / TUNE_DIR
    if resume:
        if not tune.Tuner.can_restore(str(tune_dir)):
            raise MaskGANError(f"--resume: {tune_dir} holds no restorable Ray Tune state: move it away and start the sweep again")
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={dim.key: dim.domain() for dim in dimensions},
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, num_samples=num_samples, max_concurrent_trials=max_concurrent,
                # time_attr: the pipeline's own iteration, which a resumed trial continues
                # stop_last_trials=False: a trial at max_t finishes its pipeline (final model, MLflow run)
                scheduler=ASHAScheduler(time_attr="iteration", max_t=base.gan.iterations, grace_period=grace_period,
                                        reduction_factor=reduction_factor, stop_last_trials=False),
            ),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir), verbose=1),
        )
    return tuner.fit()


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    status: str  # finished | stopped early | error: <its message>
    iterations: int
    value: Optional[float]  # the metric's last reported value
    curve: list[tuple[int, float]]  # (iteration, metric)


def _summarise(base: Config, dimensions: Sequence[Dimension], results: Any, sweep_dir: Path, metric: str, mode: str,
               sweep: Tracker) -> Config:
    """The table, plot and best config of a finished sweep (files, MLflow artifacts, printed)."""
    from maskgan_rl.plots import plot_sweep

    trials = [_trial_summary(result, base, dimensions, metric) for result in results]
    if all(t.status.startswith("error") for t in trials):
        # Ray hands on a trial's exception as a subclass of its own type: a usage error stays one (exit 2)
        usage = isinstance(results[0].error, MaskGANError) and results[0].error.exit_status == 2
        raise (MaskGANError if usage else RunFailure)(f"every trial failed; the first: {trials[0].status.removeprefix('error: ')}")
    if base.tracking.enabled:
        _mark_stopped_runs(trials, sweep_dir)
    ranked = sorted(trials, key=lambda t: (t.value is None, (t.value if mode == "min" else -t.value) if t.value is not None else 0))
    keys = [dim.key for dim in dimensions]
    header = ["trial", *keys, "status", "iterations", metric]
    rows = [[t.trial_id, *(t.params.get(k) for k in keys), t.status, t.iterations, "" if t.value is None else f"{t.value:.6g}"]
            for t in ranked]
    with (sweep_dir / "trials.csv").open("w", newline="") as out:
        csv.writer(out).writerows([header, *rows])
    shown = [[f"{cell:.4g}" if isinstance(cell, float) else cell for cell in row] for row in rows]  # (the CSV keeps all digits)
    table = "\n".join(["| " + " | ".join(map(str, row)) + " |" for row in [header, ["---"] * len(header), *shown]])
    (sweep_dir / "trials.md").write_text(table + "\n")
    plot = plot_sweep({t.trial_id: t.curve for t in trials if t.curve}, metric, sweep_dir / "trials.png")
    best = with_values(base, {**ranked[0].params, "run_dir": str(sweep_dir / "best")})
    best_path = sweep_dir / "best.yaml"
    best_path.write_text(to_yaml(best))
    for path in (sweep_dir / "trials.csv", sweep_dir / "trials.md", plot, best_path):
        sweep.log_artifact(path)
    sweep.log_metrics({f"best/{metric}": ranked[0].value} if ranked[0].value is not None else {}, step=0)
    print(f"\n{table}\n\nbest trial {ranked[0].trial_id} ({metric}={ranked[0].value:.6g}); its config ({best_path}, "
          f"for --preset):\n{to_yaml(best)}\ntable: {sweep_dir / 'trials.md'}  plot: {plot}")
    return best


def _trial_summary(result: Any, base: Config, dimensions: Sequence[Dimension], metric: str) -> TrialSummary:
    params = {dim.key: result.config[dim.key] for dim in dimensions}
    frame = result.metrics_dataframe
    curve = []
    if frame is not None and metric in frame and "iteration" in frame:
        curve = [(int(i), float(v)) for i, v in zip(frame["iteration"], frame[metric])]
    iterations = int(result.metrics.get("iteration", 0)) if result.metrics else 0
    if result.error is not None:
        lines = [line for line in str(result.error).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else type(result.error).__name__
        # "maskgan_rl.errors.ConfigError: <message>", as Ray passes a trial's exception on: the message
        status = f"error: {last.split(': ', 1)[1] if last.startswith('maskgan_rl.errors.') else last}"
    else:
        status = "finished" if iterations >= base.gan.iterations else "stopped early"
    value = result.metrics.get(metric) if result.metrics else None
    return TrialSummary(result.metrics.get("trial_id") or Path(result.path).name, params, status, iterations,
                        None if value is None else float(value), curve)


def _mark_stopped_runs(trials: Sequence[TrialSummary], sweep_dir: Path) -> None:
    """ASHA ends a trial's process without a word: its MLflow run is closed here, as KILLED."""
    import mlflow

    for trial in trials:
        run_id_file = sweep_dir / "trials" / trial.trial_id / f"{RUN_ID_FILE}.train"
        if trial.status == "stopped early" and run_id_file.is_file():
            run_id = run_id_file.read_text().strip()
            mlflow.MlflowClient().set_tag(run_id, "maskgan.tune.stopped_at", str(trial.iterations))
            mlflow.MlflowClient().set_terminated(run_id, "KILLED")
