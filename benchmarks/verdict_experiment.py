"""The verdict experiment of issue 19: MaskGAN against MaskMLE, and against MaskMLE trained for the same
extra steps, with 3 training seeds on PTB, IMDB and the synthetic oracle (two oracle seeds), judged by
`maskgan evaluate`'s matched-diversity verdict on the test split. The levers are chosen beforehand by a
screen on PTB's validation split.

    python benchmarks/verdict_experiment.py plan                   # the stages, which are done, estimates
    python benchmarks/verdict_experiment.py sweep                  # PTB lever screen + choice on validation data
    python benchmarks/verdict_experiment.py run --levers runs/verdict/sweep-ptb/levers.yaml   # the final comparison
    python benchmarks/verdict_experiment.py summary                # docs/results/verdict.md from what is published

Every stage is one `maskgan` command with its own run_dir, log file (`<run_dir>/log.txt`) and MLflow run
(store `runs/verdict/<experiment>/mlflow.db`, experiment `verdict-<experiment>`). A finished stage writes
`<run_dir>/stage.done` (its command and minutes) and is skipped when the driver runs again;
`maskgan train` stages continue an interrupted run with --resume. Run it in the background:

    nohup python benchmarks/verdict_experiment.py run --levers ... > runs/verdict.log 2>&1 &

Per experiment and training seed: `pretrain` (LM + MaskMLE), `maskgan` (adversarial training from that
MaskMLE, with the levers), `mle-extra` (the same MaskMLE trained on as many windows as the generator
learned from in the adversarial phase); then one `evaluate` of every checkpoint and `publish` to
docs/results/verdict-<experiment>/, and docs/results/verdict.md, one table over every published
experiment against issue 19's targets, is written again.

The sweep is a screen, one lever family per trial (the levers file's `screen` section), not a random
search: with a handful of trials that fit a working session, each trial's effect must be attributable
to one lever. Every trial starts from the seed-0 pretraining that `run` also uses.

"The same extra steps": the adversarial generator learns from gan.episodes_per_iteration masked windows
per update, for gan.iterations - gan.critic_warmup_iterations updates (in warm-up iterations it is held
still); MaskMLE learns from pretrain.batch_size windows per step. mle-extra adds
ceil(updates * episodes_per_iteration / batch_size) MaskMLE steps: the same number of training windows,
continued from the same mle.pt (`maskgan pretrain` trains only the missing steps of a shorter checkpoint).

`plan` prints each stage's ESTIMATED minutes (from benchmarks/quality.sh's measured rates on a 2-core
machine) until it has run, then its measured ones; benchmarks/README.md has the measured totals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from maskgan_rl.verdict import difference_text

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
SWEEP_EVAL = ["--samples", "400", "--bleu-references", "300", "--reverse-lm-steps", "100",
              "--table-rows", "4", "--seeds", "0"]
PUBLISHED = ("metrics.md", "samples.md", "results.json", "quality_diversity_lm.png", "quality_diversity_bleu.png",
             "quality_diversity_oracle.png", "oracle_nll_difference.png")


class StageFailed(Exception):
    """A stage's command failed: the driver stops, and the next run retries that stage."""


@dataclass
class Stage:
    name: str  # "ptb/maskgan-seed0"
    run_dir: Path
    command: list[str]
    estimate_min: float
    copy_from: Optional[Path] = None  # a pretraining run_dir whose lm.pt and mle.pt this stage starts from
    data_from: Optional[Path] = None  # a run_dir whose prepared data this stage links (see share_data)

    @property
    def done_file(self) -> Path:
        return self.run_dir / "stage.done"

    @property
    def shown(self) -> list[str]:
        """The command as a user types it."""
        return ["maskgan", *(a.replace(f"{REPO}/", "") for a in self.command[len(MASKGAN):])]

    def done(self) -> bool:
        """Finished with this very command (a new screen trial changes the sweep's evaluation, a longer
        gan.iterations continues a run with --resume)."""
        return self.done_file.is_file() and json.loads(self.done_file.read_text())["command"] == self.shown


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("plan", "sweep", "run", "summary"))
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--levers", type=Path, default=REPO / "benchmarks" / "verdict_levers.yaml",
                        help="YAML: `all:` and per data set (ptb, imdb, synthetic) dotted overrides for the MaskGAN runs")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "verdict", help="where the runs go")
    parser.add_argument("--publish", type=Path, default=REPO / "docs" / "results", help="results go to <this>/verdict-<experiment>/")
    parser.add_argument("--sweep-on", default="ptb", choices=list(EXPERIMENTS), help="the data set of the lever screen")
    parser.add_argument("--temperatures", help="evaluate's temperatures, comma-separated (default: evaluate's own, 0.5-1.5 by 0.1)")
    parser.add_argument("--baseline-temperatures", help="MaskMLE's finer grid in the final evaluation (evaluate --baseline-temperatures)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the wiring of every stage in a few minutes")
    args = parser.parse_args(argv)
    try:
        levers = read_levers(args.levers)
        if args.action == "sweep":
            return sweep(args, levers)
        if args.action == "summary":
            write_summary(args.publish)
            return 0
        stages = {name: experiment_stages(EXPERIMENTS[name], args, levers) for name in args.experiments}
        print_plan(stages)
        if args.action == "run":
            for name, (training, evaluate) in stages.items():
                for stage in [*training, evaluate]:
                    run_stage(stage)
                publish(EXPERIMENTS[name], evaluate, args.publish / f"verdict-{name}", training)
                write_summary(args.publish)
        return 0
    except (ConfigError, StageFailed) as err:
        print(f"[verdict] {err}", file=sys.stderr)
        return 1


