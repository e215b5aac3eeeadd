"""How far the fused loop runs from this machine's arithmetic limit, in float32 and in bfloat16.

One fused iteration (`maskgan_rl.rl.reference.ReferenceLoop`, the loop `throughput.py` measures the RL
loop against) is mostly LSTM layers and matrix products. This script counts their floating-point
operations from torch's profiler (an LSTM layer over N tokens: 2 * N * 4H * (I + H) forward, twice
that backward; a product [M, K] x [K, N]: 2 * M * K * N), measures the machine's best matrix-product
rate (one large GEMM on the loop's threads) in each precision, and times the iteration in each:

    limit (s) = operations per iteration / GEMM rate,      share of the limit = limit / measured time.

A share near 1 means only less arithmetic (other maths, or a lower precision) can make the iteration
faster; the rest of the time is everything that is not a matrix product (sampling, softmaxes, copies).

    python benchmarks/arithmetic_limit.py                        # paper size (2x650, vocabulary 10k)
    python benchmarks/arithmetic_limit.py --sizes cpu paper --iterations 5
Writes <out>.json and <out>.md (default benchmarks/results/arithmetic-limit.*). Never run in tests
beyond a smoke run: figures from a shared machine are measurements, not assertions.
"""

from __future__ import annotations

import maskgan_rl  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import SIZES, benchmark_config, machine, timed_iterations  # noqa: E402  (a sibling script, not a package)

from maskgan_rl.dataset import prepare_data  # noqa: E402
from maskgan_rl.models.generator import Generator  # noqa: E402
from maskgan_rl.resources import thread_shares  # noqa: E402
from maskgan_rl.rl.reference import ReferenceLoop  # noqa: E402

PRECISIONS = {"32": torch.float32, "bf16-mixed": torch.bfloat16}
GEMM_SIZE = 3072


def gemm_rate(dtype: torch.dtype, repeats: int = 5) -> float:
    """GFLOP/s of one [n, n] x [n, n] product in `dtype` on torch's current threads (best of `repeats`)."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype), torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
    a @ b  # warm-up
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best.append(time.perf_counter() - start)
    return 2 * GEMM_SIZE**3 / min(best) / 1e9


def operation_counts(events) -> dict[str, float]:
    """GFLOP per kind of the profiled events: "lstm forward", "lstm backward", "matrix products"."""
    counts = {"lstm forward": 0.0, "lstm backward": 0.0, "matrix products": 0.0}
    for event in events:
        shapes = event.input_shapes
        if event.name in ("aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward"):
            (steps, batch, _), w_ih, w_hh = shapes[0], shapes[1], shapes[2]  # input [T, B, I], weights [4H, I], [4H, H]
            forward = 2 * steps * batch * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])
            kind = "lstm forward" if event.name == "aten::mkldnn_rnn_layer" else "lstm backward"
            counts[kind] += forward * (2 if kind == "lstm backward" else 1)
        elif event.name in ("aten::mm", "aten::addmm", "aten::bmm"):
            a, b = [s for s in shapes if len(s) >= 2][-2:]  # addmm's bias comes first
            counts["matrix products"] += 2 * (a[0] if len(a) == 3 else 1) * a[-2] * a[-1] * b[-1]
    return {kind: flops / 1e9 for kind, flops in counts.items()}


def measure(size: str, work: Path, warmup: int, iterations: int, overrides: list[str]) -> list[dict[str, Any]]:
    """One row per precision: the iteration's GFLOP (counted in float32, whose LSTM kernels run each
    layer once; the bfloat16 backward re-runs forward layers, which is work the limit does not need),
    its median time (`throughput.timed_iterations`, as the fused rows there), and the GEMM rate of that precision."""
    cfg = benchmark_config(size, work, [*overrides, "resources.precision=32"])
    data = prepare_data(cfg)
    torch.manual_seed(0)
    state = Generator(len(data.vocab), cfg.model).state_dict()
    torch.set_num_threads(thread_shares(cfg)["driver"].threads())
    rows, gflop = [], None
    for precision, dtype in PRECISIONS.items():
        loop = ReferenceLoop(benchmark_config(size, work, [*overrides, f"resources.precision={precision}"]), data, state, torch.device("cpu"))
        seconds = timed_iterations(lambda: (loop.train_iteration(), {}), warmup, iterations)["s_per_iteration"]
        if gflop is None:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
                loop.train_iteration()
            gflop = operation_counts(profiler.events())
        rate = gemm_rate(dtype)
        total = sum(gflop.values())
        rows.append({"size": size, "precision": precision, "threads": torch.get_num_threads(), "s_per_iteration": seconds,
                     "gflop_per_iteration": gflop, "gflop_total": total, "achieved_gflop_per_s": total / seconds,
                     "gemm_gflop_per_s": rate, "limit_s": total / rate, "share_of_limit": total / rate / seconds})
        print(f"[limit] {json.dumps(rows[-1])}", flush=True)
        del loop
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = ["| size | precision | threads | s / iteration | GFLOP / iteration (LSTM fwd + bwd + products) | achieved GFLOP/s | "
             "GEMM GFLOP/s | limit s / iteration | share of the limit |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        g = r["gflop_per_iteration"]
        lines.append(f"| {r['size']} | {r['precision']} | {r['threads']} | {r['s_per_iteration']:.3f} | {r['gflop_total']:.0f} "
                     f"({g['lstm forward']:.0f} + {g['lstm backward']:.0f} + {g['matrix products']:.0f}) | "
                     f"{r['achieved_gflop_per_s']:.0f} | {r['gemm_gflop_per_s']:.0f} | {r['limit_s']:.3f} | {r['share_of_limit']:.2f} |")
    return f"Machine: {report['machine']}\n\n" + "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["paper"], choices=sorted(SIZES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per precision (median)")
    parser.add_argument("--out", default="benchmarks/results/arithmetic-limit")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.hidden=256")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="maskgan-limit-"))
    report = {"machine": machine(), "argv": argv, "results": [row for size in args.sizes
                                                              for row in measure(size, work, args.warmup, args.iterations, args.overrides)]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
