"""The verdict experiment of issue 19: MaskGAN against MaskMLE, and against MaskMLE trained for the same
extra steps, with 3 training seeds on PTB, IMDB and the synthetic oracle (two oracle seeds), judged by
`maskgan evaluate`'s matched-diversity verdict on the test split. The levers are chosen beforehand by a
sweep on PTB's validation split.

    python benchmarks/verdict_experiment.py plan                   # the stages, which are done, estimates
    python benchmarks/verdict_experiment.py sweep                  # PTB sweep (maskgan tune) + choice on validation data
    python benchmarks/verdict_experiment.py run --levers runs/verdict/sweep-ptb/levers.yaml   # the final comparison

Every stage is one `maskgan` command with its own run_dir, log file (`<run_dir>/log.txt`) and MLflow run
(store `runs/verdict/<experiment>/mlflow.db`, experiment `verdict-<experiment>`). A finished stage writes
`<run_dir>/stage.done` (its command and minutes) and is skipped when the driver runs again;
`maskgan train` stages continue an interrupted run with --resume. Run it in the background:

    nohup python benchmarks/verdict_experiment.py run --levers ... > runs/verdict.log 2>&1 &

Per experiment and training seed: `pretrain` (LM + MaskMLE), `maskgan` (adversarial training from that
MaskMLE, with the levers), `mle-extra` (the same MaskMLE trained on as many windows as the generator
learned from in the adversarial phase); then one `evaluate` of every checkpoint and `publish` to
docs/results/verdict-<experiment>/.

"The same extra steps": the adversarial generator learns from gan.episodes_per_iteration masked windows
per update, for gan.iterations - gan.critic_warmup_iterations updates (in warm-up iterations it is held
still); MaskMLE learns from pretrain.batch_size windows per step. mle-extra adds
ceil(updates * episodes_per_iteration / batch_size) MaskMLE steps: the same number of training windows,
continued from the same mle.pt (`maskgan pretrain` trains only the missing steps of a shorter checkpoint).

ESTIMATED time on a 2-core machine (estimates, not measurements: derived from benchmarks/quality.sh's
measured totals, PTB 6 + 5 min, IMDB 9 + 8 min, synthetic 12 + 2 min, scaled to these budgets; `plan` prints
them for the levers given, and each stage's log and stage.done its measured minutes):
    sweep (PTB, 12 trials x 600 iterations, then their validation evaluation)   ~5 h
    PTB       per seed: pretrain ~4 min, maskgan ~27 min (1,000 iterations), mle-extra ~1 min; evaluate ~50 min
    IMDB      per seed: pretrain ~6 min, maskgan ~36 min (600 iterations), mle-extra ~2 min; evaluate ~80 min
    synthetic per oracle seed and training seed: pretrain ~7 min, maskgan ~50 min, mle-extra ~1 min; evaluate ~25 min
    all of `run` (3 seeds, 4 experiments)                                         ~12.6 h
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from maskgan_rl.config import Config, load_config
from maskgan_rl.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MASKGAN = [sys.executable, "-m", "maskgan_rl"]
# Keys the levers may not set: they change pretraining, which every MaskGAN run loads from its seed's stage.
PRETRAINING_PREFIXES = ("seed", "data.", "model.", "pretrain.", "device")


@dataclass
class Experiment:
    name: str
    preset: str
    lever_section: str  # the section of the levers file that applies besides `all`
    budget: list[str]  # pretraining sizes at this CPU scale (quality.sh's)
    eval_overrides: list[str]  # for `maskgan evaluate`: its evaluation LM's steps
    # ESTIMATES (minutes) from quality.sh's totals: pretraining, one adversarial iteration of 64 episodes,
    # one MaskMLE step, one evaluated (checkpoint, temperature, seed) point.
    minutes: dict[str, float] = field(default_factory=dict)


EXPERIMENTS = {
    "ptb": Experiment("ptb", "ptb", "ptb", ["pretrain.lm_steps=1500", "pretrain.mle_steps=1500"], ["pretrain.lm_steps=600"],
                      {"pretrain": 4, "iteration": 0.027, "mle_step": 0.0013, "point": 0.5}),
    "imdb": Experiment("imdb", "imdb", "imdb", ["pretrain.lm_steps=1000", "pretrain.mle_steps=1000"], ["pretrain.lm_steps=600"],
                       {"pretrain": 6, "iteration": 0.06, "mle_step": 0.003, "point": 0.8}),
    **{
        f"synthetic-oracle{oracle}": Experiment(
            f"synthetic-oracle{oracle}", "synthetic-gan", "synthetic", [f"data.oracle_seed={oracle}"], [],
            {"pretrain": 7, "iteration": 0.025, "mle_step": 0.0007, "point": 0.25})
        for oracle in (88, 7)  # the preset's oracle and another: a synthetic claim must hold for both
    },
}
# Toy sizes for a wiring check of every stage (the smoke test): not a measurement of anything.
TINY = [
    "data.oracle_vocab=200", "data.synthetic_train=2000", "data.synthetic_valid=200", "data.synthetic_test=200",
    "data.seq_len=10", "model.embed=16", "model.hidden=16", "pretrain.lm_steps=20", "pretrain.mle_steps=20",
    "pretrain.eval_every=10", "gan.disc_pretrain_steps=0", "gan.episodes_per_iteration=16", "gan.disc_batch_size=16",
    "gan.eval_every=1", "gan.checkpoint_every=1", "resources.num_envs_per_env_runner=8",
]
TINY_EVAL = ["--samples", "40", "--temperatures", "0.7,1.0,1.4", "--reverse-lm-steps", "20", "--two-sample-steps", "5",
             "--bleu-references", "20", "--table-rows", "2"]
FINAL_EVAL = ["--split", "test", "--samples", "400", "--bleu-references", "300", "--reverse-lm-steps", "100",
              "--table-rows", "6", "--seeds", "0"]  # the interval is over the 3 training seeds' checkpoint pairs
SWEEP_EVAL = ["--split", "valid", "--samples", "400", "--bleu-references", "300", "--reverse-lm-steps", "100",
              "--temperatures", "0.6,0.8,1.0,1.2,1.4", "--table-rows", "4", "--seeds", "0,1"]
PUBLISHED = ("metrics.md", "samples.md", "results.json", "quality_diversity_lm.png", "quality_diversity_bleu.png",
             "quality_diversity_oracle.png")


class StageFailed(Exception):
    """A stage's command failed: the driver stops, and the next run retries that stage."""


