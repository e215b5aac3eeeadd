"""The verdict of `maskgan evaluate`: do a model's in-fills beat temperature-tuned MaskMLE's?

Lowering a model's softmax temperature buys quality (eval-LM perplexity) for diversity (reverse-LM
perplexity), so a single temperature proves nothing (Caccia et al. 2020): a model wins only where
its quality-diversity curve lies beyond the baseline's. Two measurements, both at matched diversity:

- the matched-diversity ratio: a model's eval-LM perplexity divided by the baseline's at the same
  reverse-LM perplexity. The baseline's temperature curve is a polyline in (log reverse-LM perplexity,
  log eval-LM perplexity), its points joined in temperature order. Where it folds back (hotter samples
  that are less diverse again), several of its segments reach the same diversity and the best of them
  counts: what temperature-tuned MaskMLE achieves there. Points outside the curve's reverse-LM range are
  not extrapolated: they are reported as unmatched. Below 1.0 = better than MaskMLE at the same diversity. One number per replicate (the geometric mean over its
  matched points), then a Student-t interval over replicates. On the synthetic oracle the same ratio
  is also taken of the exact quality, the oracle's perplexity of the in-fills (exp of their oracle NLL);
- a two-sample test: a Discriminator trained from scratch (same seed and budget for every model and
  temperature) on training windows against the model's in-fills of them, then scored on held-out
  windows, real against in-filled; accuracy 0.5 = the in-fills cannot be told from real text.
  Its interval is a bootstrap over held-out windows (tokens of one window are not independent).

On the synthetic oracle, also the comparison its target names: the oracle NLL minus the baseline's at
each temperature, paired by training seed, with a Student-t interval per temperature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from scipy import stats

from maskgan_rl.config import Config
from maskgan_rl.errors import ConfigError
from maskgan_rl.masking import mask_context
from maskgan_rl.models.discriminator import Discriminator, discriminator_loss
from maskgan_rl.models.optim import adam

DIVERSITY = "reverse_lm_perplexity"  # lower = the samples cover more of the real distribution
QUALITY = "eval_lm_perplexity"  # lower = the in-fills read more like real text
ORACLE = "oracle_nll"  # synthetic data: the exact quality, nats per masked token (lower = better)
# Each quality metric a verdict can match, as a log perplexity and back: interpolation and ratios are
# in log perplexity, so a ratio is always one of perplexities.
LOG_PERPLEXITY = {QUALITY: (math.log, math.exp), ORACLE: (float, float)}  # oracle NLL: a log perplexity already
QUALITY_NAMES = {QUALITY: "eval-LM perplexity", ORACLE: "oracle perplexity"}
METRIC_NAMES = {ORACLE: "oracle NLL"}  # same_temperature_verdict's metrics, in sentences
TWO_SAMPLE = "two_sample_accuracy"
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
_BATCH = 256  # rows per forward pass when scoring (memory, not results)


# ---------------------------------------------------------------- two-sample test


@dataclass
class InFills:
    """Real windows [N, T+1], their masks present [N, T] and a model's in-fills of them [N, T+1]."""

    windows: np.ndarray
    present: np.ndarray
    filled: np.ndarray


def two_sample_test(
    train: InFills, held_out: InFills, vocab_size: int, cfg: Config, steps: int, seed: int,
    device: torch.device = torch.device("cpu"),
) -> dict[str, float]:
    """Train a fresh Discriminator (cfg.model's size) for `steps` Adam steps of gan.disc_batch_size
    windows of `train`, real against filled; score it on `held_out`'s masked targets.

    Returns two_sample_accuracy (real called real and filled called filled, over masked targets), its
    bootstrap interval two_sample_accuracy_low/_high, and two_sample_auc (the chance that a real token
    gets a higher logit than a filled one: threshold-free). A fresh D, not the GAN's own: that one was
    trained against one generator, and the test must treat every model alike.
    """
    torch.manual_seed(seed)
    disc = Discriminator(vocab_size, cfg.model).to(device)
    optimizer = adam(disc.parameters(), lr=cfg.pretrain.lr)  # from scratch, as the LMs are
    rng = np.random.default_rng(seed)
    disc.train()
    for _ in range(steps):
        rows = rng.choice(len(train.windows), size=min(cfg.gan.disc_batch_size, len(train.windows)), replace=False)
        window, filled, present = (torch.as_tensor(a[rows], device=device) for a in (train.windows, train.filled, train.present))
        context = mask_context(window, present, disc.missing_id)
        loss = discriminator_loss(*disc.real_and_fake_logits(context, window, filled), present)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.pretrain.grad_clip)
        optimizer.step()
    real, fake = _held_out_logits(disc.eval(), held_out, device)
    return two_sample_scores(real, fake, ~held_out.present, seed)