def read_levers(path: Path) -> dict[str, dict[str, Any]]:
    """{section: {dotted key: value}} (`screen`: {trial: {dotted key: value}}), refusing keys that would
    change pretraining."""
    if not path.is_file():
        raise ConfigError(f"levers file {path} not found: pass --levers benchmarks/verdict_levers.yaml or a sweep's levers.yaml")
    sections = {section: dict(values or {}) for section, values in (OmegaConf.to_container(OmegaConf.load(path)) or {}).items()}
    if "screen" in sections:
        sections["screen"] = {trial: dict(values or {}) for trial, values in sections["screen"].items()}
    groups = [(f"screen.{trial}", values) for trial, values in sections.get("screen", {}).items()]
    groups += [(section, values) for section, values in sections.items() if section != "screen"]
    for where, values in groups:
        for key in values:
            if key.startswith(PRETRAINING_PREFIXES):
                raise ConfigError(f"{path}: {where}.{key} changes pretraining, which the MaskGAN runs share with the "
                                  "baselines: set only gan.* and mask.* keys there")
    return sections


def as_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value) if isinstance(value, bool) or value is None else value}" for key, value in values.items()]


def lever_overrides(levers: dict[str, dict[str, Any]], section: str) -> list[str]:
    return as_overrides({**levers.get("all", {}), **levers.get(section, {})})


def option(flag: str, value: Optional[str]) -> list[str]:
    """A command-line option passed on to `maskgan evaluate` when given."""
    return [flag, value] if value else []


def gan_minutes(experiment: Experiment, cfg: Config) -> float:
    """ESTIMATED minutes of an adversarial run (the rate is per iteration of 64 episodes)."""
    return experiment.minutes["iteration"] * cfg.gan.episodes_per_iteration / 64 * cfg.gan.iterations


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
    # The data do not depend on the training seed: the first seed's pretraining prepares them for all.
    first_pretrain = root / f"pretrain-seed{args.seeds[0]}"
    for seed in args.seeds:
        common = [f"seed={seed}", f"tracking.experiment=verdict-{experiment.name}", *sizes]
        cfg = load_config(experiment.preset, common + gan)
        extra = extra_mle_steps(cfg)
        pretrain_dir, gan_dir, extra_dir = (root / f"{stage}-seed{seed}" for stage in ("pretrain", "maskgan", "mle-extra"))
        training += [
            Stage(f"{experiment.name}/pretrain-seed{seed}", pretrain_dir,
                  [*MASKGAN, "pretrain", "--preset", experiment.preset, f"run_dir={pretrain_dir}", *common],
                  rates["pretrain"], data_from=None if pretrain_dir == first_pretrain else first_pretrain),
            Stage(f"{experiment.name}/maskgan-seed{seed}", gan_dir,
                  [*MASKGAN, "train", "--preset", experiment.preset, f"run_dir={gan_dir}", *common, *gan, "--resume"],
                  gan_minutes(experiment, cfg), copy_from=pretrain_dir, data_from=pretrain_dir),
            Stage(f"{experiment.name}/mle-extra-seed{seed}", extra_dir,
                  [*MASKGAN, "pretrain", "--preset", experiment.preset, f"run_dir={extra_dir}", *common,
                   f"pretrain.mle_steps={cfg.pretrain.mle_steps + extra}"],
                  rates["mle_step"] * extra, copy_from=pretrain_dir, data_from=pretrain_dir),
        ]
        checkpoints["MaskMLE"].append(f"MaskMLE:{pretrain_dir}/checkpoints/mle.pt")
        checkpoints["MaskGAN"].append(f"MaskGAN:{gan_dir}/checkpoints/maskgan.pt")
        checkpoints["MaskMLE+extra"].append(f"MaskMLE+extra:{extra_dir}/checkpoints/mle.pt")
    eval_dir = root / "eval"
    eval_args = TINY_EVAL if args.tiny else [*FINAL_EVAL, *option("--temperatures", args.temperatures),
                                             *option("--baseline-temperatures", args.baseline_temperatures)]
    # Temperatures per checkpoint (evaluate's default: 11), then the baseline's.
    counts = [3, 3] if args.tiny else [len(t.split(",")) if t else 11 for t in (args.temperatures, args.baseline_temperatures or args.temperatures)]
    baseline = len(checkpoints["MaskMLE"])
    points = baseline * counts[1] + (sum(map(len, checkpoints.values())) - baseline) * counts[0]
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
            if stage.done():
                print(f"  {stage.name:<36} done in {json.loads(stage.done_file.read_text())['minutes']:.1f} min")
            else:
                total += stage.estimate_min
                over = stage.estimate_min > 90 and "/evaluate" not in stage.name
                print(f"  {stage.name:<36} to run, ~{stage.estimate_min:.0f} min"
                      + ("  (over the 90-minute budget of a run: lower gan.iterations in the levers)" if over else ""))
    print(f"[verdict] estimated time left: ~{total / 60:.1f} h")