@dataclass
class Stage:
    name: str  # "ptb/maskgan-seed0"
    run_dir: Path
    command: list[str]
    estimate_min: float
    copy_from: Optional[Path] = None  # a pretraining run_dir whose lm.pt and mle.pt this stage starts from

    @property
    def done_file(self) -> Path:
        return self.run_dir / "stage.done"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("plan", "sweep", "run"))
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--levers", type=Path, default=REPO / "benchmarks" / "verdict_levers.yaml",
                        help="YAML: `all:` and per data set (ptb, imdb, synthetic) dotted overrides for the MaskGAN runs")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "verdict", help="where the runs go")
    parser.add_argument("--publish", type=Path, default=REPO / "docs" / "results", help="results go to <this>/verdict-<experiment>/")
    parser.add_argument("--space", type=Path, default=REPO / "benchmarks" / "verdict_space.yaml", help="the sweep's search space")
    parser.add_argument("--trials", type=int, default=12, help="sweep trials (maskgan tune --num-samples)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the wiring of every stage in a few minutes")
    args = parser.parse_args(argv)
    try:
        levers = read_levers(args.levers)
        if args.action == "sweep":
            return sweep(args, levers)
        stages = {name: experiment_stages(EXPERIMENTS[name], args, levers) for name in args.experiments}
        print_plan(stages)
        if args.action == "run":
            for name, (training, evaluate) in stages.items():
                for stage in [*training, evaluate]:
                    run_stage(stage)
                publish(EXPERIMENTS[name], evaluate, args.publish / f"verdict-{name}", training)
        return 0
    except (ConfigError, StageFailed) as err:
        print(f"[verdict] {err}", file=sys.stderr)
        return 1


