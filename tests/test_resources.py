"""check_cluster_resources: what a config asks of the cluster, and the messages when it cannot have it."""

import pytest

from maskgan_rl.config import load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.resources import (
    ONE_GPU_LAYOUT, ThreadShare, check_cluster_resources, demands_of, node_cpus, shortfalls, thread_shares, unused_gpu_hint,
)

CPU_NODE = {"CPU": 4.0, "memory": 8e9}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "gpu_node": 1.0}


def problems(overrides: list[str], nodes: list[dict], driver_node: dict | None = None) -> list[str]:
    return shortfalls(demands_of(load_config("synthetic", overrides).resources), nodes, driver_node)


def test_defaults_fit_a_laptop():
    # Driver-side runner and learner, one discriminator CPU: a 2-core local Ray is enough.
    assert problems([], [{"CPU": 2.0}], {"CPU": 2.0}) == []


def test_demands_follow_rllib_bundles():
    r = load_config(
        "synthetic",
        ["resources.num_env_runners=3", "resources.num_cpus_per_env_runner=0.5", "resources.num_learners=2",
         "resources.num_gpus_per_learner=1", "resources.disc_num_gpus=0.5", "resources.env_runner_resources={cpu_node: 0.01}"],
    ).resources
    runners, learners, disc = demands_of(r)
    assert (runners.count, runners.bundle) == (3, {"CPU": 0.5, "cpu_node": 0.01})
    assert runners.keys["cpu_node"] == "resources.env_runner_resources"
    # A GPU learner gets no CPU (RLlib's num_cpus_per_learner="auto"); a CPU learner gets one.
    assert (learners.count, learners.bundle) == (2, {"GPU": 1.0})
    assert demands_of(load_config("synthetic", ["resources.num_learners=1"]).resources)[0].bundle == {"CPU": 1.0}
    assert (disc.count, disc.bundle) == (1, {"CPU": 1.0, "GPU": 0.5})


def test_env_runners_on_gpus_ask_for_them_and_name_the_key():
    overrides = ["resources.num_env_runners=2", "resources.num_gpus_per_env_runner=0.25"]
    runners = demands_of(load_config("synthetic", overrides).resources)[0]
    assert (runners.count, runners.bundle) == (2, {"CPU": 1.0, "GPU": 0.25})
    found = problems(overrides, [CPU_NODE, CPU_NODE])
    assert len(found) == 1 and found[0].startswith("resources.num_gpus_per_env_runner=0.25 asks for a GPU")
    assert problems(overrides, [CPU_NODE, GPU_NODE]) == []


def test_gpu_learner_on_a_cluster_without_gpus():
    found = problems(["resources.num_learners=1", "resources.num_gpus_per_learner=1"], [CPU_NODE, CPU_NODE])
    assert found == [
        "resources.num_gpus_per_learner=1 asks for a GPU for the learner but the cluster has none: "
        "set resources.num_gpus_per_learner=0 or add a GPU node"
    ]


def test_driver_side_gpu_learner_needs_a_gpu_on_the_driver_node():
    overrides = ["resources.num_gpus_per_learner=1"]  # num_learners=0: the learner is the driver
    found = problems(overrides, [CPU_NODE, GPU_NODE], driver_node=CPU_NODE)
    assert len(found) == 1 and "runs the learner in the driver" in found[0]
    assert "set resources.num_learners=1" in found[0]
    assert problems(overrides, [CPU_NODE, GPU_NODE], driver_node=GPU_NODE) == []


def test_a_gpu_no_part_uses_is_pointed_out_with_a_layout_that_fits_one():
    hint = unused_gpu_hint(load_config("synthetic", []), GPU_NODE)
    assert hint is not None and hint.startswith("this node has 1 GPU(s)") and hint.endswith(" ".join(ONE_GPU_LAYOUT))
    # The layout it suggests fits a node with one GPU, the learner included (it runs in the driver there).
    assert problems(list(ONE_GPU_LAYOUT), [GPU_NODE], driver_node=GPU_NODE) == []
    assert unused_gpu_hint(load_config("synthetic", []), CPU_NODE) is None
    assert unused_gpu_hint(load_config("synthetic", ["device=cpu"]), GPU_NODE) is None  # staying on CPUs on purpose
    for key in ("num_gpus_per_learner=1", "disc_num_gpus=1"):
        assert unused_gpu_hint(load_config("synthetic", [f"resources.{key}"]), GPU_NODE) is None


