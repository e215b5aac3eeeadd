"""`maskgan evaluate`: compare checkpoints on held-out data the way the paper and later work did.

Every checkpoint fills the same masked held-out windows at every temperature and `--seeds` value;
the in-fills are scored (masked perplexity, eval-LM and reverse-LM perplexity, n-gram diversity,
BLEU/Self-BLEU, oracle NLL on synthetic data, a two-sample test) and every model is compared with
the `--baseline` at matched diversity (verdict.py). Results go to `<out>` and MLflow.

More (each score's definition, grouping of checkpoints, outputs): docs/design.md, "Evaluation (`maskgan_rl/evaluate.py`)".
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from maskgan_rl import storage
from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.config import Config, DataConfig, config_from_dict, load_config
from maskgan_rl.dataset import PreparedData, WindowDataset, prepare_data, write_windows
from maskgan_rl.errors import ConfigError, DataError
from maskgan_rl.fitting import lm_loss, load_or_train, mle_loss, validation_perplexity
from maskgan_rl.loading import load_infiller, resolve_device
from maskgan_rl.masking import make_present, mask_context
from maskgan_rl.metrics import bleu, self_bleu, unique_ngram_fraction, validation_ngram_overlap
from maskgan_rl.models.discriminator import Discriminator, log_real_prob, right_counts
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.models.losses import masked_cross_entropy
from maskgan_rl.oracle import OracleLM
from maskgan_rl.plots import plot_differences, plot_quality_diversity
from maskgan_rl.storage import Location, writable_dir
from maskgan_rl.tracking import RUN_ID_FILE, Tracker
from maskgan_rl.verdict import (
    CONFIDENCE,
    ORACLE,
    InFills,
    difference_text,
    matched_diversity_verdict,
    pair_checkpoints,
    same_temperature_sentence,
    same_temperature_verdict,
    two_sample_test,
    verdict_sentence,
)
from maskgan_rl.vocab import Vocab

log = logging.getLogger(__name__)

NGRAM_ORDERS = (2, 3, 4)
EVAL_LM_SEED_OFFSET = 1  # the eval LM must not be the generator's own pretraining LM
_BATCH = 256  # rows per forward pass when sampling and scoring (memory, not results)
# What fills blanks: `logits(context, filled)` and `infill(windows, present, temperature, rng)`.
Infiller = Union[Generator, LanguageModel]


TEMPERATURE_SWEEP = tuple(round(0.5 + 0.1 * i, 1) for i in range(11))  # 0.5, 0.6, ..., 1.5
BASELINE = "MaskMLE"  # the model name of checkpoints of kind "mle"


@dataclass
class EvalSettings:
    temperatures: Sequence[float] = TEMPERATURE_SWEEP
    samples: int = 1000  # prompts filled per checkpoint and temperature (at most half the held-out split)
    split: str = "valid"  # valid | test
    bleu_order: int = 4
    bleu_references: int = 500  # fixed, so BLEU is comparable across checkpoints and runs
    reverse_lm_steps: int = 200  # 0 skips the reverse LM
    table_rows: int = 20
    seeds: Sequence[int] = (0,)  # masks and sampling, each seed a replicate: every checkpoint fills the same blanks
    two_sample_steps: int = 100  # training steps of each two-sample discriminator; 0 skips the test
    baseline: str = BASELINE  # the model every other one is compared with at matched diversity
    # The baseline's checkpoints alone at these (a superset of `temperatures`; empty: `temperatures`): its
    # curve is interpolated between neighbouring temperatures, and a finer grid keeps the chord near the curve.
    baseline_temperatures: Sequence[float] = ()

    def temperatures_of(self, model: str) -> Sequence[float]:
        """The temperatures a model's checkpoints are scored at."""
        return (self.baseline_temperatures if model == self.baseline else ()) or self.temperatures


# ---------------------------------------------------------------- metrics on models


def masked_perplexity(generator: Infiller, held_out: WindowDataset, cfg: Config, max_batches: Optional[int] = None) -> float:
    """Teacher-forced perplexity over masked targets only, with the masks MaskMLE's validation uses.

    `max_batches` (of `pretrain.batch_size` windows) bounds the cost during training; None = all windows.
    """
    batches = max_batches or math.ceil(len(held_out) / cfg.pretrain.batch_size)
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, eval_batches=batches))
    device = next(generator.parameters()).device
    return validation_perplexity(generator, lambda w, rng: mle_loss(generator, w, cfg, rng), held_out, cfg, device)


