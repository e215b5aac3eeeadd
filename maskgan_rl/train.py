"""The whole pipeline from one config: prepare data, pretrain (or load) LM and MaskMLE, adversarial training.

Adversarial checkpoints (`<run_dir>/checkpoints/gan-<iteration>.pt`) hold the whole system: generator,
critic, discriminator, optimiser states, iteration counter and seeds, plus config and vocabulary.
`--resume` continues from the newest readable one in the same MLflow run; steps already logged
are never logged again.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from maskgan_rl import storage
from maskgan_rl.checkpoint import latest_good_checkpoint, save_checkpoint
from maskgan_rl.config import Config, flatten, to_dict, to_yaml
from maskgan_rl.dataset import prepare_data
from maskgan_rl.errors import CheckpointError, RunFailure
from maskgan_rl.infill import example_text
from maskgan_rl.loading import load_generator, stored_config
from maskgan_rl.models.discriminator import Discriminator
from maskgan_rl.models.precision import describe
from maskgan_rl.pretrain import PretrainResult, pretrain
from maskgan_rl.progress import Progress
from maskgan_rl.resources import check_cluster_resources, unused_gpu_hint
from maskgan_rl.storage import Location
from maskgan_rl.tracking import Tracker, tracking_uri
from maskgan_rl.vocab import Vocab

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FINAL_CHECKPOINT = "maskgan.pt"
# Besides model.* and data.*, the settings a trainer state depends on: --resume refuses changes to them.
FIXED_ON_RESUME = ("gan.algo", "gan.disc_embed", "gan.disc_hidden", "gan.disc_layers", "gan.disc_layer_norm")

log = logging.getLogger(__name__)


class DivergenceError(RunFailure):
    """Training produced NaN/Inf or a learner_masked_perplexity past `gan.max_masked_perplexity`."""


def run_pretraining(cfg: Config) -> PretrainResult:
    data = prepare_data(cfg)
    with Tracker(cfg, "pretrain") as tracker:
        _log_run_files(cfg, tracker, data)
        result = pretrain(cfg, data, tracker)
        tracker.log_model(result.mle_path, data.vocab)
    print(next_steps(cfg, result.mle_path, data.vocab))
    return result


IterationHook = Callable[[list[dict[str, float]]], None]


def run_training(cfg: Config, resume: bool = False, on_iteration: Optional[IterationHook] = None) -> Location:
    """The whole pipeline. `on_iteration(history)` is called after every adversarial iteration (and its
    checkpoint, when one is due) with the records of every iteration so far, the last one just
    finished (after a resume, those before it too): `maskgan tune` reports it to Ray Tune."""
    if cfg.gan.algo_params:  # refused now, not after pretraining (RLlib is slow to import: only then)
        from maskgan_rl.rl.algorithms import check_algo_params

        check_algo_params(cfg)
    previous = _checkpoint_to_resume(cfg, resume)  # before the data are rebuilt for a config it refuses
    data = prepare_data(cfg)
    if previous is not None and previous[1].get("vocab") != data.vocab.tokens:
        raise CheckpointError(
            f"{previous[0]} was trained with another vocabulary ({len(previous[1].get('vocab') or [])} tokens there, "
            f"{len(data.vocab)} here: the corpus changed): resume with the data it was trained on, or set run_dir=... for a new run"
        )
    if cfg.gan.iterations > 0:  # a cluster that cannot place this config fails now, not after pretraining
        init_ray(cfg)
        hint = unused_gpu_hint(cfg, check_cluster_resources(cfg))
        if hint:
            log.info(f"[gan] {hint}")
    with Tracker(cfg, "train", reopen="always" if resume else "same_config") as tracker:
        _log_run_files(cfg, tracker, data)
        pretrained = pretrain(cfg, data, tracker)
        if cfg.gan.iterations == 0:
            final = pretrained.mle_path
        else:
            final = _adversarial(cfg, data, pretrained, tracker, previous, on_iteration)
        tracker.log_model(final, data.vocab)
    print(next_steps(cfg, final, data.vocab))
    return final


def next_steps(cfg: Config, final: Location, vocab: Vocab) -> str:
    """What a finished training (or pretraining) made and the commands that use it, for the end of its output."""
    mle = storage.join(cfg.run_dir, "checkpoints", "mle.pt")
    shown = shlex.quote(str(final))  # a URI's query holds "&"
    lines = [
        f"done: generator in {final}",
        f'  fill in blanks:  maskgan infill {shown} "{example_text(vocab.tokens)}"',
    ]
    if final != mle and storage.exists(mle):
        lines.append(f"  compare:         maskgan evaluate {shown} {shlex.quote(str(mle))}")
    if cfg.tracking.enabled:
        uri = tracking_uri(cfg)
        browse = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        lines.append(f"  runs and curves: {browse}  (experiment {cfg.tracking.experiment!r})")
    return "\n".join(lines)


def _adversarial(
    cfg: Config, data, pretrained: PretrainResult, tracker: Tracker, previous, on_iteration: Optional[IterationHook]
) -> Location:
    # RLlib (and evaluation's plotting) load only when adversarial training runs: `maskgan pretrain` never needs them.
    from maskgan_rl.evaluate import evaluate_during_training
    from maskgan_rl.plots import save_figure
    from maskgan_rl.rl.adversarial import AdversarialTrainer

    generator, _, _ = load_generator(pretrained.mle_path, data.vocab)
    trainer = AdversarialTrainer(cfg, data, generator.state_dict(), discriminator_state=None)
    log.info(f"[gan] precision of the processes on CPUs: {describe(cfg.resources.precision, 'cpu', generator)}")
    discriminator = Discriminator.from_config(len(data.vocab), cfg)  # a copy of the actor's D, for evaluation

    def evaluate() -> dict[str, float]:
        discriminator.load_state_dict(trainer.discriminator_state_dict())
        return evaluate_during_training(generator, data, cfg, discriminator)

    start, history = 0, []  # history: one record of metrics per iteration, for the training curves
    if previous is not None:
        path, checkpoint = previous
        trainer.set_state(checkpoint["trainer"])
        start = int(checkpoint["iteration"])
        history = list(checkpoint.get("history", []))
        log.info(f"[gan] resumed from {path} at iteration {start}{_changed_settings(checkpoint, path, cfg)}")
    progress = Progress("gan", total=cfg.gan.iterations, unit="it", every_s=0.0, initial=start)
    folder = storage.join(cfg.run_dir, "checkpoints")
    if start == 0:  # the MaskMLE starting point, for the curves of every eval metric
        if cfg.gan.disc_pretrain_steps:
            disc = trainer.pretrain_discriminator()
            tracker.log_metrics({f"gan/{k}": v for k, v in disc.items()}, step=0)
            log.info(f"[gan] discriminator pretrained for {cfg.gan.disc_pretrain_steps} steps on MaskMLE in-fills: "
                     f"accuracy {disc['disc_pretrain_accuracy']:.3f}, {disc['disc_pretrain_s']:.0f} s")
        start_metrics = evaluate()
        tracker.log_metrics({f"gan/eval/{k}": v for k, v in start_metrics.items()}, step=0)
        history.append({"iteration": 0, **{f"eval/{k}": v for k, v in start_metrics.items()}})
        log.info("[gan] iteration 0 (MaskMLE): " + "  ".join(f"eval/{k}={v:.4g}" for k, v in start_metrics.items()))
    try:
        for iteration in range(start + 1, cfg.gan.iterations + 1):
            metrics = trainer.train_iteration()
            if iteration % cfg.gan.eval_every == 0 or iteration == cfg.gan.iterations:
                generator.load_state_dict(trainer.shipped_generator_state_dict())
                metrics.update({f"eval/{k}": v for k, v in evaluate().items()})
            _guard_divergence(cfg, metrics, iteration, folder)
            tracker.log_metrics({f"gan/{k}": v for k, v in metrics.items()}, step=iteration)
            tracker.log_metrics(trainer.rllib_metrics, step=iteration)  # rllib/learner/..., rllib/env_runner/...
            progress.update(iteration, **_headline(metrics))
            history.append({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            if iteration % cfg.gan.checkpoint_every == 0 or iteration == cfg.gan.iterations:
                _save_gan_checkpoint(cfg, data, trainer, iteration, folder, history)
            if on_iteration is not None:  # after the checkpoint: a sweep may end the process here
                on_iteration(history)
        final = _save_final(cfg, data, trainer, folder, history)
        tracker.log_artifact(final, "checkpoints")
        if history:  # (empty only when resuming a finished run from a checkpoint older than histories)
            curves = save_figure(training_curves(history), storage.local_dir(cfg.run_dir) / "training_curves.png")
            tracker.log_artifact(curves, "plots")
            log.info(f"[gan] training curves: {storage.upload(curves, storage.join(cfg.run_dir, curves.name))}")
        summary = adversarial_summary(history)
        if summary is not None:
            sentence, deltas = summary
            log.info(f"[gan] {sentence}")
            tracker.log_metrics({f"gan/eval/delta_{k}": v for k, v in deltas.items()}, step=cfg.gan.iterations)
            tracker.set_tags({"maskgan.adversarial_summary": sentence})
        return final
    finally:
        trainer.stop()


def _checkpoint_to_resume(cfg: Config, resume: bool) -> tuple[Location, dict[str, Any]] | None:
    """The newest readable adversarial checkpoint to continue, checked against this config before any
    work starts; None for a new run. Never silently starts over on top of existing checkpoints."""
    folder = storage.join(storage.check_writable(cfg.run_dir, f"run_dir={cfg.run_dir}"), "checkpoints")
    existing = storage.listdir(folder, "gan-*.pt")
    if existing and not resume:
        raise CheckpointError(
            f"{cfg.run_dir} already holds adversarial checkpoints (latest {existing[-1].name}): "
            "pass --resume to continue them, or set run_dir=... for a new run"
        )
    if not existing:
        return None
    previous = latest_good_checkpoint(folder, "gan-*.pt")
    if previous is None:  # the run's own files went bad: a runtime failure, not a usage error
        raise RunFailure(
            f"no adversarial checkpoint in {folder} can be read ({', '.join(p.name for p in existing)}): "
            "move them away to start over, or set run_dir=... for a new run"
        )
    path, checkpoint = previous
    # The trainer state holds weights of this model shape and optimiser state of this algorithm, for
    # a vocabulary built from these data settings (paths may differ: the cluster may see other ones).
    differences = [
        f"{key} ({there} there, {here} here)"
        for key, (there, here) in _setting_changes(checkpoint, path, cfg).items()
        if key.startswith("model.") or key in FIXED_ON_RESUME or (key.startswith("data.") and not key.endswith("_path"))
    ]
    if checkpoint.get("iteration", 0) > cfg.gan.iterations:
        raise CheckpointError(
            f"{path} is at iteration {checkpoint['iteration']}, past gan.iterations={cfg.gan.iterations}: "
            f"set gan.iterations={checkpoint['iteration']} or more to continue it"
        )
    if differences or "trainer" not in checkpoint:
        raise CheckpointError(
            f"{path} does not match this run ({', '.join(differences) or 'no trainer state'}): "
            "resume with the config it was trained with, or set run_dir=... for a new run"
        )
    return previous


def _setting_changes(checkpoint: dict[str, Any], path: Location, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (value in the checkpoint's config, value here)} for every setting that differs."""
    before, now = flatten(stored_config(checkpoint, path)), flatten(cfg)
    return {key: (before.get(key), value) for key, value in now.items() if before.get(key) != value}


