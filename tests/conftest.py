"""Shared fixtures and settings.

`ray_session`: one local Ray for the whole test session (starting one takes seconds). It is started
with `address="local"` (never another process's cluster) and without GPUs even where the machine has
some, so tests see the same 2-CPU Ray everywhere.

Hypothesis: in CI (`CI=true`, as GitHub Actions, GitLab and most CI services set) its examples are
derandomised, so a red build is never a random draw that a rerun turns green; elsewhere each run
draws new examples.
"""

import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from hypothesis import settings

import processes

TINY_VOCAB = ["<eos>", "<unk>", "the", "stock", "rose", "sharply", "in", "early", "trading", "."]
TINY_SEQ_LEN = 6

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() in ("true", "1"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A MaskMLE checkpoint of a real, untrained generator (8 units, data.seq_len=6) over TINY_VOCAB:
    made in a second, shared by the tests that only read it."""
    from maskgan_rl.checkpoint import save_checkpoint
    from maskgan_rl.config import ModelConfig, load_config, to_dict
    from maskgan_rl.models import Generator

    cfg = load_config("synthetic", [f"data.seq_len={TINY_SEQ_LEN}", "model.embed=8", "model.hidden=8"])
    torch.manual_seed(0)
    generator = Generator(len(TINY_VOCAB), ModelConfig(embed=8, hidden=8))
    path = tmp_path_factory.mktemp("tiny") / "mle.pt"
    save_checkpoint(path, {"kind": "mle", "config": to_dict(cfg), "vocab": TINY_VOCAB, "models": {"generator": generator.state_dict()}})
    return path


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function giving a TCP port of 127.0.0.1 that nothing listens on (for a server a test starts)."""
    return processes.free_port


@pytest.fixture(scope="session")
def wait_until_healthy() -> Callable[..., None]:
    """A function returning once `healthy()` holds for a server a test started as `process`, and failing
    the test with the end of its log if the process exits first or `timeout_s` passes."""

    def wait(process: subprocess.Popen, healthy: Callable[[], bool], log_path: Path, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not healthy():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    return wait
