"""The critic designs of gan.critic compared on one preset: how well each learns the baseline, and what
the generator it serves ends at. A design is a gan.critic value, or NAME:KEY=VALUE[,KEY=VALUE...]
for any other set of overrides of the adversarial stage (e.g. another resources.precision).

One pretraining (LM + MaskMLE), then one adversarial run per design from it, each its own run_dir
and MLflow run (in <root>/mlflow.db); a run that diverges (the divergence guard stops it) is reported
as such. Per design: the critic's explained variance (RLlib's vf_explained_var: 1 = it predicts every
return, 0 = no better than their mean) and value loss, averaged over the second half of the
iterations, and the oracle NLL of the shipped generator's in-fills (synthetic data only) at the end
and averaged over the last five evaluations. One training seed: differences within the spread of two
runs of the same design (run the script twice, or see benchmarks/README.md) are noise.

    python benchmarks/critic_designs.py                          # synthetic-gan, lstm / head / head_stop_gradient
    python benchmarks/critic_designs.py --designs lstm head_stop_gradient gan.iterations=60
    python benchmarks/critic_designs.py --root runs/precision --out benchmarks/results/precision-check \
        --designs lstm lstm-bf16:gan.critic=lstm,resources.precision=bf16-mixed
Writes <out>.json and <out>.md (default benchmarks/results/critic-designs.*). Reruns skip finished
stages (pretraining is found in its run_dir, each design's exit status in <run_dir>/exit_status).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from maskgan_rl.config import CRITIC_NAMES

EXPLAINED_VARIANCE = "rllib/learner/default_policy/vf_explained_var"


def maskgan(*args: str) -> int:
    """Run the `maskgan` command line of this interpreter; its output goes to ours."""
    return subprocess.run([sys.executable, "-m", "maskgan_rl", *args]).returncode


def design_overrides(design: str) -> tuple[str, list[str]]:
    """(name, overrides) of a design: `lstm` -> ("lstm", ["gan.critic=lstm"]); `NAME:K=V,K=V` -> (NAME, [K=V, K=V])."""
    name, _, spec = design.partition(":")
    return (name, spec.split(",")) if spec else (name, [f"gan.critic={name}"])


def design_argument(text: str) -> str:
    """--designs: a gan.critic value or NAME:KEY=VALUE[,KEY=VALUE...]."""
    name, overrides = design_overrides(text)
    if not name or (":" not in text and name not in CRITIC_NAMES) or not all("=" in o for o in overrides):
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(CRITIC_NAMES)} or NAME:KEY=VALUE[,KEY=VALUE...]")
    return text


def run_design(root: Path, design: str, preset: str, overrides: list[str]) -> int:
    """Train one design (once: its exit status is kept in <run_dir>/exit_status, a diverged run included)."""
    name, own = design_overrides(design)
    run_dir = root / name
    status_file = run_dir / "exit_status"
    if status_file.exists():
        return int(status_file.read_text())
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ("lm.pt", "mle.pt"):  # every design starts from the same MaskMLE
        shutil.copy2(root / "pretrain" / "checkpoints" / name, run_dir / "checkpoints" / name)
    if not (run_dir / "data").exists():
        shutil.copytree(root / "pretrain" / "data", run_dir / "data")
    status = maskgan("train", "--preset", preset, f"run_dir={run_dir}", *own, *overrides)
    status_file.write_text(str(status))
    return status


def summary(root: Path, design: str) -> dict[str, Any]:
    """The numbers of one design's MLflow run (the newest whose run_dir is that design's)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("maskgan")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"params.run_dir = '{root / design}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return {"design": design, "status": "not run"}
    run = runs[0]

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    explained, value_loss, oracle = history(EXPLAINED_VARIANCE), history("gan/vf_loss"), history("gan/eval/oracle_nll")
    half = len(value_loss) // 2
    return {
        "design": design,
        "status": "finished" if run.info.status == "FINISHED" else "stopped (diverged or failed)",
        "iterations": len(value_loss),
        "explained_variance_second_half": statistics.mean(explained[half:]) if explained[half:] else None,
        "value_loss_second_half": statistics.mean(value_loss[half:]) if value_loss[half:] else None,
        "oracle_nll_start": oracle[0] if oracle else None,
        "oracle_nll_end": oracle[-1] if oracle else None,
        "oracle_nll_last5_mean": statistics.mean(oracle[-5:]) if len(oracle) > 1 else None,
    }


def markdown(rows: list[dict[str, Any]], preset: str, overrides: list[str]) -> str:
    def number(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [f"Preset {preset} {' '.join(overrides)}; one pretraining, then one adversarial run per design (its seed is the config's).", "",
             "| design | status | iterations | explained variance (2nd half) | value loss (2nd half) | oracle NLL start -> end | oracle NLL, mean of last 5 evaluations |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['design']} | {r['status']} | {r.get('iterations', '-')} | {number(r.get('explained_variance_second_half'))} | "
            f"{number(r.get('value_loss_second_half'))} | {number(r.get('oracle_nll_start'))} -> {number(r.get('oracle_nll_end'))} | "
            f"{number(r.get('oracle_nll_last5_mean'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="synthetic-gan")
    parser.add_argument("--designs", nargs="+", default=list(CRITIC_NAMES), type=design_argument,
                        help="gan.critic values, or NAME:KEY=VALUE[,KEY=VALUE...] override sets")
    parser.add_argument("--root", default="runs/critic", help="run_dirs and the MLflow store go under it")
    parser.add_argument("--out", default="benchmarks/results/critic-designs")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every run, e.g. gan.iterations=60")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    if maskgan("pretrain", "--preset", args.preset, f"run_dir={root / 'pretrain'}", *args.overrides) != 0:
        sys.exit("pretraining failed: see its output above")
    for design in args.designs:
        if run_design(root, design, args.preset, args.overrides) != 0:
            print(f"[critic] {design}: the run stopped early (its output says why); reported as stopped", file=sys.stderr)
    rows = [summary(root, design_overrides(design)[0]) for design in args.designs]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"preset": args.preset, "overrides": args.overrides, "results": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, args.preset, args.overrides))
    print(markdown(rows, args.preset, args.overrides))


if __name__ == "__main__":
    main()