@torch.no_grad()
def lm_perplexity(lm: LanguageModel, windows: np.ndarray) -> float:
    """Perplexity of windows [N, T+1] (all T targets) under a language model."""
    lm.eval()
    device = lm.head.bias.device
    nll_sum, count = 0.0, 0.0
    for chunk in torch.split(torch.as_tensor(windows, device=device), _BATCH):
        mean, n = masked_cross_entropy(lm(chunk[:, :-1]), chunk[:, 1:], torch.ones_like(chunk[:, 1:], dtype=torch.bool))
        nll_sum += mean.item() * n.item()
        count += n.item()
    return math.exp(nll_sum / count)


def oracle_nll(oracle: OracleLM, windows: np.ndarray, present: np.ndarray) -> float:
    """Mean oracle NLL (nats) per masked target, every masked token weighing the same."""
    masked = ~np.asarray(present)
    rows = masked.any(axis=1)  # a row with nothing masked has no mean (NaN): it adds no tokens either
    per_row = oracle.nll(windows[rows], masked[rows]).cpu().numpy()
    counts = masked[rows].sum(axis=1)
    return float((per_row * counts).sum() / counts.sum())


@lru_cache(maxsize=2)
def synthetic_oracle(vocab_size: int, hidden: int, seed: int) -> OracleLM:
    return OracleLM(vocab_size, hidden, seed)


def _oracle_for(data: DataConfig) -> Optional[OracleLM]:
    return synthetic_oracle(data.oracle_vocab, data.oracle_hidden, data.oracle_seed) if data.dataset == "synthetic" else None


@torch.no_grad()
def fill_windows(generator: Infiller, windows: np.ndarray, present: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """The generator's in-fills [N, T+1] of windows [N, T+1] masked by present [N, T], reproducibly."""
    generator.eval()
    device = next(generator.parameters()).device
    rng = torch.Generator(device=device).manual_seed(seed)
    filled = [
        generator.sample(
            torch.as_tensor(windows[i : i + _BATCH], device=device), torch.as_tensor(present[i : i + _BATCH], device=device),
            temperature, rng,
        )[0].cpu()
        for i in range(0, len(windows), _BATCH)
    ]
    return torch.cat(filled).numpy()


def ngram_metrics(windows: np.ndarray) -> dict[str, float]:
    """% unique n-grams (Table 6) of the targets of each window."""
    sentences = _sentences(windows)
    return {f"unique_{n}grams": unique_ngram_fraction(sentences, n) for n in NGRAM_ORDERS if n <= windows.shape[1] - 1}


@torch.no_grad()
def discriminator_metrics(
    discriminator: Discriminator,
    windows: np.ndarray,
    present: np.ndarray,
    filled: np.ndarray,
    oracle: Optional[OracleLM],
    generator: Optional[Generator] = None,
    temperature: float = 1.0,
) -> dict[str, float]:
    """What the discriminator knows about text it never trained on, over masked targets only.

    disc_heldout_accuracy: D's accuracy on held-out real windows and the generator's in-fills of them.
    The accuracy logged while training is measured on the rollouts D then takes k steps on, so it
    overstates this (synthetic-gan with its earlier 50,000 sequences and 10 steps per batch: 0.70 logged
    against 0.52 held out; the preset's own 5 steps: 0.53 logged, 0.51-0.53 held out).
    reward_oracle_corr (synthetic data): the correlation, over generated tokens, between the reward
    log D and the oracle's log-probability. Only where it is positive does the adversarial reward
    point the generator at better text; see docs/oracle-nll.md.
    With the `generator` that sampled `filled` (at `temperature`), also what D could know: the optimal
    discriminator between the oracle and that generator has logit log p_oracle(token) - log p_G(token)
    (the oracle reads the left context only, as the reward_check benchmark's `optimal` reward);
    optimal_disc_accuracy is its accuracy on the same windows, disc_optimal_corr the correlation, over
    generated tokens, of D's logit with its logit: how much of the learnable signal D has found.
    """
    discriminator.eval()
    device = next(discriminator.parameters()).device
    masked = torch.as_tensor(~present)
    batches: dict[str, list[Tensor]] = {"real": [], "fake": [], "optimal_real": [], "optimal_fake": []}
    for i in range(0, len(windows), _BATCH):
        window, fill, keep = (torch.as_tensor(a[i : i + _BATCH], device=device) for a in (windows, filled, present))
        context = mask_context(window, keep, discriminator.missing_id)
        batches["real"].append(discriminator(context, window).cpu())
        batches["fake"].append(discriminator(context, fill).cpu())
        if oracle is not None and generator is not None:
            on_g = next(generator.parameters()).device  # D and G may live on different devices
            for kind, tokens in (("optimal_real", window), ("optimal_fake", fill)):
                p_g = generator.token_log_probs(context.to(on_g), tokens.to(on_g), (~keep).to(on_g), temperature)
                batches[kind].append(oracle.token_log_probs(tokens.cpu()) - p_g.cpu())
    logits = {kind: torch.cat(parts) for kind, parts in batches.items() if parts}

    def accuracy(real: Tensor, fake: Tensor) -> float:
        right_real, right_fake, count = right_counts(real, fake, ~masked)
        return (right_real + right_fake) / (2 * max(count, 1.0))

    def correlation(a: Tensor, b: Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a[masked], b[masked]]))[0, 1])

    metrics = {"disc_heldout_accuracy": accuracy(logits["real"], logits["fake"])}
    if oracle is not None:
        metrics["reward_oracle_corr"] = correlation(log_real_prob(logits["fake"]), oracle.token_log_probs(filled))
    if "optimal_fake" in logits:
        metrics["optimal_disc_accuracy"] = accuracy(logits["optimal_real"], logits["optimal_fake"])
        metrics["disc_optimal_corr"] = correlation(logits["fake"], logits["optimal_fake"])
    return metrics


