"""Throughput of MaskGAN's adversarial loop: the Ray RLlib loop against a fused single-process loop.

One adversarial iteration, in both loops: fill gan.episodes_per_iteration masked windows with the
generator, reward every masked token with log D, one generator + critic update (REINFORCE with the
critic baseline), gan.disc_steps discriminator steps on those windows.
- RL loop: `maskgan_rl.rl.adversarial.AdversarialTrainer` (env runners, learner, D actor), as trained.
- Fused loop: `maskgan_rl.rl.reference.ReferenceLoop`, the same networks, losses and D trainer in
  one process, no Ray; all windows of the batch sampled in one batched decoder pass (`Generator.sample`).
Reported per configuration: masked and all (window) tokens per second (median over the timed
iterations after warm-up), seconds per iteration, peak memory of all processes (PSS: shared pages
counted once; in MEMORY_ITERATIONS more iterations after the timed ones) and how that peak splits over
the processes (the driver, each Ray actor class, idle Ray workers, Ray's daemons), and the time split
the trainer reports (RLlib step, D training, weight push).
`--profile` adds a cProfile breakdown of the default RL configuration (all but D in this process).

    python benchmarks/throughput.py                       # CPU size, every algorithm and layout
    python benchmarks/throughput.py --sizes paper --algos reinforce --runners 0 1 --envs 64
Writes <out>.json and <out>.md (default benchmarks/results/throughput.*). Never run in tests:
figures from a shared machine are measurements, not assertions.
"""

from __future__ import annotations

import maskgan_rl  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads OpenMP)

import argparse
import cProfile
import ctypes
import gc
import itertools
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import psutil
import ray
import torch

from maskgan_rl.cli import log_to_stderr
from maskgan_rl.config import Config, load_config
from maskgan_rl.dataset import PreparedData, prepare_data
from maskgan_rl.models.generator import Generator
from maskgan_rl.resources import thread_shares
from maskgan_rl.rl.adversarial import AdversarialTrainer
from maskgan_rl.rl.algorithms import ALGORITHMS, masked_per_episode
from maskgan_rl.rl.reference import ReferenceLoop
from maskgan_rl.verdict import t_interval

SIZES = {  # model and vocabulary; T=20 and 128 windows per iteration for both
    "cpu": {"model.embed": 32, "model.hidden": 32, "model.layers": 1, "data.oracle_vocab": 5000},
    "paper": {"model.embed": 650, "model.hidden": 650, "model.layers": 2, "data.oracle_vocab": 10000},
}


def benchmark_config(size: str, run_dir: Path, overrides: list[str]) -> Config:
    settings = {
        **SIZES[size],
        "run_dir": str(run_dir / size),
        "data.seq_len": 20,
        "data.synthetic_train": 2000,
        "data.synthetic_valid": 200,
        "data.synthetic_test": 200,
        "gan.episodes_per_iteration": 128,
        "tracking.enabled": False,
    }
    return load_config("synthetic", [f"{k}={v}" for k, v in settings.items()] + overrides)


# ------------------------------------------------------------------------------ measuring


def process_role(process: psutil.Process) -> str:
    """What a process of a Ray run is: a Ray actor by its class (`ray::SingleAgentEnvRunner.sample` ->
    SingleAgentEnvRunner), an idle pooled Ray worker, or one of Ray's daemons (raylet, GCS, agents)."""
    title = (process.cmdline() or [process.name()])[0]
    if not title.startswith("ray::") or title in ("ray::DashboardAgent", "ray::RuntimeEnvAgent"):
        return "Ray daemons"
    role = title[len("ray::"):].split(".")[0]
    return "idle Ray workers" if role == "IDLE" else role


