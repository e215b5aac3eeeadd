"""One MaskGAN iteration in one process, top to bottom: the reference for what the RLlib loop does.

`maskgan train` spreads an iteration over env runners (`envs/`), an RLModule (`rl/module.py`), a
learner (`rl/reinforce.py`, `rl/learners.py`) and the discriminator actor (`rl/discriminator_actor.py`).
`ReferenceLoop.train_iteration` is the same iteration with the same networks, the same maths
(`rl/returns.py`) and the same D trainer, without Ray, in the order the paper gives it:
rollout, rewards from D, discounted returns, critic baseline, advantages, generator loss, critic
loss, D steps. A test checks that its generator and critic losses and their gradients equal the
REINFORCE learner's on the same episodes. The benchmarks use it as the single-process loop that
the RL loop is measured against (`benchmarks/throughput.py`) and to try other rewards
(`benchmarks/reward_check.py`).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from maskgan_rl.config import Config, GanConfig
from maskgan_rl.dataset import PreparedData, WindowDataset
from maskgan_rl.masking import make_present, mask_context
from maskgan_rl.models.critic import AnyCritic, Critic, make_critic
from maskgan_rl.models.discriminator import log_real_prob
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.optim import adam
from maskgan_rl.models.precision import autocast
from maskgan_rl.rl.discriminator_actor import DiscriminatorTrainer
from maskgan_rl.rl.module import policy_model_config
from maskgan_rl.rl.returns import clipped_advantages, critic_loss, masked_returns, reinforce_loss

Reward = Callable[[Tensor, Tensor], Tensor]  # (context [B, T+1], filled [B, T+1]) -> reward per target [B, T]


def actor_critic_losses(
    generator: Generator,
    critic: AnyCritic,
    context: Tensor,
    filled: Tensor,
    present: Tensor,
    rewards: Tensor,
    gan: GanConfig,
    baseline: bool = True,
) -> tuple[Tensor, Tensor]:
    """(generator loss, critic loss) of filled windows [B, T+1] whose masked targets (`present` False)
    earned `rewards` [B, T]: the loss `ReinforceLearner` computes from the same episodes.
    `baseline` False: the advantages are the clipped returns themselves, as in SeqGAN."""
    masked = ~present
    # Discounted returns over target positions, from the masked targets' rewards only.
    returns = masked_returns(rewards, present, gan.gamma)
    # One teacher-forced pass of the generator: its features give the sampled tokens' log p_G (at the
    # temperature they were sampled with) and, for a value-head critic, the values.
    features = generator.features(context, filled)
    logp = generator.log_probs_from_features(features, filled, masked, gan.temperature)
    # The critic predicts each target's return from the filled prefix: the baseline.
    values = critic(filled) if isinstance(critic, Critic) else critic(features)
    advantages = clipped_advantages(returns, values if baseline else torch.zeros_like(values), present, gan.advantage_clip)
    return reinforce_loss(logp, advantages, present), critic_loss(values, returns, present)


class ReferenceLoop:
    """MaskGAN's adversarial iteration in one process, with the networks the RL loop trains."""

    def __init__(
        self,
        cfg: Config,
        data: PreparedData,
        generator_state: dict[str, Tensor],
        device: torch.device,
        reward: Optional[Reward] = None,
        baseline: bool = True,
    ):
        """`reward` defaults to log D, as MaskGAN trains. `baseline` False: SeqGAN's advantages (the
        critic still learns, unused)."""
        self.cfg, self.device, self.baseline = cfg, device, baseline
        self.reward = reward or (lambda context, filled: log_real_prob(self.disc_trainer.model(context, filled)))
        self.vocab_size = len(data.vocab)
        policy = policy_model_config(cfg.model)  # no dropout, as the RL loop's policy
        self.generator = Generator(self.vocab_size, policy).to(device)
        self.generator.load_state_dict(generator_state)
        self.critic = make_critic(cfg.gan.critic, self.vocab_size, policy, self.generator).to(device)
        self.disc_trainer = DiscriminatorTrainer(cfg, self.vocab_size, generator_state)
        self.disc_trainer.model.to(device)
        self.disc_trainer.device = device
        self.gen_opt = adam(self.generator.parameters(), lr=cfg.gan.gen_lr, beta1=cfg.gan.adam_beta1)
        self.critic_opt = adam(self.critic.parameters(), lr=cfg.gan.critic_lr, beta1=cfg.gan.adam_beta1)
        self.train_windows = WindowDataset(data.train_path)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration = 0

    def sampled_log_probs(self, context: Tensor, filled: Tensor, masked: Tensor) -> Tensor:
        """log p_G of the tokens in `filled` at the sampling temperature where `masked` [B, T], 0 elsewhere."""
        return self.generator.token_log_probs(context, filled, masked, self.cfg.gan.temperature)

    def train_iteration(self, update_generator: bool = True) -> int:
        """One iteration; returns the number of masked tokens generated. With `update_generator` False
        only the critic and D learn (gan.critic_warmup_iterations)."""
        g, n = self.cfg.gan, self.cfg.gan.episodes_per_iteration

        # 1. Rollout: real windows with fresh masks; the generator fills every masked target, left to
        #    right (all windows at once: one batched decoder pass, where the env runners step episodes).
        windows_np = self.train_windows.sample(n, self.rng)
        present_np = make_present(n, self.cfg.data.seq_len, self.cfg.mask, self.rng)
        windows, present = torch.as_tensor(windows_np, device=self.device), torch.as_tensor(present_np, device=self.device)
        context = mask_context(windows, present, self.vocab_size)
        self.generator.eval()
        self.disc_trainer.model.eval()
        precision = self.cfg.resources.precision
        with torch.no_grad():
            with autocast(precision, self.device, self.generator):
                filled, _ = self.generator.sample(windows, present, g.temperature)
            # 2. Rewards from D: log D(real) for every target (only the masked ones are used).
            with autocast(precision, self.device, self.disc_trainer.model):
                rewards = self.reward(context, filled)

        # 3-6. Returns, critic baseline, advantages and the two losses.
        self.generator.train()
        self.critic.train()
        with autocast(precision, self.device, self.generator):
            policy_loss, value_loss = actor_critic_losses(self.generator, self.critic, context, filled, present, rewards, g, self.baseline)

        # 7. One step of each optimiser, gradients clipped per network, as RLlib's learners clip.
        self.gen_opt.zero_grad()
        self.critic_opt.zero_grad()
        (policy_loss + value_loss).backward()
        for network in (self.generator, self.critic):
            torch.nn.utils.clip_grad_norm_(network.parameters(), g.grad_clip)
        if update_generator:
            self.gen_opt.step()
        self.critic_opt.step()

        # 8. D steps on these in-fills against their real windows (gan.disc_steps).
        self.iteration += 1
        scored_by = np.full(n, self.disc_trainer.version)  # the D that gave the rewards: no lag here
        self.disc_trainer.add_rollouts(filled.cpu().numpy(), windows_np, present_np, scored_by)
        self.disc_trainer.train(self.iteration)
        return int((~present).sum())
