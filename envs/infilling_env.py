"""Text in-filling as a reinforcement-learning environment.

Contract. `config` holds `windows` (the prepared token windows, int [N, T+1], or a Ray ObjectRef of
them: env runners on any node get them from Ray's object store, no file), `vocab_size`, `seq_len`, `mask` and
`model` (the fields of MaskConfig and ModelConfig), and optionally `seed` and `torch_threads` (a
`maskgan_rl.resources.ThreadShare` as a dict: the threads of a remote env runner's process).
An observation is one int64 vector [context | filled | position] (`position` the target to fill
next; `maskgan_rl.masking.unpack_observation` splits it), the action a token id < vocab_size, and
`set_discriminator_weights(state, version)` loads new D weights; an episode's last step's info
carries `window`, `present` and `disc_version` for the discriminator actor.

An episode is one real window with a fresh mask. Present targets are copied in by the environment;
the agent only places the masked ones, left to right, one token per step, and each token earns
r = log(sigmoid(D(context, filled)[t]) + 1e-7) from the environment's copy of the discriminator.
D is causal (output t sees filled[:t+2] only), so the reward a token gets when placed is the one
the finished sequence would give it: the targets still unfilled to its right cannot change it.

`InfillEpisodes` advances N episodes in lockstep with one batched discriminator call per step;
`InfillEnv` is a batch of one and `InfillVectorEnv` a batch of N (much faster per episode than N
single envs, because the discriminator call dominates a step). That call reads only the
token just placed: an `IncrementalDecoder` keeps D's encoding of each episode's context and its
decoder state between steps (cleared when new D weights arrive), so a step costs O(1) LSTM steps.

The env config's `model` is the discriminator's shape (gan.disc_* where set, else the generator's),
`disc_layer_norm` (optional) whether it has layer norm, `precision` (optional, resources.precision,
"auto" by default) the arithmetic of its reward forward pass, `device` (optional, "cpu" by default)
where that pass runs ("cuda" on an env runner with a GPU); observations, actions and rewards are numpy
on any device. `set_present_rate` changes the mask rate of episodes started from then on (the
trainer's mask-rate curriculum).

Seeding: with `reset(seed=s)`/`reseed(s)`, a single env draws windows and masks from seed s. A vector
env given an int seed gives sub-env i the i-th child of seed s (numpy SeedSequence.spawn), so no two
sub-envs share a stream even across RLlib env runners, which reset with seeds `seed + worker_index`;
a list of seeds instead seeds sub-env i exactly like a single env with seed s_i.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np
import ray
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from maskgan_rl.config import MaskConfig, ModelConfig
from maskgan_rl.dataset import sample_windows
from maskgan_rl.errors import ConfigError
from maskgan_rl.masking import make_present, mask_context, pack_observation, unpack_observation
from maskgan_rl.models.discriminator import Discriminator, log_real_prob
from maskgan_rl.models.incremental import IncrementalDecoder
from maskgan_rl.models.precision import autocast, resolve
from maskgan_rl.resources import ThreadShare, set_actor_threads

REQUIRED_KEYS = ("windows", "vocab_size", "seq_len", "mask", "model")


class InfillEpisodes:
    """N in-filling episodes stepped together: the one implementation behind both environment classes.

    State per episode (numpy, int64 unless noted): `window` [N, T+1], `present` bool [N, T], and the
    observations [N, 2T+3], viewed as `context` [N, T+1], `filled` [N, T+1] and `position` [N] (the
    target to fill next).
    A masked target still holds `missing_id` in `filled` until placed; since actions are < vocab_size,
    "unfilled" and "masked, not yet placed" are the same thing and no separate cursor is kept.
    """

    def __init__(self, config: Mapping[str, Any], num_envs: int) -> None:
        missing_keys = [key for key in REQUIRED_KEYS if key not in config]
        if missing_keys:
            raise ConfigError(f"env config lacks {', '.join(missing_keys)}: pass all of {', '.join(REQUIRED_KEYS)}")
        self.vocab_size = int(config["vocab_size"])
        self.seq_len = int(config["seq_len"])
        self.missing_id = self.vocab_size
        try:
            self.mask_cfg = MaskConfig(**dict(config["mask"]))
            model_cfg = ModelConfig(**dict(config["model"]))  # the discriminator's shape
        except TypeError as err:
            raise ConfigError(f"env config 'mask' or 'model': {err}: use the fields of MaskConfig / ModelConfig") from None
        # A remote env runner takes its share of the node's cores (the driver chooses its own).
        if "torch_threads" in config:
            set_actor_threads(ThreadShare(**config["torch_threads"]))

        self.windows = _resolve_windows(config["windows"])
        if self.windows.ndim != 2 or self.windows.shape[1] != self.seq_len + 1 or not len(self.windows) or (
            self.windows.min() < 0 or self.windows.max() >= self.vocab_size
        ):
            raise ConfigError(
                f"env config seq_len={self.seq_len}, vocab_size={self.vocab_size} but its windows have shape "
                f"{self.windows.shape}, ids up to {self.windows.max(initial=-1)}: take all three from the prepared data"
            )
        # The starting weights come from the seed so that runs repeat; the trainer pushes real ones.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.get("seed", 0)))
            self.discriminator = Discriminator(self.vocab_size, model_cfg, bool(config.get("disc_layer_norm", False))).eval()
        self.device = torch.device(str(config.get("device", "cpu")))
        self.discriminator.to(self.device)
        self.discriminator_version = 0
        # Resolved once ("auto" -> 32 or bf16-mixed): D's shape and device never change, and place() runs every step.
        self.precision = resolve(str(config.get("precision", "auto")), self.device, self.discriminator)
        self._scorer = IncrementalDecoder(self.discriminator.seq2seq)

        n, t = num_envs, self.seq_len
        self.window = np.zeros((n, t + 1), dtype=np.int64)
        self.present = np.ones((n, t), dtype=bool)
        self.observations = np.zeros((n, 2 * t + 3), dtype=np.int64)
        self.context, self.filled, self.position = unpack_observation(self.observations)

    def observation_space(self) -> spaces.Box:
        t, v = self.seq_len, self.vocab_size
        token_bound = np.full(t + 1, v, dtype=np.int64)
        return spaces.Box(0, pack_observation(token_bound, token_bound, np.array(t - 1)), dtype=np.int64)

    def new_episode(self, i: int, rng: np.random.Generator) -> None:
        """Episode i starts on a random window with a fresh mask drawn from `rng`."""
        window = sample_windows(self.windows, 1, rng)[0]
        present = make_present(1, self.seq_len, self.mask_cfg, rng)[0]
        self.window[i] = window
        self.present[i] = present
        self.context[i] = mask_context(window[None], present[None], self.missing_id)[0]
        self.filled[i] = self.context[i]  # real tokens where present, missing_id where still to fill
        self.position[i] = np.argmin(present)  # the first masked target

    def observation(self, rows: int | slice = slice(None)) -> np.ndarray:
        """Copies, because the state arrays change in place while RLlib keeps past observations."""
        return self.observations[rows].copy()

    def place(self, actions: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Place `actions[rows]` at the current positions of episodes `rows` and score them in ONE D call.

        Returns (rewards, terminated) for `rows`; a finished episode keeps its last position.
        """
        actions = np.asarray(actions, dtype=np.int64)[rows]
        if np.any((actions < 0) | (actions >= self.vocab_size)):
            raise ValueError(f"actions must be token ids in [0, {self.vocab_size}), got {actions.tolist()}")
        placed = self.position[rows]
        self.filled[rows, placed + 1] = actions
        with torch.no_grad(), autocast(self.precision, self.device, self.discriminator):
            # D's output at `placed` has read filled[1 : placed + 2] (its decoder inputs are filled[1:]).
            features = self._scorer.features(
                *(torch.from_numpy(a).to(self.device) for a in (rows, self.context[rows], self.filled[rows, 1:], placed))
            )
            rewards = log_real_prob(self.discriminator.head(features).squeeze(-1)).cpu().numpy()

        unfilled = self.filled[rows, 1:] == self.missing_id
        terminated = ~unfilled.any(axis=1)
        self.position[rows] = np.where(terminated, placed, unfilled.argmax(axis=1))
        return rewards.astype(np.float32), terminated

    def final_info(self, i: int) -> dict[str, Any]:
        """What the discriminator actor trains on: the real window (the final `filled` is in the observation)."""
        return {"window": self.window[i].copy(), "present": self.present[i].copy(), "disc_version": self.discriminator_version}

    def set_discriminator_weights(self, state_dict: Mapping[str, torch.Tensor | np.ndarray], version: int) -> None:
        load_weights(self.discriminator, state_dict)
        self.discriminator_version = int(version)
        self._scorer.clear()

    def set_present_rate(self, rate: float) -> None:
        """Masks of episodes started from now on keep this fraction of targets (mask-rate curriculum)."""
        self.mask_cfg = dataclasses.replace(self.mask_cfg, present_rate=float(rate))