def evaluate_during_training(
    generator: Generator, data: PreparedData, cfg: Config, discriminator: Optional[Discriminator] = None
) -> dict[str, float]:
    """Cheap numbers for the training loop, on the first `pretrain.eval_batches` validation batches:
    masked validation perplexity, % unique n-grams of in-fills and, on synthetic data, their oracle NLL;
    with a `discriminator`, also `discriminator_metrics` on the same in-fills.

    Masks and sampling are seeded, so successive calls differ only through the generator's weights.
    The caller's model is left in eval mode.
    """
    valid = WindowDataset(data.valid_path)
    metrics = {"masked_perplexity": masked_perplexity(generator, valid, cfg, max_batches=cfg.pretrain.eval_batches)}
    windows = valid.windows[: cfg.pretrain.batch_size * cfg.pretrain.eval_batches]
    present = make_present(len(windows), cfg.data.seq_len, cfg.mask, np.random.default_rng(cfg.seed))
    filled = fill_windows(generator, windows, present, cfg.gan.temperature, cfg.seed)
    metrics.update(ngram_metrics(filled))
    oracle = _oracle_for(cfg.data)
    if oracle is not None:
        metrics["oracle_nll"] = oracle_nll(oracle, filled, present)
    if discriminator is not None:
        metrics.update(discriminator_metrics(discriminator, windows, present, filled, oracle, generator, cfg.gan.temperature))
    return metrics


# ---------------------------------------------------------------- the evaluation pipeline


@dataclass
class _Model:
    label: str  # one checkpoint: "<name> (<run folder>)"
    name: str  # the model it is a replicate of: NAME of NAME:path, else from its kind
    path: Location
    kind: str
    algo: str
    generator: Infiller
    training_run_id: Optional[str]


