"""How long D's weights take from the discriminator actor into an env runner's D, as torch tensors or numpy arrays.

Every iteration the D actor's new weights go to the env runners through Ray's object store
(`maskgan_rl.rl.callbacks.push_discriminator_weights`). This times one such transfer end to end,
`ray.get` of the actor's result and loading it into a local Discriminator as the env does (`load_weights`), both ways:
`DiscriminatorTrainer.weights()` (torch tensors: unpickled into new memory) and
`weights_for_runners()` (numpy arrays: read from the object store in place), which the runners use.

    python benchmarks/weight_transfer.py                 # paper size (2x650, vocabulary 10k)
    python benchmarks/weight_transfer.py --sizes cpu paper --repeats 20
Writes <out>.json and <out>.md (default benchmarks/results/weight-transfer.*).
"""

from __future__ import annotations

import maskgan_rl  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import SIZES, benchmark_config, machine  # noqa: E402  (a sibling script, not a package)

from maskgan_rl.models.discriminator import Discriminator  # noqa: E402
from maskgan_rl.models.generator import Generator  # noqa: E402
from maskgan_rl.oracle import oracle_vocab  # noqa: E402
from maskgan_rl.rl.discriminator_actor import DiscriminatorTrainer  # noqa: E402
from maskgan_rl_envs.infilling_env import load_weights  # noqa: E402

METHODS = {"torch tensors": "weights", "numpy arrays": "weights_for_runners"}


def transfer_seconds(actor: Any, method: str, local: Discriminator, repeats: int) -> list[float]:
    """Seconds per transfer, each a fresh call of the actor's `method` (nothing cached)."""
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        state, _ = ray.get(getattr(actor, method).remote())
        load_weights(local, state)
        times.append(time.perf_counter() - start)
    return times[1:]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["paper"], choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/weight-transfer")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "argv": argv, "results": []}
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for size in args.sizes:
            cfg = benchmark_config(size, Path(tempfile.mkdtemp(prefix="maskgan-bench-")), [])
            vocab_size = len(oracle_vocab(cfg.data.oracle_vocab))  # the benchmark's data: the synthetic oracle's
            actor = ray.remote(DiscriminatorTrainer).remote(cfg, vocab_size, Generator(vocab_size, cfg.model).state_dict())
            local = Discriminator.from_config(vocab_size, cfg)
            megabytes = sum(p.numel() * p.element_size() for p in local.parameters()) / 1e6
            for label, method in METHODS.items():
                times = transfer_seconds(actor, method, local, args.repeats)
                row = {"size": size, "as": label, "megabytes": megabytes, "median_s": statistics.median(times),
                       "min_s": min(times), "max_s": max(times), "repeats": len(times)}
                report["results"].append(row)
                print(f"[weights] {size} as {label}: median {row['median_s']:.4f} s ({megabytes:.0f} MB, {len(times)} repeats)", flush=True)
            ray.kill(actor)
    finally:
        if started_ray:
            ray.shutdown()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    m = report["machine"]
    lines = [f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, torch {m['torch']}.", "",
             "| size | weights as | MB | median s | min s | max s | repeats |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['as']} | {r['megabytes']:.0f} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['max_s']:.4f} | {r['repeats']} |"
              for r in report["results"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"[weights] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