def run_stage(stage: Stage) -> None:
    if stage.done():
        print(f"[verdict] {stage.name}: done, skipped")
        return
    if stage.done_file.is_file():
        print(f"[verdict] {stage.name}: its command changed since it ran: running it again")
    stage.run_dir.mkdir(parents=True, exist_ok=True)
    if stage.copy_from is not None:  # start from that seed's LM and MaskMLE (loaded, or continued, not retrained)
        (stage.run_dir / "checkpoints").mkdir(exist_ok=True)
        for name in ("lm.pt", "mle.pt"):
            target = stage.run_dir / "checkpoints" / name
            if not target.exists():
                shutil.copy2(stage.copy_from / "checkpoints" / name, target)
    if stage.data_from is not None:
        share_data(stage.data_from / "data", stage.run_dir / "data")
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
    stage.done_file.write_text(json.dumps({"command": stage.shown, "minutes": round(minutes, 2)}) + "\n")
    print(f"[verdict] {stage.name}: finished in {minutes:.1f} min", flush=True)


def share_data(source: Path, target: Path) -> None:
    """Hard-link another stage's prepared data into this stage's run_dir, where `maskgan` reuses it
    because its manifest's key matches the stage's data config (the training seed and the levers cannot
    change data.*), instead of preparing it again: minutes per stage for the synthetic oracle's 300,000
    sequences. A rebuilt file replaces its link, never the source's file. A target without a manifest
    is incomplete (preparation was interrupted): it is linked anew."""
    if (target / "manifest.json").is_file() or not (source / "manifest.json").is_file():
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            try:
                os.link(path, target / path.name)
            except OSError:  # another file system
                shutil.copy2(path, target / path.name)


def publish(experiment: Experiment, evaluate: Stage, out: Path, training: Sequence[Stage]) -> None:
    """The evaluation's tables and plots, with the commands and measured minutes of every stage."""
    out.mkdir(parents=True, exist_ok=True)
    copy_published(evaluate.run_dir, out)
    stages = [{"stage": s.name, **json.loads(s.done_file.read_text())} for s in [*training, evaluate]]
    (out / "experiment.json").write_text(json.dumps({"experiment": experiment.name, "stages": stages}, indent=1) + "\n")
    print(f"[verdict] {experiment.name}: results in {out}")


TARGET_RATIO = 0.85  # issue 19: MaskGAN's eval-LM perplexity at most 0.85x MaskMLE's at matched diversity