def read_levers(path: Path) -> dict[str, dict[str, Any]]:
    """{section: {dotted key: value}}, refusing keys that would change pretraining."""
    if not path.is_file():
        raise ConfigError(f"levers file {path} not found: pass --levers benchmarks/verdict_levers.yaml or a sweep's levers.yaml")
    sections = OmegaConf.to_container(OmegaConf.load(path)) or {}
    for section, values in sections.items():
        for key in values or {}:
            if key.startswith(PRETRAINING_PREFIXES):
                raise ConfigError(f"{path}: {section}.{key} changes pretraining, which the MaskGAN runs share with the "
                                  "baselines: set only gan.* and mask.* keys there")
    return {section: dict(values or {}) for section, values in sections.items()}


def lever_overrides(levers: dict[str, dict[str, Any]], section: str) -> list[str]:
    merged = {**levers.get("all", {}), **levers.get(section, {})}
    return [f"{key}={json.dumps(value) if isinstance(value, bool) or value is None else value}" for key, value in merged.items()]


def extra_mle_steps(cfg: Config) -> int:
    """MaskMLE steps that see as many training windows as the adversarial generator learned from."""
    updates = max(cfg.gan.iterations - cfg.gan.critic_warmup_iterations, 0)
    return math.ceil(updates * cfg.gan.episodes_per_iteration / cfg.pretrain.batch_size)


def experiment_stages(
    experiment: Experiment, args: argparse.Namespace, levers: dict[str, dict[str, Any]]
) -> tuple[list[Stage], Stage]:
    root = args.root / experiment.name
    sizes = experiment.budget + (TINY + ["gan.iterations=2"] if args.tiny else [])
    gan = lever_overrides(levers, experiment.lever_section) + (["gan.iterations=2"] if args.tiny else [])
    rates = experiment.minutes
    training: list[Stage] = []
    checkpoints: dict[str, list[str]] = {"MaskMLE": [], "MaskGAN": [], "MaskMLE+extra": []}
    for seed in args.seeds:
        common = [f"seed={seed}", f"tracking.experiment=verdict-{experiment.name}", *sizes]
        cfg = load_config(experiment.preset, common + gan)
        extra = extra_mle_steps(cfg)
        pretrain_dir, gan_dir, extra_dir = (root / f"{stage}-seed{seed}" for stage in ("pretrain", "maskgan", "mle-extra"))
        episodes = cfg.gan.episodes_per_iteration / 64
        training += [
            Stage(f"{experiment.name}/pretrain-seed{seed}", pretrain_dir,
                  [*MASKGAN, "pretrain", "--preset", experiment.preset, f"run_dir={pretrain_dir}", *common],
                  rates["pretrain"]),
            Stage(f"{experiment.name}/maskgan-seed{seed}", gan_dir,
                  [*MASKGAN, "train", "--preset", experiment.preset, f"run_dir={gan_dir}", *common, *gan, "--resume"],
                  rates["iteration"] * episodes * cfg.gan.iterations, copy_from=pretrain_dir),
            Stage(f"{experiment.name}/mle-extra-seed{seed}", extra_dir,
                  [*MASKGAN, "pretrain", "--preset", experiment.preset, f"run_dir={extra_dir}", *common,
                   f"pretrain.mle_steps={cfg.pretrain.mle_steps + extra}"],
                  rates["mle_step"] * extra, copy_from=pretrain_dir),
        ]
        checkpoints["MaskMLE"].append(f"MaskMLE:{pretrain_dir}/checkpoints/mle.pt")
        checkpoints["MaskGAN"].append(f"MaskGAN:{gan_dir}/checkpoints/maskgan.pt")
        checkpoints["MaskMLE+extra"].append(f"MaskMLE+extra:{extra_dir}/checkpoints/mle.pt")
    eval_dir = root / "eval"
    eval_args = TINY_EVAL if args.tiny else FINAL_EVAL
    points = sum(map(len, checkpoints.values())) * (3 if args.tiny else 11)  # evaluate's default: 11 temperatures
    evaluate = Stage(f"{experiment.name}/evaluate", eval_dir,
                     [*MASKGAN, "evaluate", *[c for group in checkpoints.values() for c in group], "--out", str(eval_dir),
                      *eval_args, f"tracking.experiment=verdict-{experiment.name}", *experiment.eval_overrides,
                      *(["pretrain.lm_steps=20"] if args.tiny else [])],
                     rates["point"] * points)
    return training, evaluate


