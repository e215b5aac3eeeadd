"""The RL loop of two checkouts side by side: which one is faster, with an interval.

A change to the RL loop moves its time by a few percent, less than this machine drifts between runs
minutes apart, so one run per checkout says nothing. This script runs `benchmarks/throughput.py`
(one size, REINFORCE, the default layout) in the baseline checkout and in this one, alternately,
ROUNDS times (the order flips every round), and reports per round the RL and fused seconds per
iteration and, over rounds, geometric means with 95% Student-t intervals: this checkout's RL time
over the baseline's, each checkout's RL/fused speed within its runs (the fused loop, timed in the
same run, takes out most of the machine's drift), and the ratio of those two. Each checkout runs
with its own `.venv`.

    git worktree add /tmp/base <commit> && (cd /tmp/base && bash launch/setup.sh)
    python benchmarks/compare_trees.py --baseline-tree /tmp/base --sizes cpu --rounds 7 --iterations 30
Writes <out>.json, <out>.md and <out>.png (RL/fused per round, both checkouts); extra arguments go to both throughput.py runs (e.g. resources.precision=32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from maskgan_rl.plots import new_figure, save_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import geometric_mean, tree_commit  # noqa: E402  (a sibling script, not a package)

HERE = Path(__file__).resolve().parent.parent


def run_throughput(tree: Path, size: str, iterations: int, out: Path, extra: list[str]) -> dict:
    """One throughput.py run in `tree` -> {"fused": s/iteration, "rl": s/iteration}."""
    command = [str(tree / ".venv/bin/python"), "benchmarks/throughput.py", "--sizes", size, "--algos", "reinforce",
               "--runners", "default", "--envs", "default", "--iterations", str(iterations), "--out", str(out), *extra]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command, cwd=tree, stdout=log, stderr=subprocess.STDOUT, check=True)
    return timings(out)


def timings(out: Path) -> dict:
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    return {row["loop"]: row["s_per_iteration"] for row in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, required=True, help="the other checkout, with its own .venv")
    parser.add_argument("--sizes", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "benchmarks/results/compare-trees")
    parser.add_argument("--summarise", action="store_true", help="only rebuild <out>.json/.md from the runs already in <out>-runs")
    args, extra = parser.parse_known_args(argv)
    args.out = args.out.resolve()  # the runs write it from the other checkout too
    runs = args.out.parent / f"{args.out.name}-runs"
    runs.mkdir(parents=True, exist_ok=True)
    trees = {"baseline": args.baseline_tree.resolve(), "this": HERE}
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.summarise and args.out.with_suffix(".json").exists() else {}
    commits = previous.get("commits") or {name: tree_commit(tree) for name, tree in trees.items()}  # as at the start

    rounds = []
    for r in range(args.rounds):
        order = ("baseline", "this") if r % 2 == 0 else ("this", "baseline")
        if args.summarise:
            timed = {name: timings(runs / f"{name}-{r}") for name in order}
        else:
            timed = {name: run_throughput(trees[name], args.sizes, args.iterations, runs / f"{name}-{r}", extra) for name in order}
        rounds.append(timed)
        print(f"[compare] round {r + 1}/{args.rounds}: RL s/iteration baseline {timed['baseline']['rl']:.4f}, "
              f"this {timed['this']['rl']:.4f}; fused {timed['baseline']['fused']:.4f} / {timed['this']['fused']:.4f}",
              file=sys.stderr, flush=True)

    summary = {
        "commits": commits, "size": args.sizes, "iterations": args.iterations, "extra": extra,
        "rounds": rounds,
        "rl_time_this_over_baseline": geometric_mean([t["this"]["rl"] / t["baseline"]["rl"] for t in rounds]),
        "rl_over_fused": {name: geometric_mean([rl_over_fused(t[name]) for t in rounds]) for name in trees},
        "rl_over_fused_this_over_baseline": geometric_mean([rl_over_fused(t["this"]) / rl_over_fused(t["baseline"]) for t in rounds]),
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    lines = [f"RL loop, {args.sizes} size, {summary['commits']['this']} against {summary['commits']['baseline']} ({args.rounds} rounds, "
             f"{args.iterations} iterations each, order alternating)", "",
             "| round | RL s/iter baseline | RL s/iter this | this / baseline | fused s/iter baseline | fused s/iter this |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r + 1} | {t['baseline']['rl']:.4f} | {t['this']['rl']:.4f} | {t['this']['rl'] / t['baseline']['rl']:.3f} | "
              f"{t['baseline']['fused']:.4f} | {t['this']['fused']:.4f} |" for r, t in enumerate(rounds)]
    lines += ["", "Geometric means over rounds (95% intervals):",
              f"- RL time, this / baseline: {shown(summary['rl_time_this_over_baseline'])}",
              f"- RL/fused tokens per second within a run: baseline {shown(summary['rl_over_fused']['baseline'])}, "
              f"this {shown(summary['rl_over_fused']['this'])}; this / baseline {shown(summary['rl_over_fused_this_over_baseline'])}"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    save_figure(rounds_figure(summary, f"RL loop, {args.sizes} size: {commits['this']} against {commits['baseline']}"),
                args.out.with_suffix(".png"))
    print("\n".join(lines))


def rl_over_fused(run: dict) -> float:
    """RL tokens per second over fused tokens per second, within one run."""
    return run["fused"] / run["rl"]


def rounds_figure(summary: dict, title: str):
    """RL/fused tokens per second of each checkout per round, with the geometric means and their intervals."""
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    rounds = summary["rounds"]
    for name, marker in (("baseline", "o"), ("this", "s")):
        values = [rl_over_fused(t[name]) for t in rounds]
        mean = summary["rl_over_fused"][name]
        line = ax.plot(range(1, len(rounds) + 1), values, marker=marker, linestyle="none",
                       label=f"{summary['commits'][name]}: {shown(mean)}")[0]
        ax.axhline(mean["mean"], color=line.get_color(), linewidth=1)
        if mean["low"] is not None:
            ax.axhspan(mean["low"], mean["high"], color=line.get_color(), alpha=0.12)
    ax.set_xlabel("round (the two checkouts alternate within each)")
    ax.set_ylabel("RL / fused tokens per second, within a run")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def shown(summary: dict) -> str:
    interval = f" ({summary['low']:.3f}-{summary['high']:.3f})" if summary["low"] is not None else ""
    return f"{summary['mean']:.3f}{interval}"


if __name__ == "__main__":
    main()
