"""What every MaskGAN learner shares, whichever RLlib algorithm drives it.

- Two Adam optimisers: generator at `config.lr` (gan.gen_lr), critic at `learner_config_dict["critic_lr"]`
  (gan.critic_lr), as in the paper, both with beta1 = `learner_config_dict["adam_beta1"]`
  (gan.adam_beta1). The two networks share no weights, so RLlib's summed loss (policy + value) sends
  each optimiser exactly its own network's gradient.
- A remote learner's torch threads: its share of its node (`learner_config_dict["torch_threads"]`,
  a `maskgan_rl.resources.ThreadShare`).
- `generator_frozen`: while the driver sets it (gan.critic_warmup_iterations), updates step the
  critic only; the generator's parameters get no gradient, so Adam leaves them and their moments alone.
- The `AddFinalFilled` learner connector, which lets the module run one pass per episode instead
  of one per step (see maskgan_rl/rl/module.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.common import AddObservationsFromEpisodesToBatch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.utils.typing import ModuleID

from maskgan_rl.masking import unpack_observation
from maskgan_rl.models.optim import adam
from maskgan_rl.resources import ThreadShare, set_actor_threads
from maskgan_rl.rl.module import FINAL_FILLED


class AddFinalFilled(ConnectorV2):
    """Learner connector: for every step, the `filled` of the last observation of its episode (chunk).

    Runs after RLlib has added the observations, so the row count matches even where an algorithm
    (PPO) appended an extra bootstrap step to each episode first.
    """

    def __call__(self, *, rl_module, episodes, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            _, final, _ = unpack_observation(episode.get_observations(-1))
            self.add_n_batch_items(
                batch=batch,
                column=FINAL_FILLED,
                items_to_add=np.repeat(final[None], len(episode), axis=0),
                num_items=len(episode),
                single_agent_episode=episode,
            )
        return batch


class MaskGANLearnerMixin:
    """Put first in the bases of a TorchLearner subclass (it uses TorchLearner's optimiser registry)."""

    generator_frozen = False

    def build(self) -> None:
        set_actor_threads(ThreadShare(**self.config.learner_config_dict["torch_threads"]))
        super().build()
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.insert_after(AddObservationsFromEpisodesToBatch, AddFinalFilled())

    def apply_gradients(self, gradients_dict: dict) -> None:
        if self.generator_frozen:
            generator = [p for module in self.module.values() for p in module.unwrapped().generator.parameters()]
            frozen = {self.get_param_ref(p) for p in generator}
            gradients_dict = {ref: grad for ref, grad in gradients_dict.items() if ref not in frozen}
            for param in generator:
                param.grad = None  # torch's Adam skips a parameter without a gradient
        super().apply_gradients(gradients_dict)

    def configure_optimizers_for_module(self, module_id: ModuleID, config=None) -> None:
        module = self.module[module_id].unwrapped()
        for name, network, lr in (
            ("generator", module.generator, config.lr),
            ("critic", module.critic, config.learner_config_dict["critic_lr"]),
        ):
            params = self.get_parameters(network)
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=adam(params, lr=lr, beta1=config.learner_config_dict["adam_beta1"]),
                params=params,
                lr_or_lr_schedule=lr,
            )


class PPOLearner(MaskGANLearnerMixin, PPOTorchLearner):
    pass


class APPOLearner(MaskGANLearnerMixin, APPOTorchLearner):
    pass


class IMPALALearner(MaskGANLearnerMixin, IMPALATorchLearner):
    pass

