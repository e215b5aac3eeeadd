"""launch/: the cluster files agree with the config, and a real two-node Ray cluster on this machine
runs a job submitted the way a user submits one to a remote cluster.

Two `ray start` nodes (1 CPU each, token auth, dashboard on loopback) take a `maskgan train` job
submitted through launch/submit.py. The test checks that the two env runners ran one per node, that
the discriminator actor ran, that the MLflow run holds the metrics, that a job asking for a GPU
the cluster lacks fails fast with a message naming the key, and that stopping the cluster leaves
no process behind.

No shared file system: where it can (root, `unshare`), the second node runs in a mount namespace of
its own with a tmpfs over this test session's temp folder, so the job's run_dir, on the head, does
not exist there: one env runner and the discriminator actor (which also pretrains there) run on that
node and must get the prepared windows through Ray's object store.

Isolation from every other Ray on the machine (the session's `ray.init`, other test runs): free
ports, a temp dir of its own, a fresh auth token in the environment (never ~/.ray/auth_token),
and no `ray.init` in this process: everything talks to the cluster through subprocesses. Each node
is started in a session of its own, which its daemons and workers keep, so `stop` kills exactly
this cluster's processes (`ray stop` would kill every Ray on the machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from maskgan_rl.config import load_config
from maskgan_rl.resources import demands_of, shortfalls

from processes import cmdline, free_port, process_table, send_signal, session_processes

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
SUBMIT = LAUNCH / "submit.py"
BIN = Path(sys.executable).parent  # the venv's: its `ray` starts the nodes, its `python` runs the job

# Tiny training (see test_adversarial): seconds of pretraining, two adversarial iterations.
TINY = [
    "data.oracle_vocab=30", "data.oracle_hidden=8", "data.synthetic_train=200", "data.synthetic_valid=40",
    "data.synthetic_test=40", "data.seq_len=8", "model.embed=8", "model.hidden=8", "pretrain.lm_steps=10",
    "pretrain.mle_steps=10", "pretrain.batch_size=16", "pretrain.eval_every=5", "pretrain.eval_batches=1",
    "gan.iterations=2", "gan.eval_every=1", "gan.checkpoint_every=1", "gan.episodes_per_iteration=16",
    "gan.disc_batch_size=16", "resources.num_envs_per_env_runner=4",
]
# One env runner per node: each node declares one "runner_slot" and each runner takes a whole one.
# Half a CPU each for runner and discriminator, so both fit the second node's single CPU.
PLACEMENT = [
    "resources.num_env_runners=2", "resources.num_cpus_per_env_runner=0.5",
    "resources.env_runner_resources={runner_slot: 1}", "resources.disc_num_cpus=0.5",
    "resources.disc_resources={node2: 1}",
]
JOB_TIMEOUT_S = 420  # a deadline, not a speed check: on a loaded 2-core machine a tiny job takes minutes
FAIL_FAST_S = 60


def placement(name: str) -> list[str]:
    """The overrides of launch/placement-<name>.args (what `submit.py @FILE` reads)."""
    return (LAUNCH / f"placement-{name}.args").read_text().split("\n")[:-1]


@pytest.mark.parametrize("name", ["aws", "onprem"])
def test_cluster_yamls_pass_rays_checks(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(yaml.safe_load((LAUNCH / f"cluster-{name}.yaml").read_text())))


def test_aws_placement_fits_the_nodes_it_declares():
    cluster = yaml.safe_load((LAUNCH / "cluster-aws.yaml").read_text())
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]["resources"]
    workers = [t["resources"] for name, t in types.items() if name != cluster["head_node_type"] for _ in range(t["min_workers"])]
    demands = demands_of(load_config("ptb", placement("aws")).resources)
    assert shortfalls(demands, [head, *workers], driver_node=head) == []
    # Env runners only on CPU workers, learner and discriminator only on the GPU head.
    assert "cpu_node" in demands[0].bundle and "cpu_node" not in head
    assert all("gpu_node" in d.bundle for d in demands[1:]) and all("gpu_node" not in w for w in workers)


def test_onprem_placement_names_resources_the_hosts_declare():
    cluster = yaml.safe_load((LAUNCH / "cluster-onprem.yaml").read_text())
    start = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    custom = {name for d in demands_of(load_config("ptb", placement("onprem")).resources) for name in d.bundle} - {"CPU", "GPU"}
    assert custom == {"cpu_node", "gpu_node"}
    for name in custom:
        assert f'{{"{name}": 1}}' in start


def test_kuberay_entrypoint_fits_the_pods_it_declares():
    job = yaml.safe_load((LAUNCH / "kuberay-rayjob.yaml").read_text())["spec"]
    words = shlex.split(job["entrypoint"])
    assert words[:4] == ["python", "-m", "maskgan_rl.cli", "train"] and words[4] == "--preset"
    # A retry (a preempted pod, a dead driver) continues the run instead of failing on its checkpoints.
    assert words[6:8] == ["--resume", "auto"] and job["backoffLimit"] > 0
    cfg = load_config(words[5], words[8:])
    cluster = job["rayClusterSpec"]
    head = {"CPU": float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"])}
    nodes = [head]
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        # KubeRay's form for --resources: a JSON object inside a quoted string.
        custom = json.loads(json.loads(group["rayStartParams"]["resources"]))
        node = {"CPU": float(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0)), **custom}
        nodes += [node] * group["minReplicas"]
    assert shortfalls(demands_of(cfg.resources), nodes, driver_node=head) == []
    assert cfg.run_dir.startswith("/mnt/maskgan/")  # on the shared volume every pod mounts


def test_submit_reads_the_token_from_env_before_file(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("submit", SUBMIT)  # a script, not a package module
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    token_file = tmp_path / "auth_token"
    token_file.write_text("from-file\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert submit.read_token(str(token_file)) == "from-file"
    assert submit.read_token(str(tmp_path / "missing")) is None
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.read_token(str(token_file)) == "from-env"
    # Overrides reach `maskgan train` word for word, dicts included.
    args = submit._parser().parse_args(["submit", "--preset", "ptb", "--resume", f"@{LAUNCH / 'placement-aws.args'}", "a.b=1"])
    assert submit.entrypoint(args.preset, args.resume, args.overrides) == [
        "python", "-m", "maskgan_rl.cli", "train", "--preset", "ptb", "--resume", "auto", *placement("aws"), "a.b=1"]


def can_hide_paths() -> bool:
    """Whether this process may give a node a mount namespace with a folder hidden (root and unshare)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


