"""Check that the Ray cluster can host what the config asks for, before anything is scheduled, point
out a GPU on the driver's node that nothing asks for (`unused_gpu_hint`), and choose the torch threads
of each process (`ThreadShare`, at the end).

Ray does not fail when an actor asks for resources no node has: it queues the actor forever (the
learner group waits on a placement group, env runners wait to be scheduled) and the run hangs
without a word. `check_cluster_resources` compares the config's demands with the cluster right
after `ray.init` and raises a `ConfigError` naming what is missing and which key to change.

The demands mirror what RLlib asks Ray for (`ray.rllib.algorithms.utils._get_learner_bundles`):
- each remote env runner: `num_cpus_per_env_runner` CPUs, `num_gpus_per_env_runner` GPUs + `env_runner_resources`;
- each remote learner: `num_gpus_per_learner` GPUs, 1 CPU when it has no GPU and 0 when it has one
  (RLlib's `num_cpus_per_learner="auto"`), + `learner_resources`;
- with `num_learners=0` the learner lives in the driver: nothing is reserved, but a GPU learner
  needs a GPU on the driver's node;
- the discriminator actor: `disc_num_cpus` CPUs, `disc_num_gpus` GPUs + `disc_resources`;
- for `maskgan serve` (`serving_demands`), each replica: `serve.num_cpus_per_replica` CPUs,
  `serve.num_gpus_per_replica` GPUs + `serve.replica_resources` (else `serve.run` waits forever).
The checks are necessary conditions only (totals suffice, and every single actor fits on some
node), so a raised error is always real; a config that passes can still queue behind other jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from maskgan_rl.config import Config, ResourcesConfig, ServeConfig
from maskgan_rl.errors import ConfigError
from maskgan_rl.models.discriminator import discriminator_model_config

# Ray stores resources in units of 1e-4; comparisons allow for float rounding below that.
_EPS = 1e-6


@dataclass(frozen=True)
class Demand:
    """`count` identical actors, each needing `bundle` on a single node."""

    what: str  # "env runner", "learner", ...: used in messages
    count: int
    bundle: dict[str, float]
    # resource name -> the config key that sets it, e.g. "GPU" -> "resources.num_gpus_per_learner"
    keys: dict[str, str]
    count_key: Optional[str] = None  # the key that sets `count`, e.g. "resources.num_env_runners"
    # Runs inside the driver process: Ray reserves nothing for it, but the driver's node must have it.
    in_driver: bool = False


def demands_of(r: ResourcesConfig) -> list[Demand]:
    """What a run with these resources settings asks the cluster for."""
    demands: list[Demand] = []
    if r.num_env_runners > 0:
        demands.append(
            _demand(
                "env runner",
                r.num_env_runners,
                {
                    "CPU": (r.num_cpus_per_env_runner, "resources.num_cpus_per_env_runner"),
                    "GPU": (r.num_gpus_per_env_runner, "resources.num_gpus_per_env_runner"),
                },
                r.env_runner_resources,
                "resources.env_runner_resources",
                count_key="resources.num_env_runners",
            )
        )
    if r.num_learners > 0:
        # RLlib's num_cpus_per_learner="auto": 1 CPU for a CPU learner, none for a GPU learner.
        learner_cpus = 1.0 if r.num_gpus_per_learner == 0 else 0.0
        demands.append(
            _demand(
                "learner",
                r.num_learners,
                {
                    "CPU": (learner_cpus, "resources.num_learners"),
                    "GPU": (r.num_gpus_per_learner, "resources.num_gpus_per_learner"),
                },
                r.learner_resources,
                "resources.learner_resources",
                count_key="resources.num_learners",
            )
        )
    else:
        if r.learner_resources:
            # RLlib ignores custom learner resources without learner actors: the learner would
            # silently run in the driver instead of on the node the user meant to pin it to.
            raise ConfigError(
                f"resources.learner_resources={dict(r.learner_resources)} only places learner actors, but "
                "resources.num_learners=0 runs the learner in the driver: set resources.num_learners=1 "
                "or resources.learner_resources={}"
            )
        if r.num_gpus_per_learner > 0:
            demands.append(
                _demand(
                    "driver-side learner (resources.num_learners=0)",
                    1,
                    {"GPU": (r.num_gpus_per_learner, "resources.num_gpus_per_learner")},
                    {},
                    "",
                    in_driver=True,
                )
            )
    demands.append(
        _demand(
            "discriminator actor",
            1,
            {
                "CPU": (r.disc_num_cpus, "resources.disc_num_cpus"),
                "GPU": (r.disc_num_gpus, "resources.disc_num_gpus"),
            },
            r.disc_resources,
            "resources.disc_resources",
        )
    )
    return demands


def serving_demands(s: ServeConfig) -> list[Demand]:
    """What `maskgan serve` asks the cluster for: its replicas (Serve's controller and proxies ask for no CPU)."""
    builtin = {
        "CPU": (s.num_cpus_per_replica, "serve.num_cpus_per_replica"),
        "GPU": (s.num_gpus_per_replica, "serve.num_gpus_per_replica"),
    }
    return [_demand("serve replica", s.replicas, builtin, s.replica_resources, "serve.replica_resources", count_key="serve.replicas")]


def shortfalls(
    demands: Sequence[Demand],
    nodes: Sequence[Mapping[str, float]],
    driver_node: Optional[Mapping[str, float]] = None,
) -> list[str]:
    """Every way the demands cannot be met by `nodes` (each node's total resources); [] if none.

    `driver_node` is the resources of the node the driver runs on (None: not known, skip that check).
    """
    problems: list[str] = []
    totals: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.items():
            totals[name] = totals.get(name, 0.0) + amount

    missing_everywhere: set[str] = set()
    for d in demands:
        absent = [name for name in d.bundle if totals.get(name, 0.0) <= _EPS]
        for name in absent:
            missing_everywhere.add(name)
            problems.append(_absent_message(d, name))
        if absent:
            continue
        if d.in_driver:
            if driver_node is not None and not _fits(d.bundle, driver_node):
                problems.append(_driver_message(d, driver_node))
        elif not any(_fits(d.bundle, node) for node in nodes):
            problems.append(_no_single_node_message(d, nodes))

    needed: dict[str, list[Demand]] = {}
    for d in demands:
        if not d.in_driver:
            for name in d.bundle:
                needed.setdefault(name, []).append(d)
    for name, users in needed.items():
        if name in missing_everywhere:
            continue  # already reported, more precisely
        total_needed = sum(d.count * d.bundle[name] for d in users)
        if total_needed > totals.get(name, 0.0) + _EPS:
            problems.append(_total_message(name, users, total_needed, totals.get(name, 0.0)))
    return problems


def check_cluster_resources(cfg: Config) -> dict[str, float]:
    """Raise ConfigError if the connected Ray cluster cannot host this run; call after `ray.init`.
    Returns the resources of the driver's node, as `check_cluster_can_host` does."""
    return check_cluster_can_host(demands_of(cfg.resources))


def check_cluster_can_host(demands: Sequence[Demand]) -> dict[str, float]:
    """Raise ConfigError naming what is missing if the connected Ray cluster cannot host `demands`.
    Returns the resources of the driver's node ({} if Ray does not list it), for `unused_gpu_hint`."""
    nodes, driver_node = _cluster_nodes()
    problems = shortfalls(demands, nodes, driver_node)
    if problems:
        raise ConfigError(f"the Ray cluster cannot run this config: {'; '.join(problems)}")
    return driver_node or {}


def _cluster_nodes() -> tuple[list[dict[str, float]], Optional[dict[str, float]]]:
    """The resources of the connected Ray cluster's live nodes, and of the driver's node among them."""
    import ray  # only needed against a live cluster; the comparisons here are testable without it

    alive = [n for n in ray.nodes() if n.get("Alive")]
    driver_id = ray.get_runtime_context().get_node_id()
    driver_node = next((dict(n["Resources"]) for n in alive if n["NodeID"] == driver_id), None)
    return [dict(n["Resources"]) for n in alive], driver_node


# The layout measured fastest on one GPU (benchmarks/README.md, "Issue 20 on a GPU"): the learner in the driver,
# D and one remote env runner share the GPU (RLlib's local env runner cannot sample on one).
ONE_GPU_LAYOUT = (
    "resources.num_gpus_per_learner=1", "resources.num_env_runners=1",
    "resources.num_gpus_per_env_runner=0.5", "resources.disc_num_gpus=0.5",
)


def unused_gpu_hint(cfg: Config, driver_node: Mapping[str, float]) -> Optional[str]:
    """A line for the run's log when the driver's node has a GPU that no part of the adversarial stage
    asks for (unless device=cpu says the run means to stay on CPUs); None otherwise."""
    r, gpus = cfg.resources, driver_node.get("GPU", 0.0)
    if gpus < 1 or cfg.device == "cpu" or r.num_gpus_per_learner or r.num_gpus_per_env_runner or r.disc_num_gpus:
        return None
    return (f"this node has {_num(gpus)} GPU(s) and the adversarial stage runs on its CPUs (resources.*); "
            f"the fastest layout measured on one GPU: {' '.join(ONE_GPU_LAYOUT)}")


def _demand(
    what: str,
    count: int,
    builtin: dict[str, tuple[float, str]],
    custom: Mapping[str, float],
    custom_key: str,
    **kwargs,
) -> Demand:
    """`builtin` maps CPU/GPU to (amount, the key that sets it); `custom` comes from one dict key."""
    # Zero amounts ask for nothing: dropping them keeps "needs 0 GPUs" out of every message.
    bundle = {name: float(amount) for name, (amount, _) in builtin.items() if amount > 0}
    keys = {name: key for name, (amount, key) in builtin.items() if amount > 0}
    for name, amount in custom.items():
        if amount > 0:
            bundle[name] = float(amount)
            keys[name] = custom_key
    return Demand(what, count, bundle, keys, **kwargs)


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(name, 0.0) + _EPS >= amount for name, amount in bundle.items())