def load_weights(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """`network.load_state_dict` from torch tensors or numpy arrays, read-only ones too: arrays read from
    Ray's object store are, and loading only copies from them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        network.load_state_dict({name: torch.as_tensor(value) for name, value in state_dict.items()})


def _resolve_windows(windows: Any) -> np.ndarray:
    """The env config's windows: an int array [N, T+1], or a Ray ObjectRef of one (how the trainer
    hands them to env runners on any node, with no file to read there)."""
    return np.asarray(ray.get(windows) if isinstance(windows, ray.ObjectRef) else windows)


class InfillEnv(gym.Env):
    """One in-filling episode at a time (`config`: see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._episodes = InfillEpisodes(config, num_envs=1)
        self.observation_space = self._episodes.observation_space()
        self.action_space = spaces.Discrete(self._episodes.vocab_size)
        self._done = True
        self.reseed(int(config.get("seed", 0)))

    @property
    def discriminator_version(self) -> int:
        return self._episodes.discriminator_version

    def reseed(self, seed: int) -> None:
        """Restart the window/mask stream at `seed` (what `reset(seed=seed)` does, without resetting)."""
        self._np_random, self._np_random_seed = seeding.np_random(seed)

    def set_discriminator_weights(self, state_dict: Mapping[str, torch.Tensor | np.ndarray], version: int) -> None:
        self._episodes.set_discriminator_weights(state_dict, version)

    def set_present_rate(self, rate: float) -> None:
        self._episodes.set_present_rate(rate)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._episodes.new_episode(0, self.np_random)
        self._done = False
        return self._episodes.observation(0), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        rewards, terminated = self._episodes.place(np.array([action]), np.array([0]))
        self._done = bool(terminated[0])
        info = self._episodes.final_info(0) if self._done else {}
        return self._episodes.observation(0), float(rewards[0]), self._done, False, info


class InfillVectorEnv(gym.vector.VectorEnv):
    """`num_envs` in-filling episodes scored together, with gymnasium's NEXT_STEP autoreset.

    After a sub-env terminates, its next `step` ignores its action and returns the first observation
    of a new episode with reward 0 and terminated = truncated = False.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, config: Mapping[str, Any], num_envs: int) -> None:
        self.num_envs = num_envs
        self._episodes = InfillEpisodes(config, num_envs)
        self.single_observation_space = self._episodes.observation_space()
        self.single_action_space = spaces.Discrete(self._episodes.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self.reseed(int(config.get("seed", 0)))

    @property
    def discriminator_version(self) -> int:
        return self._episodes.discriminator_version

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart every sub-env's window/mask stream (see the module docstring for int vs list seeds)."""
        if np.ndim(seed) == 0:
            self._rngs = [np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(self.num_envs)]
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for {self.num_envs} sub-envs")
            self._rngs = [seeding.np_random(int(s))[0] for s in seed]

    def set_discriminator_weights(self, state_dict: Mapping[str, torch.Tensor | np.ndarray], version: int) -> None:
        self._episodes.set_discriminator_weights(state_dict, version)

    def set_present_rate(self, rate: float) -> None:
        self._episodes.set_present_rate(rate)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: Optional[dict] = None
    ) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.reseed(seed)
        for i, rng in enumerate(self._rngs):
            self._episodes.new_episode(i, rng)
        self._needs_reset[:] = False
        return self._episodes.observation(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        for i in np.flatnonzero(self._needs_reset):
            self._episodes.new_episode(i, self._rngs[i])
        acting = np.flatnonzero(~self._needs_reset)
        if len(acting):
            rewards[acting], terminated[acting] = self._episodes.place(actions, acting)

        infos: dict[str, Any] = {}
        for i in np.flatnonzero(terminated):
            infos = self._add_info(infos, self._episodes.final_info(i), i)
        self._needs_reset = terminated.copy()  # the caller keeps `terminated`; reset() clears ours in place
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._episodes.observation(), rewards, terminated, truncated, infos
