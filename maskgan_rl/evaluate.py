"""`maskgan evaluate`: compare checkpoints on held-out data the way the paper and later work did.

For each checkpoint (MaskMLE, MaskGAN, ...) and each softmax temperature of a sweep, the same
held-out windows are masked the same way and filled in; the in-fills are then scored by:
- masked validation perplexity: teacher-forced, masked targets only (temperature-independent; the
  same masks as MaskMLE's reported validation perplexity, over the whole held-out split);
- eval-LM perplexity: the filled windows (all targets, so a blank that clashes with the text after
  it costs too) under a language model trained separately on the real training data with another
  seed, cached as `<out>/eval_lm.pt` (the paper's Table 5);
- reverse-LM perplexity: a small LM trained on the in-fills, scored on real held-out windows the
  in-fills never saw (low = the samples cover the real distribution; Caccia et al. 2018);
- % unique 2/3/4-grams (Table 6), the share of generated n-grams found in held-out text, BLEU-n
  against a fixed number of held-out references, Self-BLEU-n (metrics.py);
- on the synthetic preset, the exact oracle NLL of the in-filled tokens.
The held-out split is cut in two: the first part (at most half) are the prompts that get masked and
filled; the rest are the references (BLEU, n-gram overlap, reverse-LM scoring), so no score rewards
copying a prompt's own real tokens. A "real data" row scores the unmasked prompts the same way.

Outputs in `<out>` (default `<run_dir>/eval`): results.json, metrics.csv/.md, samples.csv/.md
(masked input, real text, then one column of in-fills per checkpoint), and the quality-diversity
plots quality_diversity_lm.png / quality_diversity_bleu.png (and, on the synthetic preset,
quality_diversity_oracle.png: oracle NLL against reverse-LM perplexity); all logged to MLflow, one nested run
per checkpoint and temperature so the UI can compare them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
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

from maskgan_rl.checkpoint import load_checkpoint, writable_dir
from maskgan_rl.config import Config, DataConfig, config_from_dict, load_config
from maskgan_rl.dataset import PreparedData, WindowDataset, prepare_data, write_windows
from maskgan_rl.errors import ConfigError, DataError
from maskgan_rl.loading import load_infiller, resolve_device
from maskgan_rl.masking import make_present, mask_context
from maskgan_rl.metrics import bleu, self_bleu, unique_ngram_fraction, validation_ngram_overlap
from maskgan_rl.models.discriminator import Discriminator, log_real_prob, right_counts
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.language_model import LanguageModel
from maskgan_rl.models.losses import masked_cross_entropy
from maskgan_rl.oracle import OracleLM
from maskgan_rl.plots import plot_quality_diversity
from maskgan_rl.pretrain import lm_loss, load_or_train, mle_loss, validation_perplexity
from maskgan_rl.tracking import RUN_ID_FILE, Tracker
from maskgan_rl.vocab import Vocab

NGRAM_ORDERS = (2, 3, 4)
EVAL_LM_SEED_OFFSET = 1  # the eval LM must not be the generator's own pretraining LM
_BATCH = 256  # rows per forward pass when sampling and scoring (memory, not results)
# What fills blanks: `logits(context, filled)` and `infill(windows, present, temperature, rng)`.
Infiller = Union[Generator, LanguageModel]


@dataclass
class EvalSettings:
    temperatures: Sequence[float] = (0.5, 0.7, 1.0, 1.3)
    samples: int = 1000  # prompts filled per checkpoint and temperature (at most half the held-out split)
    split: str = "valid"  # valid | test
    bleu_order: int = 4
    bleu_references: int = 500  # fixed, so BLEU is comparable across checkpoints and runs
    reverse_lm_steps: int = 200  # 0 skips the reverse LM
    table_rows: int = 20
    seed: int = 0  # masks and sampling: every checkpoint fills the same blanks


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
    label: str
    path: Path
    kind: str
    algo: str
    generator: Infiller
    training_run_id: Optional[str]


class _Scorer:
    """Everything shared by all checkpoints: prompts and their masks, references, eval LM, oracle."""

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
        self.present = make_present(n_prompts, cfg.data.seq_len, cfg.mask, np.random.default_rng(settings.seed))
        self.bleu_references = min(settings.bleu_references, len(self.references))
        self.self_bleu_references = min(settings.bleu_references, n_prompts - 1)
        self.held_out = held
        self.oracle = _oracle_for(cfg.data)
        self._tmp = tmp  # reverse LMs and their training samples: thrown away after the evaluation
        # Reverse LMs would all log the same metric names at the same steps: their curves are not tracked.
        self._untracked = Tracker(dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False)), "evaluate")
        # Scored by every reverse LM: real held-out windows the prompts do not include.
        self._reference_set = self._window_file("references", self.references)
        self.eval_lm, self.eval_lm_perplexity = self._train_lm(
            "eval_lm", out / "eval_lm.pt", WindowDataset(data.train_path), held, cfg.pretrain.lm_steps,
            dataclasses.replace(cfg, seed=cfg.seed + EVAL_LM_SEED_OFFSET), tracker,
        )

    def score(self, windows: np.ndarray, name: str) -> dict[str, float]:
        """Every sample metric of filled (or real) windows [N, T+1] of the prompts."""
        s, sentences, references = self.settings, _sentences(windows), self._reference_sentences
        metrics = ngram_metrics(windows)
        metrics["validation_overlap"] = validation_ngram_overlap(sentences, references, ns=[n for n in NGRAM_ORDERS if n <= windows.shape[1] - 1])
        metrics[f"bleu{s.bleu_order}"] = bleu(sentences, references, s.bleu_order, num_references=self.bleu_references, seed=s.seed)
        metrics[f"self_bleu{s.bleu_order}"] = self_bleu(sentences, s.bleu_order, num_references=self.self_bleu_references, seed=s.seed)
        metrics["eval_lm_perplexity"] = lm_perplexity(self.eval_lm, windows)
        if s.reverse_lm_steps > 0:
            metrics["reverse_lm_perplexity"] = self.reverse_lm_perplexity(windows, name)
        if self.oracle is not None:
            metrics["oracle_nll"] = oracle_nll(self.oracle, windows, self.present)
        return metrics

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
    """Evaluate checkpoints on `cfg`'s data; writes results into `out` and MLflow; returns the results."""
    if not checkpoints:
        raise ConfigError("no checkpoint to evaluate: pass one or more .pt files")
    if not settings.temperatures or min(settings.temperatures) <= 0:
        raise ConfigError(f"temperatures {list(settings.temperatures)} must be a non-empty list of values > 0")
    if settings.samples < 2:
        raise ConfigError(f"--samples {settings.samples}: give at least 2 (BLEU scores in-fills against each other)")
    out = writable_dir(out, "--out")
    data = prepare_data(cfg)
    models = _load_models(checkpoints, data.vocab, resolve_device(cfg))
    with Tracker(cfg, "evaluate", reopen="never") as tracker, tempfile.TemporaryDirectory() as tmp:
        tracker.log_params({f"eval.{k}": v for k, v in dataclasses.asdict(settings).items()})
        scorer = _Scorer(cfg, data, settings, out, Path(tmp), tracker)
        results: dict[str, Any] = {
            "split": settings.split, "prompts": len(scorer.prompts), "references": len(scorer.references),
            "bleu_references": scorer.bleu_references, "self_bleu_references": scorer.self_bleu_references,
            "temperatures": list(settings.temperatures), "mask": dataclasses.asdict(cfg.mask), "seed": settings.seed,
            "eval_lm": {"path": str(out / "eval_lm.pt"), "valid_perplexity": scorer.eval_lm_perplexity},
            "real": scorer.score(scorer.prompts, "real"),
            "checkpoints": [],
        }
        fills: dict[str, np.ndarray] = {}  # label -> in-fills at the table's temperature
        table_temperature = min(settings.temperatures, key=lambda t: abs(t - 1.0))
        for model in models:
            masked_ppl = masked_perplexity(model.generator, scorer.held_out, cfg)
            entry = {"label": model.label, "path": str(model.path), "kind": model.kind, "algo": model.algo,
                     "masked_perplexity": masked_ppl, "points": []}
            for temperature in settings.temperatures:
                filled = fill_windows(model.generator, scorer.prompts, scorer.present, temperature, settings.seed)
                point = {"temperature": temperature, **scorer.score(filled, f"{model.label} T={temperature:g}")}
                entry["points"].append(point)
                if temperature == table_temperature:
                    fills[model.label] = filled
                with tracker.nested(
                    f"{model.label} T={temperature:g}",
                    params={"checkpoint": str(model.path), "temperature": temperature, "kind": model.kind},
                    tags={"maskgan.checkpoint": str(model.path), "maskgan.kind": model.kind, "maskgan.algo": model.algo,
                          "maskgan.training_run_id": model.training_run_id or ""},
                ):
                    tracker.log_metrics({"masked_perplexity": masked_ppl, **point}, step=0)
            results["checkpoints"].append(entry)
            print(f"[evaluate] {model.label}: masked perplexity {masked_ppl:.2f}")
        _write_outputs(out, results, scorer, fills, table_temperature)
        for path in sorted(out.glob("*.*")):
            if path.suffix in (".json", ".csv", ".md", ".png"):
                tracker.log_artifact(path, "evaluation")
    return results