def _changed_settings(checkpoint: dict[str, Any], path: Location, cfg: Config) -> str:
    """", with gan.gen_lr 0.001 -> 0.003, ...": what a resumed run does differently (said, not refused)."""
    changes = [f"{key} {there} -> {here}" for key, (there, here) in _setting_changes(checkpoint, path, cfg).items()]
    return f", with {', '.join(changes)}" if changes else ""


def init_ray(cfg: Config) -> None:
    """Connect to the Ray this run uses (`ray_address`), unless this process already is."""
    import ray  # slow to import, and pretraining alone never starts Ray

    if ray.is_initialized():
        return
    address = ray_address(cfg)
    if address == "local":
        ray.init(address="local", num_cpus=cfg.resources.num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)


def ray_address(cfg: Config) -> str:
    """The rule: `resources.ray_address` if set ("auto", "HOST:PORT", "ray://..."); else, inside a job
    submitted with `ray job submit` (also KubeRay's RayJob), the job's own cluster; else "local", a
    new Ray of this process's own. Never a cluster merely found running on the machine (`ray start`)
    or named by a RAY_ADDRESS left in the shell: Ray's own default would join those."""
    if cfg.resources.ray_address:
        return cfg.resources.ray_address
    # Ray's job supervisor starts the entrypoint with the cluster's address in RAY_ADDRESS and the
    # job's config in RAY_JOB_CONFIG_JSON_ENV_VAR; only the latter says the process is a submitted job.
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ and os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return "local"


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("episode_reward_mean", "disc_loss", "disc_accuracy", "learner_masked_perplexity", "masked_tokens_per_s")
    shown = {k: metrics[k] for k in keys if k in metrics}
    # Processes restarted during the iteration: shown when it happens (MLflow has every iteration's count).
    shown.update({k: metrics[k] for k in ("env_runner_restarts", "disc_actor_restarts") if metrics.get(k)})
    # Evaluated iterations also show quality, so a run can be judged from its log alone.
    shown.update({k: metrics[k] for k in ("eval/oracle_nll", "eval/disc_heldout_accuracy") if k in metrics})
    return shown