def write_summary(published: Path) -> None:
    """<published>/verdict.md: every published experiment's verdict in one table, against issue 19's targets."""
    experiments = {d.name.removeprefix("verdict-"): json.loads((d / "results.json").read_text())
                   for d in sorted(published.glob("verdict-*")) if not d.name.startswith("verdict-sweep-") and (d / "results.json").is_file()}
    if not experiments:
        print(f"[verdict] no published experiment under {published} (verdict-<experiment>/results.json): nothing to summarise")
        return
    lines = ["# The verdict across data sets (issue 19; written by benchmarks/verdict_experiment.py)", "",
             f"Real text: MaskGAN's eval-LM perplexity / MaskMLE's at matched reverse-LM perplexity, 95% CI over training "
             f"seeds (target <= {TARGET_RATIO} with the interval below 1, and a held-out D no better at spotting MaskGAN's "
             "in-fills than MaskMLE's at the same diversity). MaskMLE+extra: MaskMLE trained on as many more windows.", "",
             "| experiment | split | seeds | MaskGAN ratio (95% CI) | MaskMLE+extra ratio (95% CI) | "
             "held-out D accuracy, MaskGAN - MaskMLE (95% CI) | target met |", "|---|---|---|---|---|---|---|"]
    for name, results in experiments.items():
        gan, extra = (results["verdict"].get(model, {}) for model in ("MaskGAN", "MaskMLE+extra"))
        d, interval = gan.get("two_sample_accuracy_difference_interval"), gan.get("ratio_interval")
        met = (interval is not None and gan["ratio"] <= TARGET_RATIO and interval[1] < 1  # an interval implies a ratio
               and d is not None and d[0] <= 0)
        lines.append(f"| {name} | {results['split']} | {gan.get('replicates', 0)} | {_ratio(gan)} | {_ratio(extra)} | "
                     + (f"{gan['two_sample_accuracy_difference']:+.3f} ({d[0]:+.3f} to {d[1]:+.3f})" if d else "-")
                     + f" | {'see the oracle table' if _on_oracle(results) else 'yes' if met else 'no'} |")
    oracle = {name: r for name, r in experiments.items() if _on_oracle(r)}
    if oracle:
        temperatures = sorted({row["temperature"] for r in oracle.values() for v in r["verdict"].values()
                               for row in v["oracle"]["by_temperature"]["temperatures"]})
        lines += ["", "Synthetic oracle: oracle NLL minus MaskMLE's at each temperature (nats per masked token, 95% CI over "
                  "training seeds; target: below 0 at every temperature, for every oracle), and the oracle perplexity "
                  "ratio at matched reverse-LM perplexity.", "",
                  "| experiment | model | oracle perplexity ratio (95% CI) | "
                  + " | ".join(f"T={t:g}" for t in temperatures) + " | lower at every temperature |",
                  "|---|---|---|" + "---|" * len(temperatures) + "---|"]
        for name, results in oracle.items():
            for model, verdict in results["verdict"].items():
                rows = {row["temperature"]: row for row in verdict["oracle"]["by_temperature"]["temperatures"]}
                cells = [difference_text(rows[t]) if t in rows else "-" for t in temperatures]
                lines.append(f"| {name} | {model} | {_ratio(verdict['oracle']['matched'])} | {' | '.join(cells)} | "
                             f"{'yes' if verdict['oracle']['by_temperature']['lower_at_every_temperature'] else 'no'} |")
    (published / "verdict.md").write_text("\n".join(lines) + "\n")
    print(f"[verdict] summary of {', '.join(experiments)} in {published / 'verdict.md'}")


def _on_oracle(results: dict[str, Any]) -> bool:
    return any("oracle" in v for v in results["verdict"].values())


def _ratio(verdict: dict[str, Any]) -> str:
    if verdict.get("ratio") is None:
        return "-"
    interval = verdict.get("ratio_interval")
    return f"{verdict['ratio']:.3f}" + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def copy_published(eval_dir: Path, out: Path) -> None:
    """The evaluation's tables, samples and plots that a published result keeps."""
    for name in PUBLISHED:
        if (eval_dir / name).is_file():
            shutil.copy2(eval_dir / name, out / name)