def _load_models(checkpoints: Sequence[str | Path], vocab: Vocab, device: torch.device) -> list[_Model]:
    models: list[_Model] = []
    for path in map(Path, checkpoints):
        generator, _, checkpoint = load_infiller(path, vocab, device)  # an LM checkpoint: the left-context baseline
        kind = str(checkpoint.get("kind", "generator"))
        algo = str(checkpoint["config"].get("gan", {}).get("algo", "")) if kind == "maskgan" else ""
        name = {"lm": "LM", "mle": "MaskMLE", "maskgan": f"MaskGAN-{algo}"}.get(kind, kind)
        label = f"{name} ({_run_dir_of(path).name})"
        if any(m.label == label for m in models):
            label = f"{label} {path.stem}"
        models.append(_Model(label, path, kind, algo, generator, _training_run_id(path)))
    return models


def _run_dir_of(checkpoint: Path) -> Path:
    """`<run_dir>/checkpoints/x.pt` -> run_dir; a checkpoint elsewhere stands for its own folder."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _training_run_id(checkpoint: Path) -> Optional[str]:
    """The MLflow run that trained the checkpoint, to link evaluation runs to it in the UI."""
    for command in ("train", "pretrain"):
        path = _run_dir_of(checkpoint) / f"{RUN_ID_FILE}.{command}"
        if path.is_file():
            return path.read_text().strip()
    return None


def _sentences(windows: np.ndarray) -> list[list[int]]:
    """The targets w[1:] of each window, the text that metrics.py scores (w[0] is never generated)."""
    return np.asarray(windows)[:, 1:].tolist()


# ---------------------------------------------------------------- outputs


def _write_outputs(out: Path, results: dict[str, Any], scorer: _Scorer, fills: dict[str, np.ndarray], temperature: float) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    keys = ["masked_perplexity", *results["real"]]
    header = ["model", "temperature", *keys]
    rows = [["real data", "", *(results["real"].get(k, "") for k in keys)]]
    for entry in results["checkpoints"]:
        for point in entry["points"]:
            rows.append([entry["label"], point["temperature"], entry["masked_perplexity"], *(point.get(k, "") for k in keys[1:])])
    _write_table(out / "metrics", header, rows)

    curves = {e["label"]: e["points"] for e in results["checkpoints"]}
    if scorer.settings.reverse_lm_steps > 0:
        plot_quality_diversity(curves, "eval_lm_perplexity", "reverse_lm_perplexity", out / "quality_diversity_lm.png")
        if scorer.oracle is not None:  # the synthetic benchmark's exact quality against the same diversity
            plot_quality_diversity(curves, "oracle_nll", "reverse_lm_perplexity", out / "quality_diversity_oracle.png")
    n = scorer.settings.bleu_order
    plot_quality_diversity(curves, f"self_bleu{n}", f"bleu{n}", out / "quality_diversity_bleu.png", x_better="low", y_better="high")

    shown = range(min(scorer.settings.table_rows, len(scorer.prompts)))
    vocab = scorer.vocab
    header = ["masked input", "real text", *(f"{label} (T={temperature:g})" for label in fills)]
    rows = [
        [render(vocab, scorer.prompts[i], scorer.present[i], blank=True), " ".join(vocab.decode(scorer.prompts[i])),
         *(render(vocab, filled[i], scorer.present[i]) for filled in fills.values())]
        for i in shown
    ]
    _write_table(out / "samples", header, rows)


def render(vocab: Vocab, window: np.ndarray, present: np.ndarray, blank: bool = False) -> str:
    """A window as text: masked targets as `___` (blank=True) or as `[word]` (the in-filled words)."""
    words = vocab.decode(window)
    shown = [words[0]] + [w if p else ("___" if blank else f"[{w}]") for w, p in zip(words[1:], present)]
    return " ".join(shown)


def _write_table(stem: Path, header: list[str], rows: list[list[Any]]) -> None:
    """`stem`.csv (exact values) and `stem`.md (rounded, escaped for Markdown)."""
    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    # `_` would start emphasis, `<eos>` would vanish as an HTML tag, `|` would split the cell.
    return str(value).replace("_", r"\_").replace("<", "&lt;").replace("|", r"\|")


# ---------------------------------------------------------------- command line


def evaluate_command(args: argparse.Namespace) -> None:
    checkpoints = [a for a in args.checkpoints if "=" not in a or Path(a).is_file()]
    overrides = [a for a in args.checkpoints if a not in checkpoints]
    cfg = _config(checkpoints, args.preset, overrides)
    settings = EvalSettings(
        temperatures=_temperatures(args.temperatures), samples=args.samples, split=args.split, bleu_order=args.bleu_order,
        bleu_references=args.bleu_references, reverse_lm_steps=args.reverse_lm_steps, table_rows=args.table_rows, seed=args.seed,
    )
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "eval"
    evaluate_checkpoints(checkpoints, cfg, settings, out)
    print((out / "metrics.md").read_text())
    print(f"[evaluate] results, tables and plots in {out}")


def _config(checkpoints: list[str], preset: Optional[str], overrides: list[str]) -> Config:
    """The data and mask to evaluate on: `--preset` if given, else the first checkpoint's config whose
    run_dir is the folder holding its checkpoints/ (so its prepared data is found); then overrides."""
    if preset or not checkpoints:
        return load_config(preset, overrides)
    path = Path(checkpoints[0])
    stored = load_checkpoint(path, require=("config",))["config"]
    stored["run_dir"] = str(_run_dir_of(path))
    return config_from_dict(stored, overrides)


def _temperatures(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--temperatures {text!r}: give comma-separated numbers, e.g. 0.5,0.7,1.0,1.3") from None