class _Scorer:
    """Everything shared by all checkpoints: prompts and their masks, references, eval LM, oracle,
    and the training windows of the two-sample test."""

    def __init__(self, cfg: Config, data: PreparedData, settings: EvalSettings, out: Path, tmp: Path, tracker: Tracker):
        self.cfg, self.settings, self.vocab = cfg, settings, data.vocab
        self.device = resolve_device(cfg)
        held_path = {"valid": data.valid_path, "test": data.test_path}[settings.split]
        if held_path is None:
            raise DataError("this dataset has no test split (data.test_path is unset): use --split valid")
        held = WindowDataset(held_path, expect_vocab=data.vocab)
        n_prompts = min(settings.samples, len(held) // 2)
        if n_prompts < 2:
            raise DataError(f"{held_path}: {len(held)} held-out windows; evaluation needs at least 4 (prompts + references)")
        self.prompts = held.windows[:n_prompts]
        self.references = held.windows[n_prompts:]
        self._reference_sentences = _sentences(self.references)
        self.masks = {seed: self._masks(n_prompts, seed) for seed in settings.seeds}
        self.bleu_references = min(settings.bleu_references, len(self.references))
        self.self_bleu_references = min(settings.bleu_references, n_prompts - 1)
        self.held_out = held
        self.oracle = _oracle_for(cfg.data)
        self._tmp = tmp  # reverse LMs and their training samples: thrown away after the evaluation
        # Reverse LMs would all log the same metric names at the same steps: their curves are not tracked.
        self._untracked = Tracker(dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False)), "evaluate")
        # Scored by every reverse LM: real held-out windows the prompts do not include.
        self._reference_set = self._window_file("references", self.references)
        train = WindowDataset(data.train_path)
        self.eval_lm, self.eval_lm_perplexity = self._train_lm(
            "eval_lm", out / "eval_lm.pt", train, held, cfg.pretrain.lm_steps,
            dataclasses.replace(cfg, seed=cfg.seed + EVAL_LM_SEED_OFFSET), tracker,
        )
        # The two-sample discriminators learn on as many training windows as there are prompts.
        self._two_sample_windows = {
            seed: train.windows[np.random.default_rng([seed, 1]).choice(len(train), size=min(n_prompts, len(train)), replace=False)]
            for seed in settings.seeds
        }
        self._two_sample_masks = {seed: self._masks(len(self._two_sample_windows[seed]), seed, stream=1) for seed in settings.seeds}

    def _masks(self, rows: int, seed: int, stream: int = 0) -> np.ndarray:
        """Masks of `rows` windows for an evaluation seed: stream 0 (the prompts) draws from the seed alone,
        as `--seed N` always has; other streams (the two-sample training windows) independently of it."""
        rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
        return make_present(rows, self.cfg.data.seq_len, self.cfg.mask, rng)

    def score(self, windows: np.ndarray, name: str, seed: int) -> dict[str, float]:
        """Every sample metric of filled (or real) windows [N, T+1] of the prompts masked by `seed`'s masks."""
        s, sentences, references = self.settings, _sentences(windows), self._reference_sentences
        metrics = ngram_metrics(windows)
        metrics["validation_overlap"] = validation_ngram_overlap(sentences, references, ns=[n for n in NGRAM_ORDERS if n <= windows.shape[1] - 1])
        metrics[f"bleu{s.bleu_order}"] = bleu(sentences, references, s.bleu_order, num_references=self.bleu_references, seed=seed)
        metrics[f"self_bleu{s.bleu_order}"] = self_bleu(sentences, s.bleu_order, num_references=self.self_bleu_references, seed=seed)
        metrics["eval_lm_perplexity"] = lm_perplexity(self.eval_lm, windows)
        if s.reverse_lm_steps > 0:
            metrics["reverse_lm_perplexity"] = self.reverse_lm_perplexity(windows, name)
        if self.oracle is not None:
            metrics["oracle_nll"] = oracle_nll(self.oracle, windows, self.masks[seed])
        return metrics

    def two_sample(self, generator: Infiller, filled: np.ndarray, temperature: float, seed: int) -> dict[str, float]:
        """The two-sample test of in-fills `filled` of the prompts (verdict.two_sample_test); {} when skipped."""
        if self.settings.two_sample_steps == 0:
            return {}
        windows, present = self._two_sample_windows[seed], self._two_sample_masks[seed]
        train = InFills(windows, present, fill_windows(generator, windows, present, temperature, seed))
        held_out = InFills(self.prompts, self.masks[seed], filled)
        return two_sample_test(train, held_out, len(self.vocab), self.cfg, self.settings.two_sample_steps, seed, self.device)

    def reverse_lm_perplexity(self, windows: np.ndarray, name: str) -> float:
        """Perplexity on the reference windows of an LM trained only on `windows` (a fresh model every time)."""
        samples = self._window_file(name, windows)
        path = samples.path.with_suffix(".pt")
        path.unlink(missing_ok=True)  # the cache is keyed by config, not by the samples: never reuse
        _, perplexity = self._train_lm(
            f"reverse_lm {name}", path, samples, self._reference_set, self.settings.reverse_lm_steps, self.cfg, self._untracked,
        )
        return perplexity

    def _train_lm(
        self, stage: str, path: Path, train: WindowDataset, valid: WindowDataset, steps: int, cfg: Config, tracker: Tracker
    ) -> tuple[LanguageModel, float]:
        """A language model trained (or loaded from `path`) with the pretraining loop; its perplexity on `valid`."""
        torch.manual_seed(cfg.seed)
        lm = LanguageModel(len(self.vocab), cfg.model).to(self.device)
        # Score every window of `valid`, not only the first pretrain.eval_batches batches.
        batches = math.ceil(len(valid) / cfg.pretrain.batch_size)
        cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, eval_batches=batches))
        perplexity = load_or_train(
            stage, "language_model", lm, path, cfg, self.vocab, tracker, steps=steps,
            batch_loss=lambda w, rng: lm_loss(lm, w), train=train, valid=valid, device=self.device,
        )
        return lm.eval(), perplexity

    def _window_file(self, name: str, windows: np.ndarray) -> WindowDataset:
        path = self._tmp / f"{re.sub(r'[^A-Za-z0-9.=-]+', '_', name)}.parquet"
        write_windows(path, windows, self.vocab, {"dataset": "evaluation samples", "name": name})
        return WindowDataset(path)


