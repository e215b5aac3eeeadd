"""Is it the reward or the update? MaskGAN's generator update under two rewards, on the synthetic oracle.

From one MaskMLE checkpoint, the single-process reference loop `maskgan_rl.rl.reference.ReferenceLoop`
(the RL loop's networks, losses and D trainer, no Ray) trains the generator with REINFORCE and the critic baseline, rewarded by
- `d`: log D, the discriminator's reward, as `maskgan train` does;
- `oracle`: the oracle LM's own log-probability of each generated token, a perfect reward for quality;
- `noise`: log sigmoid of random logits, a reward that carries no information: the null control;
- `optimal`: log D of the Bayes-optimal discriminator between oracle data and the current generator,
  logit = log p_oracle(token) - log p_G(token): MaskGAN's reward with a D that knows the data exactly,
  the most any learned D could give;
- `d_prob`: D's probability that the token is real, SeqGAN's positive reward (use with `--baselines none`);
- `constant`: 0.5 for every token: the null control of that positive form;
- `ratio`: log D with logit = log q(token) - log p_G(token), q another MaskMLE checkpoint (`--ratio-model`,
  e.g. a larger one trained on the same corpus): the optimal D's form with q in place of the oracle, what a
  D that knew the data exactly as well as q would say.
`--baselines critic` (MaskGAN) subtracts the critic's value; `none` (SeqGAN) uses the returns as they are.
With the oracle and optimal rewards the oracle NLL of in-fills must fall (else the update is broken); with noise
it wanders, and how far in either direction is what any single run of log D must be judged against;
with log D it falls only as far as D's reward points at quality, which `reward_oracle_corr` (the
correlation of log D with the oracle's log-probability over generated tokens),
`disc_heldout_accuracy` and, against the optimal D's own accuracy, `disc_optimal_corr` (D's logit
against the optimal D's, over generated tokens) show. `--iterations 0` measures D alone: after
gan.disc_pretrain_steps, how much of what could be known it has learned.
Every `--eval-every` iterations: `evaluate_during_training` on the validation windows (seeded).

    python benchmarks/reward_check.py --preset synthetic-gan run_dir=runs/synthetic-gan
    python benchmarks/reward_check.py --rewards oracle d --warmups 0 100 --iterations 120 ...
    python benchmarks/reward_check.py --plot a.json b.json --out both     # one figure of earlier reports

Needs `<run_dir>/checkpoints/mle.pt` (run `maskgan pretrain` first). Writes <out>.json, <out>.md and
<out>.png, the oracle NLL curves (default benchmarks/results/reward_check.*).
"""

from __future__ import annotations

import maskgan_rl  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from matplotlib.figure import Figure

from maskgan_rl.cli import log_to_stderr
from maskgan_rl.config import Config, load_config
from maskgan_rl.dataset import PreparedData, WindowDataset, prepare_data
from maskgan_rl.errors import ConfigError
from maskgan_rl.evaluate import evaluate_during_training, synthetic_oracle
from maskgan_rl.loading import load_generator
from maskgan_rl.models.discriminator import log_real_prob
from maskgan_rl.models.generator import Generator
from maskgan_rl.plots import new_figure, save_figure
from maskgan_rl.rl.adversarial import update_moving_average
from maskgan_rl.rl.reference import ReferenceLoop

REWARDS = ("d", "oracle", "noise", "optimal", "d_prob", "constant", "ratio")
BASELINES = ("critic", "none")


