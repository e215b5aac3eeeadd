"""MaskGAN's in-filling environments, registered by name on import.

Imported as `envs` from a source checkout or a Ray job's working_dir, and as `maskgan_rl_envs` from
an installed maskgan-rl (pyproject.toml ships this folder under that name).

- gymnasium: `gymnasium.make("maskgan/Infill-v0", config=...)` and
  `gymnasium.make_vec("maskgan/Infill-v0", num_envs=N, vectorization_mode="vector_entry_point", config=...)`.
- Ray: `"maskgan-infill"` (one episode at a time) and `"maskgan-infill-vector"` (use with
  `.env_runners(num_envs_per_env_runner=N, gym_env_vectorize_mode="vector_entry_point")`).
  Ray keeps the creators in its cluster-wide registry, so workers find them without importing this.
"""

from typing import Any, Mapping

import gymnasium as gym
from ray.tune.registry import register_env

from .infilling_env import InfillEnv, InfillEpisodes, InfillVectorEnv

GYM_ID = "maskgan/Infill-v0"
RAY_ENV = "maskgan-infill"
RAY_VECTOR_ENV = "maskgan-infill-vector"


def _make_vector_env(config: Mapping[str, Any]) -> InfillVectorEnv:
    # RLlib's vector entry point adds the sub-env count to the env config as "num_envs".
    config = dict(config)
    return InfillVectorEnv(config, num_envs=int(config.pop("num_envs")))


# Classes, not "module:Class" strings: the module's name depends on how it was imported (see above).
gym.register(GYM_ID, entry_point=InfillEnv, vector_entry_point=InfillVectorEnv)
register_env(RAY_ENV, InfillEnv)
register_env(RAY_VECTOR_ENV, _make_vector_env)

__all__ = ["GYM_ID", "RAY_ENV", "RAY_VECTOR_ENV", "InfillEnv", "InfillEpisodes", "InfillVectorEnv"]