def print_plan(stages: dict[str, tuple[list[Stage], Stage]]) -> None:
    total = 0.0
    print("[verdict] stages (minutes are ESTIMATES from quality.sh's rates, measured ones once a stage is done):")
    for training, evaluate in stages.values():
        for stage in [*training, evaluate]:
            if stage.done_file.is_file():
                print(f"  {stage.name:<36} done in {json.loads(stage.done_file.read_text())['minutes']:.1f} min")
            else:
                total += stage.estimate_min
                over = stage.estimate_min > 90 and "/evaluate" not in stage.name
                print(f"  {stage.name:<36} to run, ~{stage.estimate_min:.0f} min"
                      + ("  (over the 90-minute budget of a run: lower gan.iterations in the levers)" if over else ""))
    print(f"[verdict] estimated time left: ~{total / 60:.1f} h")


def run_stage(stage: Stage) -> None:
    if stage.done_file.is_file():
        print(f"[verdict] {stage.name}: done, skipped")
        return
    stage.run_dir.mkdir(parents=True, exist_ok=True)
    if stage.copy_from is not None:  # start from that seed's LM and MaskMLE (loaded, or continued, not retrained)
        (stage.run_dir / "checkpoints").mkdir(exist_ok=True)
        for name in ("lm.pt", "mle.pt"):
            target = stage.run_dir / "checkpoints" / name
            if not target.exists():
                shutil.copy2(stage.copy_from / "checkpoints" / name, target)
    log = stage.run_dir / "log.txt"
    print(f"[verdict] {stage.name}: running (~{stage.estimate_min:.0f} min estimated), log {log}", flush=True)
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(stage.command)}\n")
        out.flush()
        code = subprocess.run(stage.command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    minutes = (time.monotonic() - started) / 60
    if code != 0:
        raise StageFailed(f"{stage.name} failed (exit {code}) after {minutes:.1f} min: see {log}; run the driver again to retry it")
    shown = ["maskgan", *(a.replace(f"{REPO}/", "") for a in stage.command[len(MASKGAN):])]  # as a user types it
    stage.done_file.write_text(json.dumps({"command": shown, "minutes": round(minutes, 2)}) + "\n")
    print(f"[verdict] {stage.name}: finished in {minutes:.1f} min", flush=True)


def publish(experiment: Experiment, evaluate: Stage, out: Path, training: Sequence[Stage]) -> None:
    """The evaluation's tables and plots, with the commands and measured minutes of every stage."""
    out.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        if (evaluate.run_dir / name).is_file():
            shutil.copy2(evaluate.run_dir / name, out / name)
    stages = [{"stage": s.name, **json.loads(s.done_file.read_text())} for s in [*training, evaluate]]
    (out / "experiment.json").write_text(json.dumps({"experiment": experiment.name, "stages": stages}, indent=1) + "\n")
    print(f"[verdict] {experiment.name}: results in {out}")


def sweep(args: argparse.Namespace, levers: dict[str, dict[str, Any]]) -> int:
    """The PTB sweep on validation data: `maskgan tune` trains the trials (every one to the end: the
    choice is made after, on the verdict), then `maskgan evaluate --split valid` compares each trial's
    MaskGAN with their MaskMLE at matched diversity; the lowest ratio wins and is written, with the
    rest of the levers file, to <root>/sweep-ptb/levers.yaml."""
    experiment = EXPERIMENTS["ptb"]
    sweep_dir = args.root / "sweep-ptb"
    base = [*experiment.budget, *lever_overrides(levers, "sweep"), "tracking.experiment=verdict-sweep-ptb",
            *(TINY + ["gan.iterations=2"] if args.tiny else [])]
    cfg = load_config(experiment.preset, base)
    iterations, rates = cfg.gan.iterations, experiment.minutes
    # At the base config's episodes per iteration: trials that draw more take longer.
    tune_minutes = 2 * rates["pretrain"] + args.trials * rates["iteration"] * iterations * cfg.gan.episodes_per_iteration / 64
    eval_minutes = rates["point"] * (args.trials + 1) * 5 * 2  # SWEEP_EVAL: 5 temperatures x 2 seeds
    tune = [*MASKGAN, "tune", "--preset", experiment.preset, "--space", str(args.space), f"run_dir={sweep_dir}", *base,
            "--metric", "eval/masked_perplexity", "--mode", "min", "--num-samples", str(args.trials),
            "--max-concurrent", "1", "--grace-period", str(iterations)]
    if importlib.util.find_spec("maskgan_rl.tune") is None:
        raise ConfigError("`maskgan tune` is not in this checkout yet (branch tune): once merged, run this again; "
                          f"the sweep will be: {' '.join(tune[2:])}")
    resume = ["--resume"] if (sweep_dir / "tune").exists() else []  # the sweep's driver died: Tune continues it
    run_stage(Stage("sweep-ptb/tune", sweep_dir, [*tune, *resume], tune_minutes))
    trials = sorted(p for p in (sweep_dir / "trials").glob("*") if (p / "checkpoints" / "maskgan.pt").is_file())
    if not trials:
        raise StageFailed(f"no trial in {sweep_dir / 'trials'} finished with a maskgan.pt: see {sweep_dir / 'log.txt'}")
    eval_dir = sweep_dir / "eval"
    run_stage(Stage("sweep-ptb/evaluate", eval_dir,
                    [*MASKGAN, "evaluate", f"MaskMLE:{trials[0]}/checkpoints/mle.pt",
                     *(f"{t.name}:{t}/checkpoints/maskgan.pt" for t in trials), "--out", str(eval_dir),
                     *(TINY_EVAL if args.tiny else SWEEP_EVAL), "tracking.experiment=verdict-sweep-ptb",
                     *experiment.eval_overrides, *(["pretrain.lm_steps=20"] if args.tiny else [])], eval_minutes))
    verdicts = json.loads((eval_dir / "results.json").read_text())["verdict"]
    ranked = sorted((v["ratio"], name) for name, v in verdicts.items() if v["ratio"] is not None)
    if not ranked:
        raise StageFailed(f"no trial matched MaskMLE's diversity on validation data (see {eval_dir}/metrics.md): no levers chosen")
    ratio, best = ranked[0]
    space = OmegaConf.to_container(OmegaConf.load(args.space))
    trial_config = OmegaConf.load(sweep_dir / "trials" / best / "config.yaml")
    chosen = {key: OmegaConf.select(trial_config, key) for key in space}
    out = sweep_dir / "levers.yaml"
    out.write_text(f"# Chosen by the PTB sweep on validation data: trial {best}, matched-diversity ratio {ratio:.3f}\n"
                   + OmegaConf.to_yaml({**levers, "all": {**levers.get("all", {}), **chosen}}))
    print(f"[verdict] sweep: trial {best} has the lowest validation ratio ({ratio:.3f}); levers written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