def evaluate_checkpoints(checkpoints: Sequence[str | Path], cfg: Config, settings: EvalSettings, out: str | Path) -> dict[str, Any]:
    """Evaluate checkpoints (paths or storage URIs, or NAME:path to name their model) on `cfg`'s data;
    writes results into `out` (a folder or a storage URI, written through its local cache, see
    maskgan_rl.storage) and MLflow; returns the results."""
    if not checkpoints:
        raise ConfigError("no checkpoint to evaluate: pass one or more .pt files")
    if not settings.temperatures or min(settings.temperatures) <= 0:
        raise ConfigError(f"temperatures {list(settings.temperatures)} must be a non-empty list of values > 0")
    missing = sorted(set(settings.temperatures) - set(settings.baseline_temperatures))
    if settings.baseline_temperatures and (missing or min(settings.baseline_temperatures) <= 0):
        raise ConfigError(f"--baseline-temperatures {list(settings.baseline_temperatures)} must be values > 0 that include every "
                          f"--temperatures value (missing: {missing}): the baseline is scored wherever the other models are")
    if settings.samples < 2:
        raise ConfigError(f"--samples {settings.samples}: give at least 2 (BLEU scores in-fills against each other)")
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise ConfigError(f"--seeds {list(settings.seeds)}: give one or more different seeds, e.g. 0,1,2")
    if settings.two_sample_steps < 0:
        raise ConfigError(f"--two-sample-steps {settings.two_sample_steps}: give 0 (skip the test) or more")
    destination = storage.check_writable(out, "--out")
    out = writable_dir(storage.local_dir(destination), "--out")
    data = prepare_data(cfg)
    models = _load_models(checkpoints, data.vocab, resolve_device(cfg))
    compared = _compared_models(models, settings)
    with Tracker(cfg, "evaluate", reopen="never") as tracker, tempfile.TemporaryDirectory() as tmp:
        tracker.log_params({f"eval.{k}": v for k, v in dataclasses.asdict(settings).items()})
        scorer = _Scorer(cfg, data, settings, out, Path(tmp), tracker)
        first_seed = settings.seeds[0]
        results: dict[str, Any] = {
            "split": settings.split, "prompts": len(scorer.prompts), "references": len(scorer.references),
            "bleu_references": scorer.bleu_references, "self_bleu_references": scorer.self_bleu_references,
            "temperatures": list(settings.temperatures),
            "baseline_temperatures": list(settings.temperatures_of(settings.baseline)), "mask": dataclasses.asdict(cfg.mask), "seeds": list(settings.seeds),
            "two_sample_steps": settings.two_sample_steps,
            "eval_lm": {"path": str(out / "eval_lm.pt"), "valid_perplexity": scorer.eval_lm_perplexity},
            "real": scorer.score(scorer.prompts, "real", first_seed),
            "checkpoints": [],
        }
        fills: dict[str, np.ndarray] = {}  # label -> in-fills at the table's temperature and the first seed
        table_temperature = min(settings.temperatures, key=lambda t: abs(t - 1.0))
        for model in models:
            masked_ppl = masked_perplexity(model.generator, scorer.held_out, cfg)
            entry = {"label": model.label, "model": model.name, "path": str(model.path), "kind": model.kind, "algo": model.algo,
                     "masked_perplexity": masked_ppl, "points": []}
            for seed, temperature in ((s, t) for s in settings.seeds for t in settings.temperatures_of(model.name)):
                filled = fill_windows(model.generator, scorer.prompts, scorer.masks[seed], temperature, seed)
                name = f"{model.label} seed={seed} T={temperature:g}"
                point = {"seed": seed, "temperature": temperature, **scorer.score(filled, name, seed),
                         **scorer.two_sample(model.generator, filled, temperature, seed)}
                entry["points"].append(point)
                if temperature == table_temperature and seed == first_seed:
                    fills[model.label] = filled
                with tracker.nested(
                    f"{model.label} T={temperature:g}" + (f" seed={seed}" if len(settings.seeds) > 1 else ""),
                    params={"checkpoint": str(model.path), "temperature": temperature, "seed": seed, "kind": model.kind,
                            "model": model.name},
                    tags={"maskgan.checkpoint": str(model.path), "maskgan.kind": model.kind, "maskgan.algo": model.algo,
                          "maskgan.training_run_id": model.training_run_id or ""},
                ):
                    tracker.log_metrics({"masked_perplexity": masked_ppl, **point}, step=0)
            results["checkpoints"].append(entry)
            log.info(f"[evaluate] {model.label}: masked perplexity {masked_ppl:.2f}")
        results["verdict"] = _verdict(results["checkpoints"], compared, settings, tracker)
        _write_outputs(out, results, scorer, fills, table_temperature)
        for path in sorted(out.glob("*.*")):
            if path.suffix in (".json", ".csv", ".md", ".png"):
                tracker.log_artifact(path, "evaluation")
                storage.upload(path, storage.join(destination, path.name))
    return results