class PeakMemory:
    """Peak total memory (PSS, MB) of this process and, with `children`, every process it started (Ray),
    and how that peak splits over the processes' roles (`peak_by_role`: role -> {"mb", "processes"};
    this process is "driver").

    Reading PSS walks every page of every process and costs CPU time, so it runs in its own pass after
    the timed iterations (`peak_memory`), never during them."""

    def __init__(self, children: bool, every_s: float = 0.25):
        self.children, self.every_s, self.peak_mb = children, every_s, 0.0
        self.peak_by_role: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def by_role(self) -> dict[str, dict[str, float]]:
        me = psutil.Process()
        roles: dict[str, dict[str, float]] = {}
        for process in [me] + (me.children(recursive=True) if self.children else []):
            try:
                info = process.memory_full_info()
                role = "driver" if process.pid == me.pid else process_role(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            entry = roles.setdefault(role, {"mb": 0.0, "processes": 0})
            entry["mb"] += getattr(info, "pss", info.rss) / 2**20
            entry["processes"] += 1
        return roles

    def total_mb(self) -> float:
        return _sum_mb(self.by_role())

    def _sample(self) -> None:
        roles = self.by_role()
        total = _sum_mb(roles)
        if total > self.peak_mb:
            self.peak_mb, self.peak_by_role = total, roles

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _sum_mb(roles: dict[str, dict[str, float]]) -> float:
    return sum(entry["mb"] for entry in roles.values())


def release_freed_memory() -> None:
    """Hand the heap that freed tensors left behind back to the OS (glibc keeps it otherwise), so that
    one configuration's peak does not start from the previous one's leftovers in this process."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim this way
        pass


def peak_memory(step: Callable[[], Any], iterations: int, children: bool, before_mb: float) -> dict[str, float]:
    """Peak memory over `iterations` more calls of `step`, and its growth over `before_mb` (the total
    before the configuration started: Ray's daemons and idle pooled workers are there already)."""
    with PeakMemory(children) as memory:
        for _ in range(iterations):
            step()
    return {"peak_memory_mb": memory.peak_mb, "memory_added_mb": memory.peak_mb - before_mb,
            "peak_memory_by_process": memory.peak_by_role}


def timed_iterations(step: Callable[[], tuple[int, dict[str, float]]], warmup: int, iterations: int) -> dict[str, Any]:
    """Run warm-up then timed iterations of `step` (-> masked tokens, extra timings); medians."""
    for _ in range(warmup):
        step()
    seconds, tokens, extras = [], [], []
    for _ in range(iterations):
        start = time.perf_counter()
        masked, extra = step()
        seconds.append(time.perf_counter() - start)
        tokens.append(masked)
        extras.append(extra)
    return iteration_medians(seconds, tokens, extras)


def iteration_medians(seconds: list[float], tokens: list[int], extras: Sequence[dict[str, float]] = ()) -> dict[str, Any]:
    """Medians of timed iterations: seconds, masked tokens per second and per iteration, and each extra timing."""
    rates = [t / s for t, s in zip(tokens, seconds)]
    result = {
        "s_per_iteration": statistics.median(seconds),
        "masked_tokens_per_s": statistics.median(rates),
        "masked_tokens_per_iteration": statistics.median(tokens),
    }
    for key in extras[0] if extras else ():
        result[key] = statistics.median(e[key] for e in extras)
    return result


MEMORY_ITERATIONS = 2  # the untimed pass that measures peak memory, after the timed iterations


def measure_fused(cfg: Config, data: PreparedData, generator_state, warmup: int, iterations: int, device: str) -> dict[str, Any]:
    # Its best thread count, which the RL loop's driver also picks: every core for networks large
    # enough, one for small ones (benchmarks/README.md: 0.13 s per iteration at the CPU size on one
    # thread, 0.16 on two spinning, 0.22 on two sleeping).
    torch.set_num_threads(thread_shares(cfg)["driver"].threads())
    before_mb = PeakMemory(children=False).total_mb()
    loop = ReferenceLoop(cfg, data, generator_state, torch.device(device))
    result = timed_iterations(lambda: (loop.train_iteration(), {}), warmup, iterations)
    result.update(peak_memory(loop.train_iteration, MEMORY_ITERATIONS, children=False, before_mb=before_mb))
    del loop
    release_freed_memory()
    return result


def measure_rl(cfg: Config, data: PreparedData, generator_state, warmup: int, iterations: int, profile: Optional[Path] = None) -> dict[str, Any]:
    before_mb = PeakMemory(children=True).total_mb()
    trainer = AdversarialTrainer(cfg, data, generator_state)
    try:
        def step() -> tuple[int, dict[str, float]]:
            m = trainer.train_iteration()
            return m["masked_tokens"], {k: m[k] for k in ("time_rl_s", "time_disc_s", "time_push_s")}

        profiler = cProfile.Profile() if profile else None
        for _ in range(warmup):
            step()
        if profiler:
            profiler.enable()
        result = timed_iterations(step, 0, iterations)
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
            result["profile"] = profile_breakdown(pstats.Stats(str(profile)))
        result.update(peak_memory(step, MEMORY_ITERATIONS, children=True, before_mb=before_mb))
    finally:
        trainer.stop()
        del trainer
        release_freed_memory()
    return result


# Run inside a checkout of this project (--baseline-tree, or this one), with its own package and
# benchmark: its single-process loop, warmed up as `measure_fused` warms this one's, then one timed
# iteration per line read from stdin ("ready" first, then [seconds, masked tokens] of each), so that a
# parent can run two checkouts' loops in lockstep.
LOCKSTEP_LOOP = """
import json, sys, time
from pathlib import Path
sys.path[:0] = ["benchmarks"]
import throughput as tree
import psutil, torch
from maskgan_rl.dataset import prepare_data
from maskgan_rl.models.generator import Generator
try:
    from maskgan_rl.rl.reference import ReferenceLoop as Loop
except ImportError:  # before the loop moved into the package
    Loop = tree.FusedLoop
size, work, warmup, overrides, REPLY = json.loads(sys.argv[1])
cfg = tree.benchmark_config(size, Path(work), overrides)
data = prepare_data(cfg)
torch.manual_seed(0)
state = Generator(len(data.vocab), cfg.model).state_dict()
torch.set_num_threads(psutil.cpu_count(logical=True))
loop = Loop(cfg, data, state, torch.device("cpu"))
for _ in range(warmup):
    loop.train_iteration()
print(REPLY, "ready", flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    masked = loop.train_iteration()
    print(REPLY, json.dumps([time.perf_counter() - start, masked]), flush=True)
"""


class LockstepLoop:
    """The fused loop of the checkout at `tree` (e.g. `git worktree add /tmp/old <commit>`) in a process
    of its own, one iteration per `step()`. Between steps it waits (its OpenMP threads sleep:
    OMP_WAIT_POLICY=PASSIVE), so two of them stepped in turn share the machine's moment, not its cores."""

    REPLY = "@lockstep"  # marks the lines of the step protocol on the loop's stdout

    def __init__(self, tree: Path, size: str, work: Path, warmup: int, overrides: list[str]):
        self.commit = tree_commit(tree)
        arguments = json.dumps([size, str(work / f"lockstep-{self.commit}-{size}"), warmup, overrides, self.REPLY])
        self.process = subprocess.Popen([sys.executable, "-c", LOCKSTEP_LOOP, arguments], cwd=tree,
                                        env={**os.environ, "PYTHONPATH": str(tree), "OMP_WAIT_POLICY": "PASSIVE"},
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._reply() != "ready":
            raise SystemExit(f"the fused loop in {tree} failed to start (its error is above)")

    def step(self) -> tuple[float, int]:
        """(seconds, masked tokens) of one iteration."""
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        seconds, masked = json.loads(self._reply())
        return seconds, masked

    def _reply(self) -> str:
        """The loop's next reply; anything else it prints (an older tree's progress) passes to stderr."""
        for line in self.process.stdout:
            if line.startswith(self.REPLY):
                return line.removeprefix(self.REPLY).strip()
            sys.stderr.write(line)
        raise SystemExit(f"the fused loop of {self.commit} stopped (exit status {self.process.wait()}; its error is above)")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def measure_baseline(tree: Path, size: str, work: Path, warmup: int, iterations: int, overrides: list[str]) -> dict[str, Any]:
    """The fused loop of the checkout at `tree`, in a process of its own, timed as `measure_fused` times this one's."""
    loop = LockstepLoop(tree, size, work, warmup, overrides)
    try:
        seconds, tokens = zip(*(loop.step() for _ in range(iterations)))
    finally:
        loop.close()
    return {**iteration_medians(list(seconds), list(tokens)), "commit": loop.commit}


def lockstep_speedups(baseline_tree: Path, size: str, work: Path, warmup: int, rounds: int, overrides: list[str],
                      this_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The baseline tree's fused loop and this tree's (with `this_overrides` too: settings the baseline
    may not know), each warmed up in a process of its own, then stepped in turn (baseline, this,
    baseline, this...) for `rounds` rounds: on a machine whose speed drifts from minute to minute,
    each round compares the two at the same moment."""
    this_tree = Path(__file__).resolve().parent.parent
    loops = [LockstepLoop(baseline_tree, size, work, warmup, overrides), LockstepLoop(this_tree, size, work, warmup, [*overrides, *this_overrides])]
    try:
        seconds = []
        for _ in range(rounds):
            seconds.append([loop.step()[0] for loop in loops])
            print(f"[bench] lockstep {size}: baseline {seconds[-1][0]:.2f} s, this tree {seconds[-1][1]:.2f} s", flush=True)
    finally:
        for loop in loops:
            loop.close()
    speedups = [old / new for old, new in seconds]
    speedup = geometric_mean(speedups)
    return {"commit": loops[0].commit, "this_overrides": list(this_overrides), "s_per_iteration": seconds, "speedups": speedups, "median_speedup": statistics.median(speedups),
            "geometric_mean_speedup": speedup["mean"], "speedup_interval": None if speedup["low"] is None else [speedup["low"], speedup["high"]]}


def geometric_mean(ratios: Sequence[float]) -> dict[str, Optional[float]]:
    """{"mean", "low", "high"}: the geometric mean of `ratios` and its 95% t-interval (the mean log ratio's,
    back on the ratio scale; low and high None from one value)."""
    mean, low, high = t_interval([math.log(r) for r in ratios])
    return {"mean": math.exp(mean), "low": None if low is None else math.exp(low), "high": None if high is None else math.exp(high)}


def tree_commit(tree: Path) -> str:
    """The short commit hash of the checkout at `tree` ("?" outside git)."""
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"


# Where an RL iteration spends its time in the driver process (runners=0), as cProfile's cumulative
# time of (function name, file suffix), counting only calls from the given caller files where given.
RUNNER_CONNECTORS = ("env/single_agent_env_runner.py", "connectors/env_to_module/env_to_module_pipeline.py")
PROFILE_PARTS = [
    ("env runner sample(), in all", "env/single_agent_env_runner.py", "sample", ()),
    ("  env stepping (InfillVectorEnv.step)", "envs/infilling_env.py", "step", ()),
    ("    of which placing + D's reward forward", "envs/infilling_env.py", "place", ()),
    ("  module forward (generator, cached decoder, sampling)", "maskgan_rl/rl/module.py", "_forward_exploration", ()),
    ("  connectors (env-to-module, module-to-env)", "connectors/connector_pipeline_v2.py", "__call__", RUNNER_CONNECTORS),
    ("learner update, in all", "core/learner/learner.py", "update", ()),
    ("  learner connectors (returns, batching)", "connectors/connector_pipeline_v2.py", "__call__", ("learner/learner_connector_pipeline.py",)),
    ("  forward + backward + optimiser", "core/learner/torch/torch_learner.py", "_update", ()),
    ("D weight broadcast to env runners", "maskgan_rl/rl/callbacks.py", "push_discriminator_weights", ()),
    ("generator weight sync to env runners", "env/env_runner_group.py", "sync_weights", ()),
]


def profile_breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds in the functions of PROFILE_PARTS."""
    found: dict[str, float] = {}
    for label, file, function, callers_from in PROFILE_PARTS:
        seconds = 0.0
        for (path, _, name), (_, _, _, cumulative, callers) in stats.stats.items():
            if name != function or not path.endswith(file):
                continue
            if not callers_from:
                seconds += cumulative
            else:
                seconds += sum(c[3] for (cpath, _, _), c in callers.items() if cpath.endswith(callers_from))
        found[label] = seconds
    return found


# ------------------------------------------------------------------------------ the run


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average_at_start": [round(x, 2) for x in psutil.getloadavg()],
    }


def main(argv: Optional[list[str]] = None) -> None:
    log_to_stderr()  # the pipeline's progress lines, as `maskgan` shows them
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["cpu"], choices=sorted(SIZES))
    parser.add_argument("--algos", nargs="+", default=sorted(ALGORITHMS), choices=sorted(ALGORITHMS))
    parser.add_argument("--runners", nargs="+", type=layout_value, default=[0, 1, 2], help="num_env_runners values, or `default`")
    parser.add_argument("--envs", nargs="+", type=layout_value, default=[1, 16, 64], help="num_envs_per_env_runner values, or `default`")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per configuration")
    parser.add_argument("--profile", action="store_true", help="cProfile the default configuration (reinforce, the driver's env runner)")
    parser.add_argument("--device", default="cpu", help="fused loop device (cpu | cuda); RL learner via resources.num_gpus_per_learner")
    parser.add_argument("--baseline-tree", type=Path, help="also time the fused loop of this checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--baseline-lockstep", type=int, default=0, metavar="ROUNDS",
                        help="then step the baseline's and this tree's fused loops in turn, one iteration each, this many rounds")
    parser.add_argument("--lockstep-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for this tree's loop alone in the lockstep rounds, e.g. resources.precision=bf16-mixed")
    parser.add_argument("--out", default="benchmarks/results/throughput")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every configuration, e.g. gan.disc_steps=5")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "argv": argv, "results": []}
    work = Path(tempfile.mkdtemp(prefix="maskgan-bench-"))
    started_ray = not ray.is_initialized()  # (tests run it inside their own Ray session)
    if started_ray:
        # At least 4 logical CPUs, so that 2 runners + D actor + driver fit on a 2-core machine (they share it);
        # a cluster of its own (address="local"), never one another process started.
        ray.init(address="local", num_cpus=max(psutil.cpu_count(logical=True), 4), include_dashboard=False, log_to_driver=False)
    try:
        for size in args.sizes:
            base = benchmark_config(size, work, args.overrides)
            data = prepare_data(base)
            torch.manual_seed(0)
            generator_state = Generator(len(data.vocab), base.model).state_dict()
            if args.baseline_tree:
                baseline = measure_baseline(args.baseline_tree, size, work, args.warmup, args.iterations, args.overrides)
                _record(report, {"size": size, "loop": f"fused @ {baseline['commit']}", "algo": "reinforce", "runners": "-", "envs": "-",
                                 "peak_memory_mb": math.nan, "memory_added_mb": math.nan, **baseline, **_per_window(base, baseline)})
            fused = measure_fused(base, data, generator_state, args.warmup, args.iterations, args.device)
            row = {"size": size, "loop": "fused", "algo": "reinforce", "runners": "-", "envs": "-", **fused, **_per_window(base, fused)}
            if args.baseline_tree:
                row["speedup_vs_baseline"] = baseline["s_per_iteration"] / fused["s_per_iteration"]
            _record(report, row)
            for algo, runners, envs in itertools.product(args.algos, args.runners, args.envs):
                layout = [f"resources.{key}={value}" for key, value in (("num_env_runners", runners), ("num_envs_per_env_runner", envs)) if value != "default"]
                cfg = benchmark_config(size, work, args.overrides + [f"gan.algo={algo}", *layout])
                rl = measure_rl(cfg, data, generator_state, args.warmup, args.iterations)
                row = {"size": size, "loop": "rl", "algo": algo, "runners": runners, "envs": envs, **rl, **_per_window(cfg, rl)}
                row["vs_fused"] = rl["masked_tokens_per_s"] / fused["masked_tokens_per_s"]
                _record(report, row)
            if args.baseline_tree and args.baseline_lockstep:
                # After the RL rows, which are compared with the fused row just before them.
                lockstep = lockstep_speedups(args.baseline_tree, size, work, args.warmup, args.baseline_lockstep, args.overrides,
                                             args.lockstep_overrides)
                report.setdefault("baseline_lockstep", {})[size] = lockstep
                print(f"[bench] {size}: fused loop vs baseline in lockstep: speedups {lockstep['speedups']}", flush=True)
            if args.profile:
                cfg = benchmark_config(size, work, args.overrides + ["gan.algo=reinforce", "resources.num_env_runners=0"])
                envs = cfg.gan.episodes_per_iteration  # the default: all of an iteration's windows in one batch
                rl = measure_rl(cfg, data, generator_state, args.warmup, args.iterations, profile=out.with_name(f"{out.name}-{size}.prof"))
                parts = {k: v / args.iterations for k, v in rl["profile"].items()}
                parts["waiting for D's update after RLlib's step (median)"] = rl["time_disc_s"]  # REINFORCE runs D alongside its learner
                report.setdefault("profiles", {})[size] = {"envs": envs, "s_per_iteration": rl["s_per_iteration"], "parts_s_per_iteration": parts}
                print(f"[bench] profile {size}: " + json.dumps(report["profiles"][size], indent=1))
    finally:
        if started_ray:
            ray.shutdown()
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(f"[bench] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def layout_value(text: str) -> int | str:
    """--runners / --envs: an integer, or `default` (the key left at the project's default)."""
    return text if text == "default" else int(text)


def _per_window(cfg: Config, result: dict[str, Any]) -> dict[str, float]:
    """All tokens per second: every window target, present or generated (T per masked window)."""
    return {"all_tokens_per_s": result["masked_tokens_per_s"] * cfg.data.seq_len / masked_per_episode(cfg)}


def _record(report: dict[str, Any], row: dict[str, Any]) -> None:
    report["results"].append(row)
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k not in ("profile", "peak_memory_by_process")}
    print("[bench] " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, GPU: {m['gpu'] or 'none'}, torch {m['torch']}; "
        f"load average at start {m['load_average_at_start']}.",
        "",
        "| size | loop | algo | runners | envs/runner | masked tok/s | all tok/s | s/iter | RL/fused | peak MB (all procs) | MB added | RLlib step s | D wait s | push s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        vs_fused = f"{r['vs_fused']:.2f}" if "vs_fused" in r else ("1.00" if r["loop"] == "fused" else "-")
        lines.append(
            f"| {r['size']} | {r['loop']} | {r['algo']} | {r['runners']} | {r['envs']} | {r['masked_tokens_per_s']:.0f} | "
            f"{r['all_tokens_per_s']:.0f} | {r['s_per_iteration']:.2f} | {vs_fused} | {r['peak_memory_mb']:.0f} | {r['memory_added_mb']:.0f} | "
            f"{r.get('time_rl_s', float('nan')):.2f} | {r.get('time_disc_s', float('nan')):.2f} | {r.get('time_push_s', float('nan')):.2f} |"
        )
    for r in report["results"]:
        if r.get("peak_memory_by_process"):
            parts = sorted(r["peak_memory_by_process"].items(), key=lambda item: -item[1]["mb"])
            shown = "; ".join(f"{role} {p['mb']:,.0f}" + (f" ({p['processes']} processes)" if p["processes"] > 1 else "") for role, p in parts)
            lines += ["", f"Peak memory by process, {r['size']} {r['loop']} {r['algo']} runners={r['runners']} envs={r['envs']} (MB, PSS): {shown}."]
    for r in report["results"]:
        if "speedup_vs_baseline" in r:
            lines += ["", f"{r['size']} size: the fused loop is {r['speedup_vs_baseline']:.2f}x as fast per iteration as the baseline tree's."]
    for size, p in report.get("baseline_lockstep", {}).items():
        shown = ", ".join(f"{old:.2f} / {new:.2f} s" for old, new in p["s_per_iteration"])
        interval = "" if p["speedup_interval"] is None else " (95% interval {:.2f}-{:.2f}x)".format(*p["speedup_interval"])
        this = f"this tree ({' '.join(p['this_overrides'])})" if p["this_overrides"] else "this tree"
        lines += ["", f"{size} size, the fused loops of {p['commit']} and {this} stepped in turn, one iteration each "
                      f"(seconds, {p['commit']} / this tree): {shown}. Speedup: geometric mean {p['geometric_mean_speedup']:.2f}x"
                      f"{interval}, median {p['median_speedup']:.2f}x."]
    for size, p in report.get("profiles", {}).items():
        lines += ["", f"Profile, {size} size, reinforce, runners=0, {p['envs']} envs: {p['s_per_iteration']:.2f} s per iteration", "",
                  "| part | s per iteration | share |", "|---|---|---|"]
        for part, seconds in p["parts_s_per_iteration"].items():
            lines.append(f"| {part} | {seconds:.3f} | {seconds / p['s_per_iteration']:.0%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
