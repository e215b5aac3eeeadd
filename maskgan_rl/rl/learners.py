"""What every MaskGAN learner shares, whichever RLlib algorithm drives it.

- Two Adam optimisers: generator at `config.lr` (gan.gen_lr), critic at `learner_config_dict["critic_lr"]`
  (gan.critic_lr), as in the paper. The two networks share no weights, so RLlib's summed loss
  (policy + value) sends each optimiser exactly its own network's gradient.
- Torch threads pinned to the learner's CPU share (`learner_config_dict["torch_threads"]`): two
  processes each spinning on all cores slow each other down several times.
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.utils.typing import ModuleID


class MaskGANLearnerMixin:
    """Put first in the bases of a TorchLearner subclass (it uses TorchLearner's optimiser registry)."""

    def build(self) -> None:
        torch.set_num_threads(self.config.learner_config_dict["torch_threads"])
        super().build()

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
                optimizer=torch.optim.Adam(params),
                params=params,
                lr_or_lr_schedule=lr,
            )


class PPOLearner(MaskGANLearnerMixin, PPOTorchLearner):
    pass


class APPOLearner(MaskGANLearnerMixin, APPOTorchLearner):
    pass


class IMPALALearner(MaskGANLearnerMixin, IMPALATorchLearner):
    pass