class LocalCluster:
    """Head + one worker node started with `ray start`, each in its own session.

    `hidden_on_node2`: a folder the second node cannot see (an empty tmpfs over it in a mount
    namespace of its own), as a machine without the head's file system would not."""

    def __init__(self, root: Path, hidden_on_node2: Path | None = None):
        self.root = root
        self.hidden_on_node2 = hidden_on_node2
        # Unix socket paths live under the temp dir and must stay short (about 100 characters).
        # One temp dir per node, as on separate machines: nodes sharing one also share the unpacked
        # working_dir, and the first node to drop the job's last worker deletes it under the other.
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="rc", dir="/tmp")) for _ in range(2)]
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.token = secrets.token_hex(32)
        self.sessions: list[int] = []  # session ids of the two `ray start` processes
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH"))}
        env.update(
            RAY_AUTH_MODE="token",  # the worker node must know too, else the head refuses it
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is the venv's
        )
        self.env = env

    def start(self) -> None:
        def common(temp_dir: Path) -> list[str]:
            # Two CPU-only machines, even where this one has a GPU: the fail-fast test needs a cluster without one.
            return ["--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                    f"--dashboard-agent-listen-port={free_port()}"]

        self._ray_start(
            "head", "--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
            '--resources={"head": 1, "runner_slot": 1}', *common(self.temp_dirs[0]),
        )
        node2 = []
        if self.hidden_on_node2 is not None:  # `ray start`, and the daemons it leaves, see an empty folder there
            node2 = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     'mount -t tmpfs hidden "$0" && exec "$@"', str(self.hidden_on_node2)]
        self._ray_start("node2", f"--address=127.0.0.1:{self.port}", '--resources={"node2": 1, "runner_slot": 1}',
                        *common(self.temp_dirs[1]), prefix=node2)

    def _ray_start(self, name: str, *args: str, prefix: list[str] = ()) -> None:
        with open(self.root / f"ray-start-{name}.log", "w") as log:
            process = subprocess.Popen([*prefix, str(BIN / "ray"), "start", *args], env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.sessions.append(process.pid)  # a new session's id is its leader's pid
            assert process.wait(timeout=120) == 0, (self.root / f"ray-start-{name}.log").read_text()[-3000:]

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process of this cluster: the nodes' sessions, plus
        anything started from them in a session of its own (job entrypoints)."""
        return session_processes(self.sessions)

    def node2_sees(self, path: Path) -> bool:
        """Whether `path` exists for the second node's raylet (in its mount namespace)."""
        table = process_table()
        raylet = next(pid for pid, (_, sid, _) in table.items() if sid == self.sessions[1] and "raylet" in cmdline(pid))
        return subprocess.run(["nsenter", f"--target={raylet}", "--mount", "--", "test", "-e", str(path)]).returncode == 0

    def stop(self) -> dict[int, str]:
        """`ray stop --force` for this cluster only; returns what is still alive afterwards."""
        for pid in self.processes():
            send_signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return left

    def leftovers(self) -> dict[int, str]:
        """Live processes of this cluster, found two ways: by session, and (independently of how
        `processes` tracks them) by this cluster's temp dirs on their command line (gcs, raylets...)."""
        found = self.processes()
        for pid, (_, _, state) in process_table().items():
            command = cmdline(pid)
            if state != "Z" and any(str(temp_dir) in command for temp_dir in self.temp_dirs):
                found[pid] = command
        return found

    def run(self, *args: str, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
        """A command with this cluster's token in its environment (as a user's shell would have it)."""
        return subprocess.run(list(args), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def submit(self, *args: str, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
        return self.run(sys.executable, str(SUBMIT), *args, timeout=timeout)

    def state(self, kind: str) -> list[dict]:
        """`ray list nodes|actors`: the state API keeps dead actors, so finished jobs' actors show too."""
        out = self.run(str(BIN / "ray"), "list", kind, "--address", self.address, "--format", "json",
                       "--detail", "--limit", "10000", timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not Path("/proc/self/stat").exists():
        pytest.skip("finding this cluster's processes needs /proc (Linux)")
    hidden = tmp_path_factory.getbasetemp() if can_hide_paths() else None  # every test's tmp_path
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), hidden_on_node2=hidden)
    try:
        cluster.start()
        programs = [command.split()[0].rsplit("/", 1)[-1] for command in cluster.leftovers().values()]
        # Else "nothing left after the stop" below would prove nothing.
        assert programs.count("gcs_server") == 1 and programs.count("raylet") == 2, programs
        yield cluster
    finally:
        left = cluster.stop()
    assert not left, f"processes of the test cluster survived the stop: {left}"


@pytest.mark.slow
def test_training_job_uses_both_nodes_without_shared_files(cluster, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    if cluster.hidden_on_node2 is None:
        pytest.skip("hiding run_dir from the second node needs root and unshare --mount")
    assert not cluster.node2_sees(tmp_path)  # else the test below would prove nothing
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_id = f"maskgan-test-{secrets.token_hex(4)}"
    start = time.monotonic()
    out = cluster.submit(
        "--address", cluster.address, "--preset", "synthetic", "--submission-id", job_id,
        *TINY, *PLACEMENT, "gan.disc_pretrain_steps=2", f"run_dir={tmp_path / 'run'}", f"tracking.tracking_uri={tracking}",
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 0, f"job failed after {elapsed:.0f} s:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}"
    assert "[gan]" in out.stdout  # the job's own output was streamed back
    assert cluster.submit("wait", job_id, "--address", cluster.address, "--poll", "0.5").returncode == 0

    node_of = {name: n["node_id"] for n in cluster.state("nodes") for name in ("head", "node2")
               if name in n["resources_total"]}
    assert len(node_of) == 2
    job_actors = [a for a in cluster.state("actors") if a.get("job_id") and a["class_name"] != "JobSupervisor"]
    runners = [a for a in job_actors if "EnvRunner" in a["class_name"]]
    assert {a["node_id"] for a in runners} == {node_of["head"], node_of["node2"]}, runners
    discriminator = [a for a in job_actors if a["class_name"] == "DiscriminatorTrainer"]
    assert len(discriminator) == 1 and discriminator[0]["node_id"] == node_of["node2"]
    # The driver prepared the data and wrote the checkpoints on the head; the second node never saw
    # them (its D actor saved its own state there, on that node: discriminator_actor.pt).
    for name in ("data/train.parquet", "checkpoints/mle.pt", "checkpoints/maskgan.pt"):
        assert (tmp_path / "run" / name).is_file() and not cluster.node2_sees(tmp_path / "run" / name), name
    assert cluster.node2_sees(tmp_path / "run" / "discriminator_actor.pt")

    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags["maskgan.command"] for r in runs] == ["train"]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["resources.num_env_runners"] == "2"
    for key in ("gan/disc_loss", "gan/masked_tokens", "gan/episode_reward_mean"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "gan/masked_tokens"))
    mlflow.set_tracking_uri(None)  # nothing else in this process should write to the test's store


@pytest.mark.slow
def test_gpu_learner_fails_fast_with_the_key_to_change(cluster, tmp_path):
    job_id = f"maskgan-gpu-{secrets.token_hex(4)}"
    start = time.monotonic()
    out = cluster.submit(
        "--address", cluster.address, "--no-wait", "--submission-id", job_id, *TINY, *PLACEMENT,
        "resources.num_learners=1", "resources.num_gpus_per_learner=1", f"run_dir={tmp_path / 'run'}",
        "tracking.enabled=false",
    )
    assert out.returncode == 0 and out.stdout.strip() == job_id, out.stderr
    waited = cluster.submit("wait", job_id, "--address", cluster.address, "--poll", "0.5", "--timeout", str(FAIL_FAST_S))
    elapsed = time.monotonic() - start
    assert waited.returncode == 1 and f"{job_id}: FAILED" in waited.stderr, waited.stderr
    assert elapsed < FAIL_FAST_S
    logs = cluster.submit("logs", job_id, "--address", cluster.address)
    assert (
        "resources.num_gpus_per_learner=1 asks for a GPU for the learner but the cluster has none: "
        "set resources.num_gpus_per_learner=0 or add a GPU node"
    ) in logs.stdout, logs.stdout[-3000:]
    status = cluster.submit("status", job_id, "--address", cluster.address)
    assert status.returncode == 0 and status.stdout == "FAILED\n"
    assert "exit code 2" in status.stderr  # the CLI's exit status for a MaskGANError