def _compared_models(models: Sequence[_Model], settings: EvalSettings) -> list[str]:
    """The model names compared with the baseline at matched diversity, checked before any work starts."""
    names = list(dict.fromkeys(m.name for m in models))
    if settings.baseline not in names:
        if settings.baseline != BASELINE:
            raise ConfigError(f"--baseline {settings.baseline!r} names no model; the models are {', '.join(names)}")
        return []  # no MaskMLE checkpoint given: nothing to compare with
    compared = [name for name in names if name != settings.baseline]
    for name in compared:  # refuses unpairable checkpoint counts now, not after hours of scoring
        pair_checkpoints(*([m.label for m in models if m.name == n] for n in (name, settings.baseline)), name, settings.baseline)
    return compared


def _verdict(checkpoints: list[dict[str, Any]], compared: list[str], settings: EvalSettings, tracker: Tracker) -> dict[str, Any]:
    """Every compared model against the baseline at matched diversity: printed, logged on the parent run.
    On synthetic data also by oracle perplexity at matched diversity and oracle NLL at each temperature
    (the verdict's "oracle" entry)."""
    if not compared:
        return {}
    if settings.reverse_lm_steps == 0:
        log.warning("[evaluate] no verdict: matching diversity needs the reverse LM (--reverse-lm-steps > 0)")
        return {}
    baseline = [c["label"] for c in checkpoints if c["model"] == settings.baseline]
    print(f"[evaluate] verdict against {settings.baseline} ({', '.join(baseline)}), "
          f"eval-LM perplexity ratio at matched reverse-LM perplexity (< 1 = better):")
    on_oracle = all(ORACLE in p for c in checkpoints for p in c["points"])
    verdicts = {}
    for name in compared:
        verdict = matched_diversity_verdict(checkpoints, name, settings.baseline)
        verdicts[name] = verdict
        print(f"  {verdict_sentence(verdict)}")
        key = re.sub(r"[^A-Za-z0-9_./ -]+", "_", name)
        numbers = {
            "eval_lm_perplexity_ratio": verdict["ratio"],
            **dict(zip(("eval_lm_perplexity_ratio_low", "eval_lm_perplexity_ratio_high"), verdict.get("ratio_interval") or ())),
            "two_sample_accuracy": verdict.get("two_sample_accuracy"),
            "baseline_two_sample_accuracy": verdict.get("baseline_two_sample_accuracy"),
            "matched_points": verdict["matched_points"],
        }
        if on_oracle:
            matched = matched_diversity_verdict(checkpoints, name, settings.baseline, quality=ORACLE)
            by_temperature = same_temperature_verdict(checkpoints, name, settings.baseline, ORACLE)
            verdict["oracle"] = {"matched": matched, "by_temperature": by_temperature}
            print(f"  {verdict_sentence(matched)}\n  {same_temperature_sentence(by_temperature)}")
            numbers["oracle_perplexity_ratio"] = matched["ratio"]
            numbers.update({f"oracle_nll_difference/T{row['temperature']:g}": row["difference"] for row in by_temperature["temperatures"]})
        tracker.log_metrics({f"verdict/{key}/{k}": v for k, v in numbers.items() if v is not None}, step=0)
    return verdicts


def checkpoint_argument(text: str | Path) -> tuple[Optional[str], Location]:
    """`NAME:path.pt` -> (NAME, path); a plain path or storage URI (or a file that exists with a colon
    in it) -> (None, path)."""
    text = str(text)
    name, colon, path = text.partition(":")
    if not colon or storage.is_uri(text) or Path(text).is_file() or not name:
        return None, storage.location(text)
    return name, storage.location(path)


def _load_models(checkpoints: Sequence[str | Path], vocab: Vocab, device: torch.device) -> list[_Model]:
    models: list[_Model] = []
    for given_name, path in map(checkpoint_argument, checkpoints):
        generator, _, checkpoint = load_infiller(path, vocab, device)  # an LM checkpoint: the left-context baseline
        kind = str(checkpoint.get("kind", "generator"))
        algo = str(checkpoint["config"].get("gan", {}).get("algo", "")) if kind == "maskgan" else ""
        name = given_name or {"lm": "LM", "mle": BASELINE, "maskgan": f"MaskGAN-{algo}"}.get(kind, kind)
        label = f"{name} ({storage.name(_run_dir_of(path))})"
        if any(m.label == label for m in models):
            label = f"{label} {Path(storage.name(path)).stem}"
        if any(m.label == label for m in models):
            raise ConfigError(f"{path} is given twice as {name}: give each checkpoint once per model")
        models.append(_Model(label, name, path, kind, algo, generator, _training_run_id(path)))
    return models


def _run_dir_of(checkpoint: Location) -> Location:
    """`<run_dir>/checkpoints/x.pt` -> run_dir; a checkpoint elsewhere stands for its own folder."""
    folder = storage.parent(storage.absolute(checkpoint))
    return storage.parent(folder) if storage.name(folder) == "checkpoints" else folder