@torch.no_grad()
def _held_out_logits(disc: Discriminator, data: InFills, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """D's logits [N, T] for the real windows and for the in-fills."""
    real, fake = [], []
    for i in range(0, len(data.windows), _BATCH):
        window, filled, present = (torch.as_tensor(a[i : i + _BATCH], device=device) for a in (data.windows, data.filled, data.present))
        context = mask_context(window, present, disc.missing_id)
        real.append(disc(context, window).cpu())
        fake.append(disc(context, filled).cpu())
    return torch.cat(real).numpy(), torch.cat(fake).numpy()


def two_sample_scores(real_logits: np.ndarray, fake_logits: np.ndarray, masked: np.ndarray, seed: int) -> dict[str, float]:
    """Accuracy (logit > 0 = real), its bootstrap interval over windows, and AUC, over `masked` targets [N, T]."""
    right = ((real_logits > 0) & masked).sum(axis=1) + ((fake_logits <= 0) & masked).sum(axis=1)
    counted = 2 * masked.sum(axis=1)
    resampled = np.random.default_rng(seed).integers(len(right), size=(BOOTSTRAP_RESAMPLES, len(right)))
    accuracies = right[resampled].sum(axis=1) / np.maximum(counted[resampled].sum(axis=1), 1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(accuracies, [tail, 1 - tail])
    return {
        TWO_SAMPLE: float(right.sum() / max(counted.sum(), 1)),
        f"{TWO_SAMPLE}_low": float(low),
        f"{TWO_SAMPLE}_high": float(high),
        "two_sample_auc": auc(real_logits[masked], fake_logits[masked]),
    }


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive score > a negative one) + P(tie) / 2 (the Mann-Whitney statistic, scaled to [0, 1])."""
    ordered = np.sort(negative)
    below = np.searchsorted(ordered, positive, side="left")
    not_above = np.searchsorted(ordered, positive, side="right")
    return float((below + not_above).sum() / 2 / max(len(positive) * len(negative), 1))


# ---------------------------------------------------------------- matched diversity


def at_matched_diversity(
    curve: Sequence[Mapping[str, float]], diversity: float, quality: str = QUALITY
) -> Optional[dict[str, float]]:
    """The baseline `curve` (points with "temperature") at reverse-LM perplexity `diversity`, on the
    segment that reaches it with the lowest `quality`: "log_quality" (its log perplexity, interpolated
    linearly in log diversity) and, where the points have it, the two-sample accuracy (linear in log
    diversity); None outside the curve's reverse-LM range (no extrapolation)."""
    log_of = LOG_PERPLEXITY[quality][0]
    ordered = sorted(curve, key=lambda p: p["temperature"])
    at = np.log(diversity)
    best: Optional[dict[str, float]] = None
    for a, b in zip(ordered, ordered[1:] or ordered):  # a one-point curve is its one point
        log_a, log_b = np.log(a[DIVERSITY]), np.log(b[DIVERSITY])
        if not min(log_a, log_b) <= at <= max(log_a, log_b):
            continue
        w = 0.0 if log_a == log_b else float((at - log_a) / (log_b - log_a))
        # (1 - w) * a + w * b is exactly a's value at w = 0 and b's at w = 1: a curve point matches itself.
        log_quality = float((1 - w) * log_of(a[quality]) + w * log_of(b[quality]))
        if best is None or log_quality < best["log_quality"]:
            best = {"log_quality": log_quality}
            if TWO_SAMPLE in a and TWO_SAMPLE in b:
                best[TWO_SAMPLE] = (1 - w) * a[TWO_SAMPLE] + w * b[TWO_SAMPLE]
    return best


def diversity_range(curve: Sequence[Mapping[str, float]]) -> tuple[float, float]:
    """(lowest, highest) reverse-LM perplexity of a curve: where `at_matched_diversity` answers."""
    return min(p[DIVERSITY] for p in curve), max(p[DIVERSITY] for p in curve)


def matched_points(
    model: Sequence[Mapping[str, float]], baseline: Sequence[Mapping[str, float]], quality: str = QUALITY
) -> list[dict[str, Any]]:
    """Each model point next to the baseline at its reverse-LM perplexity: the baseline's `quality`
    there, the ratio of perplexities (None where unmatched) and, where both have them, two-sample accuracies."""
    log_of, back = LOG_PERPLEXITY[quality]
    rows = []
    for point in model:
        base = at_matched_diversity(baseline, point[DIVERSITY], quality)
        row = {
            "temperature": point["temperature"], DIVERSITY: point[DIVERSITY], quality: point[quality],
            f"baseline_{quality}": None if base is None else back(base["log_quality"]),
            # In log space, so that a point equal to a baseline point gives exactly 1.
            "ratio": None if base is None else float(np.exp(log_of(point[quality]) - base["log_quality"])),
        }
        if TWO_SAMPLE in point and all(TWO_SAMPLE in p for p in baseline):
            row[TWO_SAMPLE] = point[TWO_SAMPLE]
            row[f"baseline_{TWO_SAMPLE}"] = None if base is None else base[TWO_SAMPLE]
        rows.append(row)
    return rows


def t_interval(values: Sequence[float]) -> tuple[float, Optional[float], Optional[float]]:
    """(mean, low, high): the Student-t CONFIDENCE interval of the mean; no interval from one value."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def pair_checkpoints(model: Sequence[str], baseline: Sequence[str], model_name: str, baseline_name: str) -> list[tuple[str, str]]:
    """(model checkpoint, baseline checkpoint) pairs: i-th with i-th (the same training seed) when both
    have as many, else each checkpoint of the side that has several with the other side's single one."""
    if len(model) == len(baseline):
        return list(zip(model, baseline))
    if len(baseline) == 1 or len(model) == 1:
        return [(m, b) for m in model for b in baseline]
    raise ConfigError(
        f"{len(model)} {model_name} checkpoints against {len(baseline)} of {baseline_name}: pass as many of each "
        f"(paired in the order given, i-th with i-th), or a single checkpoint on one side"
    )


def matched_diversity_verdict(
    checkpoints: Sequence[Mapping[str, Any]], model: str, baseline: str, quality: str = QUALITY
) -> dict[str, Any]:
    """`model`'s `quality` (as a perplexity) relative to `baseline`'s at matched reverse-LM perplexity.

    `checkpoints`: evaluate's per-checkpoint entries ("label", "model" = model name, "points" with
    "seed", "temperature", the perplexities and maybe two-sample accuracies). A replicate is one
    checkpoint pair at one evaluation seed; with several checkpoint pairs (training seeds), each pair's
    evaluation seeds are averaged first and the interval is over pairs, else over evaluation seeds.
    """
    pairs, by_label = _checkpoint_pairs(checkpoints, model, baseline)
    rows: list[dict[str, Any]] = []
    per_pair: list[list[dict[str, float]]] = []  # per pair, per seed: mean log ratio, mean accuracy difference
    for model_label, baseline_label in pairs:
        per_seed = []
        for seed in sorted({p["seed"] for p in by_label[model_label]["points"]}):
            at_seed = [
                [p for p in by_label[label]["points"] if p["seed"] == seed] for label in (model_label, baseline_label)
            ]
            matched = [
                {"checkpoint": model_label, "baseline_checkpoint": baseline_label, "seed": seed, **row}
                for row in matched_points(*at_seed, quality)
            ]
            rows += matched
            found = [row for row in matched if row["ratio"] is not None]
            if found:
                per_seed.append(_replicate(found))
        per_pair.append(per_seed)
    replicates = _replicates(per_pair)
    found = [row for row in rows if row["ratio"] is not None]
    verdict: dict[str, Any] = {
        "model": model, "baseline": baseline, "quality": quality, "pairs": [list(p) for p in pairs],
        "interval_over": _interval_over(pairs),
        "replicates": len(replicates), "matched_points": len(found), "unmatched_points": len(rows) - len(found),
        "baseline_range": _baseline_range(rows, by_label),
        "points": rows,
    }
    if not replicates:
        verdict["ratio"] = None
        return verdict
    log_ratio, low, high = t_interval([r["log_ratio"] for r in replicates])
    verdict["ratio"] = math.exp(log_ratio)
    verdict["ratio_interval"] = None if low is None else [math.exp(low), math.exp(high)]
    if all("accuracy_difference" in r for r in replicates):
        difference, low, high = t_interval([r["accuracy_difference"] for r in replicates])
        verdict[TWO_SAMPLE] = float(np.mean([row[TWO_SAMPLE] for row in found]))
        verdict[f"baseline_{TWO_SAMPLE}"] = float(np.mean([row[f"baseline_{TWO_SAMPLE}"] for row in found]))
        verdict[f"{TWO_SAMPLE}_difference"] = difference
        verdict[f"{TWO_SAMPLE}_difference_interval"] = None if low is None else [low, high]
    return verdict


def same_temperature_verdict(
    checkpoints: Sequence[Mapping[str, Any]], model: str, baseline: str, metric: str = ORACLE
) -> dict[str, Any]:
    """`model`'s `metric` minus `baseline`'s at each temperature both were sampled at, paired by
    checkpoint pair (training seed) and evaluation seed: per temperature the mean difference and a
    Student-t interval over pairs (their evaluation seeds averaged), or over evaluation seeds with one
    pair. "lower_at_every_temperature": every interval lies below 0. Not a fair judge on its own (a
    colder model wins it, see the module docstring); the synthetic target names it."""
    pairs, by_label = _checkpoint_pairs(checkpoints, model, baseline)
    # {label: {(seed, temperature): metric}}
    values = {label: {(p["seed"], p["temperature"]): p[metric] for p in by_label[label]["points"]} for pair in pairs for label in pair}
    temperatures = sorted({t for m, _ in pairs for _, t in values[m]} & {t for _, b in pairs for _, t in values[b]})
    rows = []
    for temperature in temperatures:
        per_pair = [
            [{"difference": values[m][key] - values[b][key]}
             for key in sorted(k for k in values[m] if k[1] == temperature) if key in values[b]]
            for m, b in pairs
        ]
        replicates = _replicates(per_pair)
        if not replicates:
            continue
        difference, low, high = t_interval([r["difference"] for r in replicates])
        rows.append({"temperature": temperature, "difference": difference,
                     "interval": None if low is None else [low, high], "replicates": len(replicates)})
    return {
        "model": model, "baseline": baseline, "metric": metric, "interval_over": _interval_over(pairs), "temperatures": rows,
        "lower_at_every_temperature": bool(rows) and all(r["interval"] is not None and r["interval"][1] < 0 for r in rows),
    }


def _checkpoint_pairs(
    checkpoints: Sequence[Mapping[str, Any]], model: str, baseline: str
) -> tuple[list[tuple[str, str]], dict[str, Mapping[str, Any]]]:
    """(the (model, baseline) checkpoint label pairs, the checkpoints by label)."""
    labels = {name: [c["label"] for c in checkpoints if c["model"] == name] for name in (model, baseline)}
    return pair_checkpoints(labels[model], labels[baseline], model, baseline), {c["label"]: c for c in checkpoints}


def _replicates(per_pair: Sequence[Sequence[Mapping[str, float]]]) -> list[dict[str, float]]:
    """The replicates of a verdict from per pair, per evaluation seed numbers: with several checkpoint
    pairs one per pair (its seeds averaged), with one pair one per evaluation seed."""
    if len(per_pair) == 1:
        return [dict(seed) for seed in per_pair[0]]
    return [{k: float(np.mean([s[k] for s in seeds])) for k in seeds[0]} for seeds in per_pair if seeds]


def _interval_over(pairs: Sequence[tuple[str, str]]) -> str:
    return "checkpoint pairs (training seeds)" if len(pairs) > 1 else "evaluation seeds"


def _replicate(found: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One replicate's numbers over its matched points: mean log ratio and mean accuracy difference."""
    replicate = {"log_ratio": float(np.mean([math.log(row["ratio"]) for row in found]))}
    if all(TWO_SAMPLE in row for row in found):
        replicate["accuracy_difference"] = float(np.mean([row[TWO_SAMPLE] - row[f"baseline_{TWO_SAMPLE}"] for row in found]))
    return replicate


def _baseline_range(rows: Sequence[Mapping[str, Any]], by_label: Mapping[str, Mapping[str, Any]]) -> list[float]:
    """[lowest, highest] reverse-LM perplexity over the baseline curves the rows were matched against."""
    ends = [
        end
        for label, seed in {(row["baseline_checkpoint"], row["seed"]) for row in rows}
        for end in diversity_range([p for p in by_label[label]["points"] if p["seed"] == seed])
    ]
    return [min(ends), max(ends)]


def verdict_sentence(verdict: Mapping[str, Any]) -> str:
    """One line: the ratio, its interval, how many points matched, and the two-sample accuracies."""
    model, baseline = verdict["model"], verdict["baseline"]
    low, high = verdict["baseline_range"]
    if verdict["ratio"] is None:
        return (f"{model}: no point within {baseline}'s reverse-LM perplexity range {low:.4g}-{high:.4g} "
                "(not extrapolated): no matched-diversity ratio")
    interval = verdict.get("ratio_interval")
    spread = (f"{CONFIDENCE:.0%} CI {interval[0]:.3f}-{interval[1]:.3f} over {verdict['replicates']} {verdict['interval_over']}"
              if interval else "one replicate, no interval: give --seeds 0,1,2 or several checkpoints per model")
    # Without an interval nothing is judged: one replicate's 1.0004 is noise, not "worse".
    word = "not judged" if not interval else "better" if interval[1] < 1 else "worse" if interval[0] > 1 else "not distinguishable"
    text = (f"{model}: {QUALITY_NAMES[verdict['quality']]} {verdict['ratio']:.3f}x {baseline}'s at matched reverse-LM perplexity "
            f"({spread}; {word}); {verdict['matched_points']} points matched, {verdict['unmatched_points']} outside "
            f"{baseline}'s range {low:.4g}-{high:.4g} (not extrapolated)")
    if TWO_SAMPLE in verdict:
        text += (f"; held-out D accuracy {verdict[TWO_SAMPLE]:.3f} vs {baseline}'s {verdict[f'baseline_{TWO_SAMPLE}']:.3f} "
                 "at the same diversity (0.5 = indistinguishable from real text)")
    return text


def difference_text(row: Mapping[str, Any]) -> str:
    """A same-temperature row's difference with its interval where it has one: "+0.045 (-0.200 to +0.289)"."""
    interval = row["interval"]
    return f"{row['difference']:+.3f}" + (f" ({interval[0]:+.3f} to {interval[1]:+.3f})" if interval else "")


def same_temperature_sentence(verdict: Mapping[str, Any]) -> str:
    """One line: per temperature the difference and its interval, then whether it is lower at every one."""
    def at(row: Mapping[str, Any]) -> str:
        return f"T={row['temperature']:g} {difference_text(row)}" + ("" if row["interval"] else " (one replicate)")

    rows = verdict["temperatures"]
    return (f"{verdict['model']}: {METRIC_NAMES.get(verdict['metric'], verdict['metric'])} minus {verdict['baseline']}'s at the same temperature, "
            f"{CONFIDENCE:.0%} CI over {rows[0]['replicates'] if rows else 0} {verdict['interval_over']}: "
            f"{', '.join(at(row) for row in rows) or 'no shared temperature'}; "
            f"lower at every temperature: {'yes' if verdict['lower_at_every_temperature'] else 'no'}")
