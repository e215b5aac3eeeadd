"""The paper's generator update as an RLlib algorithm: REINFORCE with a learned baseline (the critic).

Per iteration (`Reinforce.training_step`, shaped like RLlib's VPG example):
1. sample `episodes_per_iteration` complete episodes (each fills one masked window);
   (then `on_episodes_sampled`, if set: the adversarial trainer starts D's update there, see below);
2. one learner pass over all their steps, no minibatches, no epochs:
     R_t = discounted return over the masked targets, gamma counted in target POSITIONS
           (`returns.episode_returns`, exactly the authors' code),
     A_t = clip(R_t - V_t, -advantage_clip, +advantage_clip)  (no standardisation, no ratio clipping),
     loss = -mean_t(w_t * log pi(a_t) * stopgrad(A_t))  +  mean_t((V_t - R_t)^2),
     w_t = 1, or with cold exploration min(pi(a_t) / mu(a_t), gan.importance_weight_clip)
     (`returns.importance_weights`; mu's log-probability is RLlib's ACTION_LOGP, recorded at sampling);
3. push the new generator weights to the env runners.
Every env step is a masked target, so the step-indexed batch is the [1, steps] case of the window
formulas in `maskgan_rl.rl.returns`, which this file reuses rather than restates.

D's update needs only the sampled episodes (already with the discriminator actor when sampling
returns) and the learner update needs only the episodes' rewards, so the two run at once, with the
same results as one after the other.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.rllib.utils.torch_utils import explained_variance
from ray.rllib.utils.typing import ModuleID

from maskgan_rl.masking import unpack_observation
from maskgan_rl.rl.learners import MaskGANLearnerMixin
from maskgan_rl.rl.module import MaskGANModule
from maskgan_rl.rl.returns import clipped_advantages, critic_loss, episode_returns, importance_weights, reinforce_loss

RETURNS = "masked_returns"


class ReinforceConfig(AlgorithmConfig):
    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or Reinforce)
        self.episodes_per_iteration = 64
        self.advantage_clip = 5.0
        # The loss needs whole episodes (returns run to the episode's end).
        self.batch_mode = "complete_episodes"

    def training(self, *, episodes_per_iteration=NotProvided, advantage_clip=NotProvided, **kwargs) -> "ReinforceConfig":
        super().training(**kwargs)
        if episodes_per_iteration is not NotProvided:
            self.episodes_per_iteration = episodes_per_iteration
        if advantage_clip is not NotProvided:
            self.advantage_clip = advantage_clip
        return self

    def get_default_learner_class(self):
        return ReinforceLearner

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=MaskGANModule)  # its model_config comes from module.module_spec


class Reinforce(Algorithm):
    on_episodes_sampled: Optional[Callable[[], None]] = None  # called on the driver between sampling and learning

    @classmethod
    def get_default_config(cls) -> ReinforceConfig:
        return ReinforceConfig()

    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = self._sample_episodes()
        if not episodes:  # every runner died mid-sample: RLlib restores them and calls this step again
            return
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        if self.on_episodes_sampled is not None:
            self.on_episodes_sampled()

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                    )
                },
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)

    def _sample_episodes(self) -> tuple[list, list]:
        """`episodes_per_iteration` episodes in total, split as evenly as possible over the runners."""
        total = self.config.episodes_per_iteration
        runners = self.env_runner_group.num_remote_workers() or 1

        def sample(runner) -> tuple[list, Any]:
            index = max(runner.worker_index - 1, 0)  # remote runners count from 1, the local one is 0
            share = total // runners + (index < total % runners)
            return runner.sample(num_episodes=share), runner.get_metrics()

        results = self.env_runner_group.foreach_env_runner(
            sample, local_env_runner=self.env_runner_group.num_remote_workers() == 0
        )
        return [episode for r in results for episode in r[0]], [r[1] for r in results]


class MaskedReturnsToGo(ConnectorV2):
    """Learner connector: the discounted return of every step of every episode, into column RETURNS."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma: float):
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma

    def __call__(self, *, rl_module, episodes, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            _, _, positions = unpack_observation(episode.get_observations(slice(0, len(episode))))
            returns = episode_returns(episode.get_rewards(), positions, self.gamma).astype(np.float32)
            self.add_n_batch_items(
                batch=batch, column=RETURNS, items_to_add=returns, num_items=len(episode), single_agent_episode=episode
            )
        return batch


class ReinforceLearner(MaskGANLearnerMixin, TorchLearner):
    def build(self) -> None:
        super().build()
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(MaskedReturnsToGo(gamma=self.config.gamma))

    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: ReinforceConfig, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        # The log-softmax of the train distribution (a categorical), computed once for the loss and
        # the entropy metric: at 5-10k actions each pass over [steps, vocabulary] costs as much as
        # the rest of the loss.
        log_probs = torch.log_softmax(fwd_out[Columns.ACTION_DIST_INPUTS], dim=-1)
        # One row per env step = per masked target: shape [1, steps], nothing "present".
        logp = log_probs.gather(-1, batch[Columns.ACTIONS].long()[:, None])[:, 0][None]
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))[None]
        returns = batch[RETURNS][None]
        present = torch.zeros_like(returns, dtype=torch.bool)
        advantages = clipped_advantages(returns, values, present, config.advantage_clip)
        stats = {}
        weights = None
        if module.explores_off_policy:  # the tokens came from the behaviour policy mu, not from pi
            clip = config.learner_config_dict["importance_weight_clip"]
            weights = importance_weights(logp, batch[Columns.ACTION_LOGP][None], clip)
            stats = {"importance_weight_mean": weights.mean(), "importance_weight_clipped": (weights >= clip).float().mean()}
        policy_loss = reinforce_loss(logp, advantages, present, weights)
        value_loss = critic_loss(values, returns, present)
        self.metrics.log_dict(
            {
                "policy_loss": policy_loss,
                "vf_loss": value_loss,
                "mean_return": returns.mean(),
                "mean_value": values.mean(),
                "mean_advantage": advantages.mean(),
                # As PPO reports it: 1 = the critic predicts every return, 0 = no better than their mean.
                "vf_explained_var": explained_variance(returns[0], values[0].detach()),
                "entropy": mean_entropy(log_probs),
                **stats,
            },
            key=module_id,
            window=1,
        )
        return policy_loss + value_loss


ENTROPY_ROWS = 256  # at most this many rows (evenly spaced) enter the entropy diagnostic


@torch.no_grad()
def mean_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """A diagnostic (falling entropy = mode collapse), kept out of autograd: the mean over at most
    ENTROPY_ROWS evenly spaced rows of the batch, an estimate that costs a fraction of a pass over all
    [steps, vocabulary] (benchmarks/README.md, CPU size)."""
    rows = log_probs[:: max(1, len(log_probs) // ENTROPY_ROWS)]
    return -(rows.exp() * rows).sum(-1).mean()