def test_custom_resource_no_node_declares():
    found = problems(["resources.num_env_runners=2", "resources.env_runner_resources={cpu_node: 0.01}"], [GPU_NODE])
    assert len(found) == 1
    assert "resources.env_runner_resources asks for custom resource 'cpu_node'" in found[0]
    assert "remove 'cpu_node' from resources.env_runner_resources" in found[0]


def test_total_cpus_name_every_key_that_adds_to_them():
    found = problems(["resources.num_env_runners=4", "resources.num_learners=1"], [{"CPU": 2.0}, {"CPU": 2.0}])
    assert found == [
        "4 env runner(s) x 1 + 1 learner(s) x 1 + 1 discriminator actor(s) x 1 = 6 CPU but the cluster has 4: "
        "lower resources.num_env_runners, resources.num_cpus_per_env_runner, resources.num_learners, "
        "resources.disc_num_cpus or add nodes"
    ]


def test_a_bundle_must_fit_on_one_node():
    # 4 CPUs in total, but no single node can host a 3-CPU env runner.
    found = problems(["resources.num_env_runners=1", "resources.num_cpus_per_env_runner=3", "resources.disc_num_cpus=0"],
                     [{"CPU": 2.0}, {"CPU": 2.0}])
    assert found == [
        "one env runner needs CPU=3 on a single node but no node has all of that (most on any node: CPU=2): "
        "lower resources.num_cpus_per_env_runner or add a bigger node"
    ]
    # GPU and marker on different nodes: each exists, never together.
    found = problems(["resources.num_learners=1", "resources.num_gpus_per_learner=1",
                      "resources.learner_resources={cpu_node: 0.01}"], [{"CPU": 4.0, "cpu_node": 1.0}, GPU_NODE])
    assert len(found) == 1 and found[0].startswith("one learner needs GPU=1, cpu_node=0.01 on a single node")


def test_pinned_runners_fill_their_slots():
    # One runner slot per node: two runners fit on two nodes, three do not.
    nodes = [{"CPU": 1.0, "runner_slot": 1.0}, {"CPU": 1.0, "runner_slot": 1.0}]
    base = ["resources.num_cpus_per_env_runner=0.25", "resources.disc_num_cpus=0.25", "resources.env_runner_resources={runner_slot: 1}"]
    assert problems(base + ["resources.num_env_runners=2"], nodes) == []
    found = problems(base + ["resources.num_env_runners=3"], nodes)
    assert len(found) == 1 and found[0].startswith("3 env runner(s) x 1 = 3 runner_slot but the cluster has 2")


def test_learner_resources_without_learner_actors_is_an_error():
    with pytest.raises(ConfigError, match=r"resources.num_learners=0 runs the learner in the driver: set resources.num_learners=1"):
        demands_of(load_config("synthetic", ["resources.learner_resources={gpu_node: 0.01}"]).resources)


def test_against_a_live_local_ray(ray_session):
    # The session's Ray has 2 CPUs and no GPU.
    check_cluster_resources(load_config("synthetic", ["resources.num_env_runners=1"]))
    with pytest.raises(ConfigError, match=r"resources.disc_num_gpus=1 asks for a GPU .* but the cluster has none"):
        check_cluster_resources(load_config("synthetic", ["resources.disc_num_gpus=1"]))
    with pytest.raises(ConfigError, match=r"num_gpus_per_learner=1 asks for a GPU for the driver-side learner"):
        check_cluster_resources(load_config("synthetic", ["resources.num_gpus_per_learner=1"]))


def test_train_refuses_a_config_the_cluster_cannot_place_before_pretraining(ray_session, tmp_path, capsys):
    from maskgan_rl.cli import main

    run_dir = tmp_path / "run"
    settings = [f"run_dir={run_dir}", "data.synthetic_train=100", "data.synthetic_valid=20", "data.synthetic_test=20",
                "tracking.enabled=false", "resources.disc_num_gpus=1"]
    assert main(["train", *settings]) == 2
    assert "asks for a GPU" in capsys.readouterr().err
    assert not (run_dir / "checkpoints").exists()  # no pretraining spent on a run that cannot start


def concurrency(*overrides: str) -> dict[str, tuple[float, int]]:
    shares = thread_shares(load_config("synthetic", ["model.hidden=256", *overrides]))
    return {role: (share.reserved, share.concurrent) for role, share in shares.items()}