def _num(x: float) -> str:
    return f"{x:g}"


def _absent_message(d: Demand, name: str) -> str:
    key, amount = d.keys[name], _num(d.bundle[name])
    if name == "GPU":
        return f"{key}={amount} asks for a GPU for the {d.what} but the cluster has none: set {key}=0 or add a GPU node"
    if name == "CPU":
        return f"the {d.what} needs {amount} CPU ({key}) but the cluster has no CPUs: add a node with CPUs"
    return (
        f"{key} asks for custom resource {name!r} for the {d.what} but no node declares it: "
        f"remove {name!r} from {key} or start a node with --resources='{{\"{name}\": 1}}' "
        "(in a cluster YAML: under the node type's resources)"
    )


def _driver_message(d: Demand, driver_node: Mapping[str, float]) -> str:
    key = d.keys["GPU"]
    return (
        f"{key}={_num(d.bundle['GPU'])} with resources.num_learners=0 runs the learner in the driver, "
        f"whose node has {_num(driver_node.get('GPU', 0.0))} GPUs: set resources.num_learners=1 so the "
        f"learner runs as an actor on a GPU node, or set {key}=0"
    )


def _no_single_node_message(d: Demand, nodes: Sequence[Mapping[str, float]]) -> str:
    wanted = ", ".join(f"{name}={_num(v)}" for name, v in d.bundle.items())
    largest = ", ".join(f"{name}={_num(max(n.get(name, 0.0) for n in nodes))}" for name in d.bundle)
    keys = ", ".join(dict.fromkeys(d.keys.values()))
    return (
        f"one {d.what} needs {wanted} on a single node but no node has all of that "
        f"(most on any node: {largest}): lower {keys} or add a bigger node"
    )