def _guard_divergence(cfg: Config, metrics: dict[str, Any], iteration: int, folder: Location) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    ppl = metrics.get("learner_masked_perplexity")
    if bad or (ppl is not None and ppl > cfg.gan.max_masked_perplexity):
        last = latest_good_checkpoint(folder, "gan-*.pt")
        kept = f"the last good checkpoint is {last[0]}" if last else "no adversarial checkpoint was written yet"
        what = f"non-finite {', '.join(bad)}" if bad else f"learner_masked_perplexity {ppl:.1f} > gan.max_masked_perplexity={cfg.gan.max_masked_perplexity:g}"
        raise DivergenceError(
            f"training diverged at iteration {iteration} ({what}); {kept}. Lower gan.gen_lr or raise gan.max_masked_perplexity, then --resume"
        )


def _payload(cfg: Config, data, trainer, iteration: int, history: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "kind": "maskgan",
        "config": to_dict(cfg),
        "vocab": data.vocab.tokens,
        "iteration": iteration,
        "models": {"generator": trainer.shipped_generator_state_dict(), "critic": trainer.critic_state_dict()},
        "history": history,
    }


def _save_gan_checkpoint(cfg: Config, data, trainer, iteration: int, folder: Location, history: list[dict[str, float]]) -> Location:
    payload = _payload(cfg, data, trainer, iteration, history) | {"trainer": trainer.get_state()}
    path = save_checkpoint(storage.join(folder, f"gan-{iteration:06d}.pt"), payload)
    prune_checkpoints(folder, cfg.gan.keep_checkpoints)
    return path


