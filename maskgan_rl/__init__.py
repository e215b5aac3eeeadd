"""maskgan-rl: MaskGAN text in-filling trained as a distributed RL job on Ray RLlib."""

import os
from importlib import metadata

# The processes of one job (driver/learner, env runners, discriminator actor) take turns on the same
# cores. OpenMP's default lets a process's threads spin for a while after each parallel region,
# stealing those cores from the process that works next (measured in benchmarks/README.md). Set
# before torch loads OpenMP; Ray workers inherit it from the
# driver (on a cluster, launch/runtime_env.yaml sets it). An explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = metadata.version("maskgan-rl")  # pyproject.toml's, the one place it is set
except metadata.PackageNotFoundError:  # a source tree on the path, never installed
    __version__ = "unknown (not installed)"
