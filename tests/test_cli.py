"""The command line's basics, run as a user runs them (subprocesses of this environment's Python):
--version, `python -m maskgan_rl`, exit status 2 for usage errors and 1 for runtime failures,
progress on stderr and results on stdout, and a Ray of its own beside an unrelated running cluster."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from maskgan_rl.config import load_config
from maskgan_rl.train import ray_address
from test_bad_input import tiny
from test_cluster import LocalCluster, free_port

MASKGAN = str(Path(sys.executable).with_name("maskgan"))  # the console script of this environment
MODULE = [sys.executable, "-m", "maskgan_rl"]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_version_is_the_installed_packages(tmp_path):
    expected = f"maskgan {metadata.version('maskgan-rl')}\n"
    for argv in ([MASKGAN, "--version"], [*MODULE, "--version"]):
        done = run(argv, tmp_path)
        assert (done.returncode, done.stdout) == (0, expected), done.stderr


def test_python_dash_m_is_the_same_command_line(tmp_path):
    done = run([*MODULE, "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: maskgan ")
    assert all(command in done.stdout for command in ("prepare", "pretrain", "train", "infill", "evaluate"))


def test_progress_goes_to_stderr_and_results_to_stdout(tmp_path):
    done = run([*MODULE, "prepare", *tiny(tmp_path / "run")], tmp_path)
    assert done.returncode == 0, done.stderr
    # stdout holds only the counts, one `key: value` per line, as a pipe would read them.
    counts = dict(line.split(": ") for line in done.stdout.splitlines())
    assert counts["train_windows"] == "200" and counts["valid_windows"] == "40"
    # Sampling the 280 synthetic sequences shows its progress on stderr.
    assert any(line.startswith("[data] 280/280 ") for line in done.stderr.splitlines()), done.stderr


def test_usage_errors_exit_2_and_runtime_failures_exit_1(tmp_path):
    run_dir = tmp_path / "run"
    # Usage errors: a bad option (argparse), a config value that cannot work (before anything runs).
    assert run([*MODULE, "prepare", "--no-such-option"], tmp_path).returncode == 2
    done = run([*MODULE, "train", *tiny(run_dir), "gan.algo=ppo", "gan.algo_params.clip=0.1"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("maskgan train: error: gan.algo_params.clip: PPOConfig")
    assert not run_dir.exists()  # refused before any work

    # A runtime failure: the run's own checkpoint, written by an earlier run, has since been damaged.
    assert run([*MODULE, "pretrain", *tiny(run_dir)], tmp_path).returncode == 0
    lm = run_dir / "checkpoints" / "lm.pt"
    lm.write_bytes(lm.read_bytes()[: lm.stat().st_size // 2])
    done = run([*MODULE, "pretrain", *tiny(run_dir)], tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    message = done.stderr.splitlines()[-1]
    assert message.startswith(f"maskgan pretrain: error: checkpoint {lm} cannot be read") and "delete it" in message


def test_the_ray_a_run_uses(monkeypatch):
    """resources.ray_address, else the cluster of a submitted job (Ray's job supervisor sets both
    variables for the entrypoint), else a local Ray; a RAY_ADDRESS alone is a shell's, not a job's."""
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(load_config()) == "local"
    assert ray_address(load_config(None, ["resources.ray_address=auto"])) == "auto"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    assert ray_address(load_config()) == "10.0.0.1:6379"
    assert ray_address(load_config(None, ["resources.ray_address=ray://head:10001"])) == "ray://head:10001"


class UnrelatedCluster(LocalCluster):
    """A one-node cluster started with `ray start --head` (its own temp dir, ports and token)."""

    def start(self) -> None:
        self._ray_start(
            "head", "--head", f"--port={self.port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            "--num-cpus=1", f"--temp-dir={self.temp_dirs[0]}", "--disable-usage-stats",
        )


@pytest.mark.slow
def test_train_starts_its_own_ray_beside_a_running_cluster_that_ray_address_names(tmp_path):
    if not Path("/proc/self/stat").exists():
        pytest.skip("finding the cluster's processes needs /proc (Linux)")
    cluster = UnrelatedCluster(tmp_path)
    try:
        cluster.start()
        # A shell that worked with this cluster: RAY_ADDRESS and its token. Plain `ray.init()` joins it,
        # which shows as a driver job of the cluster (the control for the check below).
        shell = {**cluster.env, "RAY_ADDRESS": f"127.0.0.1:{cluster.port}"}
        joined = run([sys.executable, "-c", "import ray; ray.init(); print(ray.get_runtime_context().get_job_id())"],
                     tmp_path, env=shell, timeout=120)
        assert joined.returncode == 0, joined.stderr
        jobs_before = cluster.state("jobs")
        assert len(jobs_before) == 1 and cluster.state("nodes") and len(cluster.state("nodes")) == 1

        done = run([MASKGAN, "train", *tiny(tmp_path / "run"), "gan.iterations=1", "gan.episodes_per_iteration=4",
                    "resources.num_envs_per_env_runner=2", "resources.num_cpus=2"], tmp_path, env=shell, timeout=600)
        assert done.returncode == 0, done.stderr[-5000:]
        assert "Started a local Ray instance" in done.stderr  # Ray's own words for a new cluster
        assert [job["job_id"] for job in cluster.state("jobs")] == [job["job_id"] for job in jobs_before]
        assert len(cluster.state("nodes")) == 1
    finally:
        left = cluster.stop()
    assert not left, f"processes of the unrelated cluster survived the stop: {left}"
