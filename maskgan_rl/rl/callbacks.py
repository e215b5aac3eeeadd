"""RLlib callbacks and helpers that connect the discriminator actor to the env runners.

- `on_sample_end` (on each env runner): every finished episode goes to the discriminator actor:
  final `filled` observation plus the final info's real `window`, `present` mask and `disc_version`.
  The call waits for the actor to store them (a few KB), so by the time `sample()` returns, and with
  it a synchronous training step, D has every episode of that step. With gan.disc_overlap it does
  not wait: the actor is then busy with the previous update while the runners sample, and waiting
  would serialise the two again; episodes that arrive after an update starts go into the next one.
- `on_env_runners_recreated` (on the driver): a restarted runner's environments start from a
  seed-initialised D; the current weights are pushed to it straight away. RLlib retries an iteration
  whose runners died for as long as they keep dying, so a runner that fails every time (a bug, not a
  lost node) would look like a hung run: after MAX_RESTORES_PER_ITERATION restores without a finished
  iteration the run stops with a `RunFailure` (its last checkpoint stays).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from maskgan_rl.errors import RunFailure
from maskgan_rl.masking import unpack_observation

MAX_RESTORES_PER_ITERATION = 3


class MaskGANCallbacks(RLlibCallback):
    """Pass as `callbacks_class=functools.partial(MaskGANCallbacks, disc_actor=<actor handle>)`."""

    def __init__(self, disc_actor: Any = None, wait_for_discriminator: bool = True) -> None:
        super().__init__()
        self.disc_actor = disc_actor
        self.wait_for_discriminator = wait_for_discriminator
        self._restores = 0  # of failed env runners, since the last finished iteration

    def on_sample_end(self, *, env_runner=None, metrics_logger=None, samples=(), **kwargs) -> None:
        finished = [episode for episode in samples if episode.is_terminated]
        if not finished:
            return
        infos = [episode.get_infos(-1) for episode in finished]
        stored = self.disc_actor.add_rollouts.remote(
            filled=np.stack([unpack_observation(episode.get_observations(-1))[1] for episode in finished]),
            window=np.stack([info["window"] for info in infos]),
            present=np.stack([info["present"] for info in infos]),
            disc_version=np.array([info["disc_version"] for info in infos]),
        )
        if self.wait_for_discriminator:
            ray.get(stored)

    def on_env_runners_recreated(self, *, algorithm, env_runner_group, env_runner_indices, is_evaluation, **kwargs) -> None:
        self._restores += 1
        if self._restores > MAX_RESTORES_PER_ITERATION:
            raise RunFailure(
                f"env runners failed {self._restores} times in a row without finishing an iteration: the same error "
                "each time is a bug, not a lost node (the runners' errors are in the log above); fix it and run again with --resume"
            )
        push_discriminator_weights(env_runner_group, self.disc_actor, env_runner_indices)

    def on_train_result(self, *, algorithm, metrics_logger=None, result, **kwargs) -> None:
        self._restores = 0


def push_discriminator_weights(env_runner_group, disc_actor, remote_worker_ids: Optional[list[int]] = None) -> None:
    """Load the actor's current D into the environments of every runner (or of `remote_worker_ids`).

    The weights travel as one ObjectRef: the state dict is put in the object store once and each
    runner fetches it, instead of the driver pickling one copy per runner.
    """
    weights = disc_actor.weights_for_runners.remote()

    def load(runner) -> None:
        state, version = ray.get(weights)
        runner.env.unwrapped.set_discriminator_weights(state, version)

    env_runner_group.foreach_env_runner(load, local_env_runner=remote_worker_ids is None, remote_worker_ids=remote_worker_ids)