def prune_checkpoints(folder: Location, keep: int) -> None:
    """Delete all but the newest `keep` gan-*.pt (gan.keep_checkpoints >= 2: one may be half-way
    through being replaced when the process is killed)."""
    for old in storage.listdir(folder, "gan-*.pt")[:-keep]:
        storage.delete(old.location)


def _save_final(cfg: Config, data, trainer, folder: Location, history: list[dict[str, float]]) -> Location:
    # The shipped model: generator (+ critic), without the trainer state a resume needs.
    return save_checkpoint(storage.join(folder, FINAL_CHECKPOINT), _payload(cfg, data, trainer, cfg.gan.iterations, history))


CURVES = (  # plotted where present: oracle metrics on synthetic data only, eval metrics every gan.eval_every
    "episode_reward_mean", "disc_loss", "disc_accuracy", "learner_masked_perplexity", "eval/masked_perplexity",
    "eval/oracle_nll", "eval/unique_2grams", "eval/disc_heldout_accuracy", "eval/reward_oracle_corr", "eval/disc_optimal_corr",
)


# How the change of each evaluation metric over adversarial training reads: (name, "low" where lower
# is better, None where a change is no judgement: D's accuracy compares two different discriminators,
# and n-gram diversity is best near the real text's, not at its highest).
SUMMARY_METRICS = {
    "oracle_nll": ("oracle NLL", "low"),
    "masked_perplexity": ("masked perplexity", "low"),
    "disc_heldout_accuracy": ("held-out D accuracy", None),
    "unique_2grams": ("unique 2-grams %", None),
}


def adversarial_summary(history: list[dict[str, float]]) -> Optional[tuple[str, dict[str, float]]]:
    """(sentence, {metric: change}): the shipped generator against its MaskMLE start on the evaluation
    windows, from the iteration-0 record and the last evaluated one; None without both."""
    evaluated = [record for record in history if any(key.startswith("eval/") for key in record)]
    if len(evaluated) < 2 or evaluated[0].get("iteration") != 0:
        return None
    start, end = evaluated[0], evaluated[-1]
    parts, deltas = [], {}
    for key, (name, better) in SUMMARY_METRICS.items():
        if f"eval/{key}" in start and f"eval/{key}" in end:
            before, after = start[f"eval/{key}"], end[f"eval/{key}"]
            deltas[key] = after - before
            word = "" if better is None else ", " + ("unchanged" if after == before else "better" if after < before else "worse")
            parts.append(f"{name} {before:.4g} -> {after:.4g} ({after - before:+.3g}{word})")
    return f"adversarial training, iteration {end['iteration']:.0f} against its MaskMLE start on the evaluation windows: {'; '.join(parts)}", deltas


def training_curves(history: list[dict[str, float]]) -> Figure:
    """training_curves.png: every CURVES metric that was logged, the MaskMLE start (iteration 0) marked
    on each evaluation panel."""
    from maskgan_rl.plots import training_curves_figure  # matplotlib is slow to import; curves are drawn once, at the end

    keys = [key for key in CURVES if any(key in record for record in history)]
    start = history[0] if history[0].get("iteration") == 0 else {}
    references = {key: value for key, value in start.items() if key.startswith("eval/")}
    return training_curves_figure(history, keys, references=references, reference_label="MaskMLE start")


def _log_run_files(cfg: Config, tracker: Tracker, data) -> None:
    config_path = storage.write_bytes(storage.join(cfg.run_dir, "config.yaml"), to_yaml(cfg).encode("utf-8"))
    tracker.log_artifact(config_path)
    tracker.log_artifact(Path(data.train_path).parent / "vocab.json")
    tracker.set_tags({"maskgan.started": time.strftime("%Y-%m-%dT%H:%M:%S")})