def _training_run_id(checkpoint: Location) -> Optional[str]:
    """The MLflow run that trained the checkpoint, to link evaluation runs to it in the UI."""
    for command in ("train", "pretrain"):
        path = storage.join(_run_dir_of(checkpoint), f"{RUN_ID_FILE}.{command}")
        if storage.exists(path):
            return storage.read_bytes(path).decode().strip()
    return None


def _sentences(windows: np.ndarray) -> list[list[int]]:
    """The targets w[1:] of each window, the text that metrics.py scores (w[0] is never generated)."""
    return np.asarray(windows)[:, 1:].tolist()


# ---------------------------------------------------------------- outputs


def _write_outputs(out: Path, results: dict[str, Any], scorer: _Scorer, fills: dict[str, np.ndarray], temperature: float) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    point_keys = list(dict.fromkeys(k for e in results["checkpoints"] for p in e["points"] for k in p if k not in ("seed", "temperature")))
    keys = ["masked_perplexity", *dict.fromkeys([*results["real"], *point_keys])]
    header = ["model", "evaluation seed", "temperature", *keys]
    rows = [["real data", "", "", *(results["real"].get(k, "") for k in keys)]]
    for entry in results["checkpoints"]:
        for point in entry["points"]:
            rows.append([entry["label"], point["seed"], point["temperature"], entry["masked_perplexity"], *(point.get(k, "") for k in keys[1:])])
    _write_table(out / "metrics", header, rows)
    if results["verdict"]:
        with open(out / "metrics.md", "a", encoding="utf-8") as f:
            f.write(_verdict_markdown(results["verdict"]))

    curves, real = _model_curves(results["checkpoints"]), results["real"]
    if scorer.settings.reverse_lm_steps > 0:
        plot_quality_diversity(curves, "eval_lm_perplexity", "reverse_lm_perplexity", out / "quality_diversity_lm.png", reference=real)
        if scorer.oracle is not None:  # the synthetic benchmark's exact quality against the same diversity
            plot_quality_diversity(curves, "oracle_nll", "reverse_lm_perplexity", out / "quality_diversity_oracle.png", reference=real)
    oracle = {name: v["oracle"]["by_temperature"]["temperatures"] for name, v in results["verdict"].items() if "oracle" in v}
    if oracle:
        baseline = next(iter(results["verdict"].values()))["baseline"]
        plot_differences(oracle, f"oracle NLL - {baseline}'s (nats per token)",
                         f"In-fills against {baseline}'s at the same temperature ({CONFIDENCE:.0%} CI)", out / "oracle_nll_difference.png")
    n = scorer.settings.bleu_order
    plot_quality_diversity(
        curves, f"self_bleu{n}", f"bleu{n}", out / "quality_diversity_bleu.png", x_better="low", y_better="high", reference=real
    )

    shown = range(min(scorer.settings.table_rows, len(scorer.prompts)))
    vocab, present = scorer.vocab, scorer.masks[scorer.settings.seeds[0]]
    header = ["masked input", "real text", *(f"{label} (T={temperature:g})" for label in fills)]
    rows = [
        [render(vocab, scorer.prompts[i], present[i], blank=True), " ".join(vocab.decode(scorer.prompts[i])),
         *(render(vocab, filled[i], present[i]) for filled in fills.values())]
        for i in shown
    ]
    _write_table(out / "samples", header, rows)