def test_processes_that_take_turns_each_get_the_node_and_those_that_compute_at_once_share_it():
    # role: (CPUs Ray reserves, processes computing at once, itself included)
    # Default: the driver samples and learns, then D trains alone: each may use every core.
    assert concurrency() == {"driver": (0.0, 1), "env_runner": (1.0, 1), "learner": (1.0, 1), "discriminator": (1.0, 1)}
    # Three runners sample together; the driver learns alone; D alone.
    assert concurrency("resources.num_env_runners=3")["env_runner"] == (1.0, 3)
    assert concurrency("resources.num_env_runners=3")["discriminator"] == (1.0, 1)
    # D's update overlapping sampling and learning: it shares the node with the larger of the two groups.
    overlap = concurrency("resources.num_env_runners=3", "resources.num_learners=2", "gan.disc_overlap=true")
    assert overlap == {"driver": (0.0, 2), "env_runner": (1.0, 4), "learner": (1.0, 3), "discriminator": (1.0, 4)}
    # Asynchronous algorithms sample and learn at once: 2 runners + the driver's learner + D.
    impala = concurrency("gan.algo=impala", "resources.num_env_runners=2", "gan.disc_overlap=true", "resources.disc_num_cpus=2")
    assert impala == {"driver": (0.0, 4), "env_runner": (1.0, 4), "learner": (1.0, 4), "discriminator": (2.0, 4)}
    # ... and with everything in the driver, the driver and D.
    assert concurrency("gan.algo=appo", "gan.disc_overlap=true")["driver"] == (0.0, 2)


def test_a_process_takes_the_larger_of_its_reservation_and_its_share_unless_threads_are_set():
    cores = node_cpus()  # no Ray here: this process's cores
    assert ThreadShare(None, 0.0, 1, parallel=True).threads() == cores
    assert ThreadShare(None, 0.0, 10 * cores, parallel=True).threads() == 1  # never 0
    assert ThreadShare(None, 3.0, 10 * cores, parallel=True).threads() == 3  # what Ray reserved for it
    assert ThreadShare(None, 3.0, 1, parallel=False).threads() == 1  # small networks: one thread
    assert ThreadShare(5, 0.0, 1, parallel=False).threads() == 5  # resources.torch_threads
    assert thread_shares(load_config("synthetic", ["resources.torch_threads=3"]))["env_runner"].threads() == 3


def test_only_processes_with_large_networks_use_several_threads():
    def parallel(*overrides: str) -> dict[str, bool]:
        return {role: s.parallel for role, s in thread_shares(load_config("synthetic", list(overrides))).items()}

    assert not any(parallel("model.hidden=128").values())
    assert all(parallel("model.hidden=650").values())
    # A large D alone: the processes that run it (env runners score with it, the driver's runner too) and its actor.
    assert parallel("model.hidden=128", "gan.disc_hidden=512") == {"driver": True, "env_runner": True, "learner": False, "discriminator": True}


def test_node_cpus_is_what_ray_counts_on_this_node_but_never_more_than_the_cores(ray_session, monkeypatch):
    import os

    import ray

    counted = int(ray.cluster_resources()["CPU"])  # the suite's local Ray
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))  # a larger machine
    assert node_cpus() == counted
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # a Ray that claims more CPUs than there are
    assert node_cpus() == 1


@pytest.mark.parametrize("runners, envs", [(0, 64), (1, 64), (3, 22)])
def test_each_env_runner_steps_its_share_of_an_iterations_windows_as_one_batch_by_default(runners, envs):
    from maskgan_rl.rl.algorithms import algorithm_config

    cfg = load_config("synthetic", ["gan.episodes_per_iteration=64", f"resources.num_env_runners={runners}"])
    assert algorithm_config(cfg, 10, {}, disc_actor=None).num_envs_per_env_runner == envs
    cfg = load_config("synthetic", ["resources.num_envs_per_env_runner=5", f"resources.num_env_runners={runners}"])
    assert algorithm_config(cfg, 10, {}, disc_actor=None).num_envs_per_env_runner == 5


def test_env_runners_on_gpus_reach_rllib():
    from maskgan_rl.rl.algorithms import algorithm_config

    cfg = load_config("synthetic", ["resources.num_env_runners=2", "resources.num_gpus_per_env_runner=0.5"])
    assert algorithm_config(cfg, 10, {}, disc_actor=None).num_gpus_per_env_runner == 0.5
    assert algorithm_config(load_config("synthetic", []), 10, {}, disc_actor=None).num_gpus_per_env_runner == 0