def reward_check(
    cfg: Config,
    data: PreparedData,
    generator_state: dict[str, torch.Tensor],
    reward: str,
    warmup: int,
    iterations: int,
    eval_every: int,
    baseline: str = "critic",
    ratio_model: Optional[Generator] = None,
    evaluate_average: bool = False,
) -> list[dict[str, Any]]:
    """One run: D pretrained as configured, `warmup` critic-only iterations, then `iterations` updates.
    Returns one row of evaluation metrics per evaluation, iteration 0 (the MaskMLE start) first.
    `evaluate_average`: evaluate the moving average of the generator's weights (gan.generator_ema), the
    generator `maskgan train` evaluates and ships, instead of the generator being trained."""
    torch.manual_seed(cfg.seed)
    d = cfg.data
    oracle = synthetic_oracle(d.oracle_vocab, d.oracle_hidden, d.oracle_seed)

    noise = torch.Generator().manual_seed(cfg.seed)
    everywhere = lambda filled: torch.ones(filled[:, 1:].shape, dtype=torch.bool)  # noqa: E731
    rewards = {
        "d": None,  # ReferenceLoop's default: log D
        "oracle": lambda context, filled: oracle.token_log_probs(filled),
        "noise": lambda context, filled: log_real_prob(0.3 * torch.randn(filled[:, 1:].shape, generator=noise)),
        # `loop` is bound below, before the first call: the optimal D compares with the generator as it is
        # now, at every target (rewards at present targets are not used).
        "optimal": lambda context, filled: log_real_prob(
            oracle.token_log_probs(filled)
            - loop.sampled_log_probs(context, filled, everywhere(filled))
        ),
        "d_prob": lambda context, filled: torch.sigmoid(loop.disc_trainer.model(context, filled)),
        "constant": lambda context, filled: torch.full(filled[:, 1:].shape, 0.5),
        "ratio": lambda context, filled: log_real_prob(
            ratio_model.token_log_probs(context, filled, everywhere(filled))
            - loop.sampled_log_probs(context, filled, everywhere(filled))
        ),
    }
    if reward == "ratio" and ratio_model is None:
        raise ConfigError("--rewards ratio needs --ratio-model: the path of another MaskMLE checkpoint (mle.pt)")
    loop = ReferenceLoop(cfg, data, generator_state, torch.device("cpu"), reward=rewards[reward], baseline=baseline == "critic")
    if cfg.gan.disc_pretrain_steps:  # as `maskgan train` does, on the MaskMLE generator's in-fills
        loop.disc_trainer.pretrain(generator_state, WindowDataset(data.train_path).windows, cfg.gan.disc_pretrain_steps)
    for _ in range(warmup):
        loop.train_iteration(update_generator=False)
    average = copy.deepcopy(loop.generator) if evaluate_average else None

    def evaluate(iteration: int) -> dict[str, Any]:
        row = {"reward": reward, "baseline": baseline, "warmup": warmup,
               "disc_pretrain_steps": cfg.gan.disc_pretrain_steps, "iteration": iteration}
        evaluated = average if average is not None else loop.generator
        row |= evaluate_during_training(evaluated, data, cfg, loop.disc_trainer.model)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        return row

    rows = [evaluate(0)]
    for iteration in range(1, iterations + 1):
        loop.train_iteration()
        if average is not None:
            update_moving_average(average.state_dict(), loop.generator.state_dict(), cfg.gan.generator_ema)
        if iteration % eval_every == 0 or iteration == iterations:
            rows.append(evaluate(iteration))
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    log_to_stderr()  # the pipeline's progress lines, as `maskgan` shows them
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. run_dir=runs/synthetic-gan")
    parser.add_argument("--preset", default="synthetic-gan")
    parser.add_argument("--rewards", nargs="+", choices=REWARDS, default=list(REWARDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed and setting")
    parser.add_argument("--warmups", nargs="+", type=int, default=[0], help="critic-only iterations first")
    parser.add_argument("--baselines", nargs="+", choices=BASELINES, default=["critic"])
    parser.add_argument("--ratio-model", help="another MaskMLE checkpoint: q of --rewards ratio")
    parser.add_argument(
        "--evaluate", choices=("generator", "average"), default="generator",
        help="evaluate the generator being trained, or the moving average of its weights (gan.generator_ema) as maskgan train does",
    )
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reward_check"))
    parser.add_argument("--plot", nargs="+", metavar="JSON", help="train nothing: plot these reports' rows together as <out>.png")
    args = parser.parse_args(argv)
    if args.plot:
        rows = [row for report in args.plot for row in json.loads(Path(report).read_text())["rows"]]
        print(f"wrote {save_figure(_oracle_nll_figure(rows), Path(args.out).with_suffix('.png'))}")
        return {"rows": rows}
    cfg = load_config(args.preset, [*args.overrides, "tracking.enabled=false"])
    if args.evaluate == "average" and not cfg.gan.generator_ema:
        raise ConfigError("--evaluate average needs gan.generator_ema > 0 (e.g. gan.generator_ema=0.98)")
    if cfg.data.dataset != "synthetic":
        raise ConfigError("reward_check needs the synthetic oracle: use --preset synthetic or synthetic-gan")
    checkpoint = Path(cfg.run_dir) / "checkpoints" / "mle.pt"
    data = prepare_data(cfg)
    generator, _, _ = load_generator(checkpoint, data.vocab)
    ratio_model = load_generator(args.ratio_model, data.vocab)[0] if args.ratio_model else None
    start = time.time()
    rows = [
        {"seed": seed, **row}
        for reward in args.rewards
        for baseline in args.baselines
        for warmup in args.warmups
        for seed in args.seeds
        for row in reward_check(
            dataclasses.replace(cfg, seed=seed), data, generator.state_dict(), reward, warmup, args.iterations,
            args.eval_every, baseline, ratio_model, args.evaluate == "average",
        )
    ]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "checkpoint": str(checkpoint),
        "ratio_model": args.ratio_model,
        "evaluated": args.evaluate,
        "seconds": round(time.time() - start, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(_markdown(rows))
    save_figure(_oracle_nll_figure(rows), out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return report


def _oracle_nll_figure(rows: list[dict[str, Any]]) -> Figure:
    """Oracle NLL change from each run's start against the iteration: a thin line per seed, the mean
    over seeds thick, one colour per setting; below zero is better than the MaskMLE start."""
    runs: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for r in rows:
        setting = f"{r['reward']}, {r['baseline']} baseline, warm-up {r['warmup']}"
        if r["reward"] in ("d", "d_prob"):
            setting += f", D pretrained {r.get('disc_pretrain_steps', '?')} steps"  # ('?': reports older than the field)
        runs.setdefault(setting, {}).setdefault(r["seed"], []).append((r["iteration"], r["oracle_nll"]))
    fig = new_figure(7, 4)
    ax = fig.subplots()
    for colour, (setting, seeds) in enumerate(runs.items()):
        changes = {seed: [(i, nll - points[0][1]) for i, nll in points] for seed, points in seeds.items()}
        for points in changes.values():
            ax.plot(*zip(*points), color=f"C{colour}", alpha=0.35, linewidth=0.8)
        iterations = [i for i, _ in next(iter(changes.values()))]
        mean = [sum(points[k][1] for points in changes.values()) / len(changes) for k in range(len(iterations))]
        ax.plot(iterations, mean, color=f"C{colour}", linewidth=2.2,
                label=f"{setting} ({len(changes)} seeds)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("generator update")
    ax.set_ylabel("oracle NLL of in-fills - start (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| reward | baseline | critic warm-up | seed | iteration | oracle NLL | masked ppl | D held-out accuracy "
        "| optimal D accuracy | corr(D, optimal D) | corr(log D, oracle log p) | unique 2-grams % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reward']} | {r['baseline']} | {r['warmup']} | {r['seed']} | {r['iteration']} | {r['oracle_nll']:.3f} | "
            f"{r['masked_perplexity']:.0f} | "
            f"{r['disc_heldout_accuracy']:.3f} | {r['optimal_disc_accuracy']:.3f} | {r['disc_optimal_corr']:+.3f} | "
            f"{r['reward_oracle_corr']:+.3f} | {r['unique_2grams']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