def _model_curves(checkpoints: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """One quality-diversity curve per model: at each temperature, the mean over its checkpoints and seeds."""
    curves = {}
    for name in dict.fromkeys(c["model"] for c in checkpoints):
        points = [p for c in checkpoints if c["model"] == name for p in c["points"]]
        curves[name] = [
            {key: float(np.mean([p[key] for p in points if p["temperature"] == temperature])) for key in points[0] if key != "seed"}
            for temperature in dict.fromkeys(p["temperature"] for p in points)
        ]
    return curves


def _verdict_markdown(verdicts: dict[str, dict[str, Any]]) -> str:
    """The verdict section of metrics.md: one row per compared model, then each model's sentence."""
    baseline = next(iter(verdicts.values()))["baseline"]

    def interval(values: Optional[list[float]]) -> str:
        return f"{values[0]:.3f}-{values[1]:.3f}" if values else ""

    header = ["model", "eval-LM perplexity ratio", "95% CI", "replicates", "matched points", "unmatched points",
              "two-sample accuracy", f"{baseline}'s at the same diversity"]
    rows = [
        [name, "" if v["ratio"] is None else v["ratio"], interval(v.get("ratio_interval")), f"{v['replicates']} {v['interval_over']}",
         v["matched_points"], v["unmatched_points"], v.get("two_sample_accuracy", ""), v.get("baseline_two_sample_accuracy", "")]
        for name, v in verdicts.items()
    ]
    sentences = "".join(f"- {_md_cell(verdict_sentence(v))}\n" for v in verdicts.values())
    text = (f"\n## Verdict: against {_md_cell(baseline)} at matched reverse-LM perplexity (ratio < 1 = better)\n\n"
            f"{_markdown_table(header, rows)}\n{sentences}")
    oracle = {name: v["oracle"] for name, v in verdicts.items() if "oracle" in v}
    if not oracle:
        return text
    temperatures = list(dict.fromkeys(row["temperature"] for o in oracle.values() for row in o["by_temperature"]["temperatures"]))

    def difference(o: dict[str, Any], temperature: float) -> str:
        row = next((r for r in o["by_temperature"]["temperatures"] if r["temperature"] == temperature), None)
        return "" if row is None else difference_text(row)

    header = ["model", "oracle perplexity ratio at matched diversity", "95% CI", *(f"oracle NLL difference at T={t:g} (95% CI)" for t in temperatures),
              "lower at every temperature"]
    rows = [
        [name, "" if o["matched"]["ratio"] is None else o["matched"]["ratio"], interval(o["matched"].get("ratio_interval")),
         *(difference(o, t) for t in temperatures), "yes" if o["by_temperature"]["lower_at_every_temperature"] else "no"]
        for name, o in oracle.items()
    ]
    sentences = "".join(f"- {_md_cell(verdict_sentence(o['matched']))}\n- {_md_cell(same_temperature_sentence(o['by_temperature']))}\n"
                        for o in oracle.values())
    return (f"{text}\n## Verdict on the oracle: against {_md_cell(baseline)}, at matched reverse-LM perplexity and at each "
            f"temperature (ratio < 1 and differences < 0 = better; differences in nats per masked token)\n\n{_markdown_table(header, rows)}\n{sentences}")


def render(vocab: Vocab, window: np.ndarray, present: np.ndarray, blank: bool = False) -> str:
    """A window as text: masked targets as `___` (blank=True) or as `[word]` (the in-filled words)."""
    words = vocab.decode(window)
    shown = [words[0]] + [w if p else ("___" if blank else f"[{w}]") for w, p in zip(words[1:], present)]
    return " ".join(shown)


def _write_table(stem: Path, header: list[str], rows: list[list[Any]]) -> None:
    """`stem`.csv (exact values) and `stem`.md (rounded, escaped for Markdown)."""
    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    stem.with_suffix(".md").write_text(_markdown_table(header, rows), encoding="utf-8")


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    # `_` would start emphasis, `<eos>` would vanish as an HTML tag, `|` would split the cell.
    return str(value).replace("_", r"\_").replace("<", "&lt;").replace("|", r"\|")


# ---------------------------------------------------------------- command line


def evaluate_command(args: argparse.Namespace) -> None:
    # (A URI may hold "=" in its query; an override never starts with a scheme.)
    checkpoints = [a for a in args.checkpoints if "=" not in a or storage.is_uri(a) or Path(a).is_file()]
    overrides = [a for a in args.checkpoints if a not in checkpoints]
    cfg = _config([checkpoint_argument(c)[1] for c in checkpoints], args.preset, overrides)
    settings = EvalSettings(
        temperatures=_numbers(args.temperatures, "--temperatures", float) if args.temperatures else TEMPERATURE_SWEEP,
        samples=args.samples, split=args.split, bleu_order=args.bleu_order, bleu_references=args.bleu_references,
        reverse_lm_steps=args.reverse_lm_steps, table_rows=args.table_rows, seeds=_numbers(args.seeds, "--seeds", int),
        two_sample_steps=args.two_sample_steps, baseline=args.baseline,
        baseline_temperatures=_numbers(args.baseline_temperatures, "--baseline-temperatures", float) if args.baseline_temperatures else (),
    )
    out = storage.location(args.out) if args.out else storage.join(cfg.run_dir, "eval")
    evaluate_checkpoints(checkpoints, cfg, settings, out)
    print((storage.local_dir(out) / "metrics.md").read_text())
    log.info(f"[evaluate] results, tables and plots in {out}")


def _config(checkpoints: list[Path], preset: Optional[str], overrides: list[str]) -> Config:
    """The data and mask to evaluate on: `--preset` if given, else the first checkpoint's config whose
    run_dir is the folder holding its checkpoints/ (so its prepared data is found); then overrides."""
    if preset or not checkpoints:
        return load_config(preset, overrides)
    path = checkpoints[0]
    stored = load_checkpoint(path, require=("config",))["config"]
    stored["run_dir"] = str(_run_dir_of(path))
    return config_from_dict(stored, overrides)


def _numbers(text: str, option: str, kind: type) -> list:
    try:
        return [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give comma-separated {kind.__name__}s, e.g. {'0.5,0.7,1.0' if kind is float else '0,1,2'}") from None