def sweep(args: argparse.Namespace, levers: dict[str, dict[str, Any]]) -> int:
    """The lever screen on validation data: one `maskgan train` per trial of the levers file's `screen`
    section (one lever family each, on top of `all` and `sweep`), all from the sweep data set's seed-0
    pretraining (the final run's own: no extra pretraining), then one `maskgan evaluate --split valid`
    that compares each trial's MaskGAN with that MaskMLE at matched diversity. The lowest ratio wins;
    its overrides are added to `all` in <root>/sweep-<data set>/levers.yaml, which `run --levers` uses."""
    experiment = EXPERIMENTS[args.sweep_on]
    trials = levers.get("screen", {})
    if not trials:
        raise ConfigError(f"{args.levers} has no `screen:` section: add trials (name: {{dotted key: value}}) to compare")
    pretrain, *_ = experiment_stages(experiment, argparse.Namespace(**{**vars(args), "seeds": [0]}), levers)[0]
    run_stage(pretrain)
    sweep_dir = args.root / f"sweep-{experiment.name}"
    base = [*experiment.budget, *lever_overrides(levers, "sweep"), "seed=0", f"tracking.experiment=verdict-sweep-{experiment.name}",
            *(TINY + ["gan.iterations=2"] if args.tiny else [])]
    checkpoints = []
    for trial, overrides in trials.items():
        trial_overrides = [*base, *as_overrides(overrides)]
        cfg = load_config(experiment.preset, trial_overrides)
        run_dir = sweep_dir / trial
        run_stage(Stage(f"sweep-{experiment.name}/{trial}", run_dir,
                        [*MASKGAN, "train", "--preset", experiment.preset, f"run_dir={run_dir}", *trial_overrides, "--resume"],
                        gan_minutes(experiment, cfg), copy_from=pretrain.run_dir, data_from=pretrain.run_dir))
        checkpoints.append(f"{trial}:{run_dir}/checkpoints/maskgan.pt")
    eval_dir = sweep_dir / "eval"
    eval_args = ["--split", "valid", *(TINY_EVAL if args.tiny else [*SWEEP_EVAL, *option("--temperatures", args.temperatures)])]
    run_stage(Stage(f"sweep-{experiment.name}/evaluate", eval_dir,
                    [*MASKGAN, "evaluate", f"MaskMLE:{pretrain.run_dir}/checkpoints/mle.pt", *checkpoints, "--out", str(eval_dir),
                     *eval_args, f"tracking.experiment=verdict-sweep-{experiment.name}", *experiment.eval_overrides,
                     *(["pretrain.lm_steps=20"] if args.tiny else [])],
                    experiment.minutes["point"] * (len(trials) + 1) * 5))
    results = json.loads((eval_dir / "results.json").read_text())
    ranked = sorted((v["ratio"], name) for name, v in results["verdict"].items() if v["ratio"] is not None)
    if not ranked:
        raise StageFailed(f"no trial matched MaskMLE's diversity on validation data (see {eval_dir}/metrics.md): no levers chosen")
    ratio, best = ranked[0]
    out = sweep_dir / "levers.yaml"
    chosen = {section: values for section, values in levers.items() if section != "screen"}
    chosen["all"] = {**levers.get("all", {}), **trials[best]}
    out.write_text(f"# Chosen by the {experiment.name} lever screen on validation data: trial {best}, "
                   f"matched-diversity ratio {ratio:.3f}\n" + OmegaConf.to_yaml(chosen))
    publish_dir = args.publish / f"verdict-sweep-{experiment.name}"
    publish_dir.mkdir(parents=True, exist_ok=True)
    (publish_dir / "screen.md").write_text(screen_table(results, trials, best))
    copy_published(eval_dir, publish_dir)
    shutil.copy2(out, publish_dir / "levers.yaml")
    print(f"[verdict] sweep: trial {best} has the lowest validation ratio ({ratio:.3f}); levers written to {out}")
    return 0


def screen_table(results: dict[str, Any], trials: dict[str, dict[str, Any]], best: str) -> str:
    """One row per screen trial: its levers, validation masked perplexity and matched-diversity verdict."""
    entries = {c["model"]: c for c in results["checkpoints"]}
    base = entries["MaskMLE"]
    lines = [f"Lever screen on the {results['split']} split (one training seed, evaluation seed {results['seeds']}: "
             "no interval; the 3-seed comparison is the claim). Ratio: eval-LM perplexity / MaskMLE's at matched "
             "reverse-LM perplexity (< 1 = better); D: held-out two-sample accuracy vs MaskMLE's at the same diversity.", "",
             "| trial | levers | masked perplexity | ratio | matched points | D accuracy | MaskMLE's D accuracy |",
             "|---|---|---|---|---|---|---|",
             f"| MaskMLE (start) | - | {base['masked_perplexity']:.1f} | 1 | - | - | - |"]
    for trial, levers in trials.items():
        verdict = results["verdict"][trial]
        ratio = "no match" if verdict["ratio"] is None else f"{verdict['ratio']:.3f}" + (" (chosen)" if trial == best else "")
        accuracy = [f"{verdict[key]:.3f}" if key in verdict else "-" for key in ("two_sample_accuracy", "baseline_two_sample_accuracy")]
        lines.append(f"| {trial} | {', '.join(as_overrides(levers)) or '(none)'} | {entries[trial]['masked_perplexity']:.1f} | {ratio} | "
                     f"{verdict['matched_points']}/{verdict['matched_points'] + verdict['unmatched_points']} | {accuracy[0]} | {accuracy[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