def _total_message(name: str, users: Sequence[Demand], needed: float, have: float) -> str:
    parts = [f"{d.count} {d.what}(s) x {_num(d.bundle[name])}" for d in users]
    keys = dict.fromkeys(k for d in users for k in (d.count_key, d.keys[name]) if k)
    return (
        f"{' + '.join(parts)} = {_num(needed)} {name} but the cluster has {_num(have)}: "
        f"lower {', '.join(keys)} or add nodes"
    )


# ------------------------------------------------------------------------------ torch threads


@dataclass(frozen=True)
class ThreadShare:
    """How one process of the adversarial stage picks its torch threads (`threads()`, called in that
    process): resources.torch_threads where set; else, for networks of at least PARALLEL_MIN_HIDDEN
    units, the larger of the CPUs Ray reserved for it and its share of its node's CPUs among the
    job's processes that compute at the same time; for smaller ones, one thread (their ops are too
    small for threads to pay: measured in benchmarks/README.md).

    Processes that take turns (sampling, then learning, then D, in a synchronous algorithm) may each
    use the whole node while the others wait: pinned to their reservation instead, every phase of a
    one-machine run would use one core (benchmarks/README.md). Processes that compute at once split
    the node, as threads spinning on the same cores slow each other down. `concurrent` assumes the
    job's processes share one node, so on a multi-node cluster the share errs low, never high.
    Plain data: it travels to env runners and learners in their configs."""

    fixed: Optional[int]  # resources.torch_threads
    reserved: float  # the CPUs Ray reserves for the process (0 for the driver)
    concurrent: int  # the job's processes computing while this one does, itself included
    parallel: bool  # its networks are large enough for several threads

    def threads(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if not self.parallel:
            return 1
        return max(1, int(self.reserved), node_cpus() // self.concurrent)


PARALLEL_MIN_HIDDEN = 256


def thread_shares(cfg: Config) -> dict[str, ThreadShare]:
    """ThreadShare per process role of the adversarial stage: "driver" (its local env runner when
    resources.num_env_runners=0, its local learner when resources.num_learners=0), "env_runner",
    "learner" (remote ones) and "discriminator" (the D actor)."""
    r, g = cfg.resources, cfg.gan
    samplers, learners = max(r.num_env_runners, 1), max(r.num_learners, 1)  # 0 remote: the driver does it
    overlap = int(g.disc_overlap)  # D's update runs alongside sampling and learning
    if g.algo in ("appo", "impala"):  # asynchronous: sampling and learning run at once
        everyone = samplers + learners - int(r.num_env_runners == 0 and r.num_learners == 0) + overlap
        concurrent = {"driver": everyone, "env_runner": everyone, "learner": everyone, "discriminator": everyone}
    else:  # synchronous: sample, learn, D (REINFORCE overlaps D and the learner; their threads: benchmarks/README.md)
        concurrent = {
            "driver": 1 + overlap,
            "env_runner": samplers + overlap,
            "learner": learners + overlap,
            "discriminator": 1 + overlap * max(samplers, learners),
        }
    reserved = {"driver": 0.0, "env_runner": r.num_cpus_per_env_runner, "learner": 1.0 if r.num_gpus_per_learner == 0 else 0.0,
                "discriminator": r.disc_num_cpus}
    # Env runners run the generator and D, the driver and learners the generator and critic, the actor D.
    generator, disc = cfg.model.hidden, discriminator_model_config(cfg).hidden
    hidden = {"driver": max(generator, disc), "env_runner": max(generator, disc), "learner": generator, "discriminator": disc}
    return {role: ThreadShare(r.torch_threads, reserved[role], n, hidden[role] >= PARALLEL_MIN_HIDDEN) for role, n in concurrent.items()}


def node_cpus() -> int:
    """The CPUs of this process's node that Ray counts, at most the cores this process may run on
    (a local Ray may claim more CPUs than the machine has); without Ray, those cores."""
    cores = len(os.sched_getaffinity(0))
    import ray  # (only for the lookup; the rest of this module is plain data)

    if ray.is_initialized():
        node = ray.get_runtime_context().get_node_id()
        for n in ray.nodes():
            if n["NodeID"] == node and n.get("Alive"):
                return max(1, min(cores, int(n["Resources"].get("CPU", cores))))
    return cores


def set_actor_threads(share: ThreadShare) -> None:
    """In a Ray actor (a remote env runner, learner or D), torch's threads from `share`; in the driver
    nothing (it chooses its own once its local env runner and learner are built)."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        import torch

        torch.set_num_threads(share.threads())
