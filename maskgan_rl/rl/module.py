"""The MaskGAN generator as an RLlib (new API stack) policy, with the critic as its value function.

One env step fills one masked target. To RLlib the module is stateless: every step's observation
(`context`, `filled`, `position`, packed into one vector: `maskgan_rl.masking`) holds all it needs, so no recurrent state travels through RLlib's
connectors or episodes. On env runners it still decodes in O(1) LSTM steps per token, not O(T):
an `IncrementalDecoder` keeps each sub-environment's encoder outputs and decoder state between
steps, checks them against every observation and is cleared whenever new weights arrive, so the
logits are exactly the stateless ones. The learner needs no cache: its batches carry each episode's latest `filled`
(FINAL_FILLED, added by `maskgan_rl.rl.learners.AddFinalFilled`), and since the generator and the
critic are causal, one teacher-forced pass per episode gives the outputs of all its steps.

The same class serves every algorithm of `maskgan_rl.rl.algorithms`: ValueFunctionAPI gives PPO,
APPO, IMPALA and REINFORCE their baseline; TargetNetworkAPI gives APPO its "old policy" copy;
InferenceOnlyAPI drops the critic (and that copy) from the env runners' copies, which only act.

Cold exploration (gan.rollout_temperature, gan.rollout_top_p; docs/levers.md): `_forward_exploration`,
what env runners sample from, returns the logits of the behaviour policy mu (colder, nucleus-cut),
while `_forward` (training) returns the policy pi's. The module samples from mu itself and records
ACTION_LOGP = log mu(a), so the learner sees both probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import (
    TARGET_NETWORK_ACTION_DIST_INPUTS,
    InferenceOnlyAPI,
    TargetNetworkAPI,
    ValueFunctionAPI,
)
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import Tensor

from maskgan_rl.config import Config, ModelConfig, to_dict
from maskgan_rl.masking import unpack_observation
from maskgan_rl.models.critic import Critic, ValueHead, make_critic
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.incremental import IncrementalDecoder
from maskgan_rl.models.layers import cold_logits, sample_log_probs
from maskgan_rl.models.precision import autocast


FINAL_FILLED = "final_filled"  # learner batch column: per step, the `filled` of its episode's last observation


class MaskGANModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """model_config: {"vocab_size": int, "model": ModelConfig fields as a dict, "temperature": float,
    "rollout_temperature": float, "rollout_top_p": float, "critic": gan.critic, "precision":
    resources.precision, "sampling_logits_in_episodes": bool} (the rollout keys optional, 1 = off;
    critic optional, "lstm"; precision optional, "auto"; sampling_logits_in_episodes optional, True).
    Every forward pass runs in `precision` (models/precision.py)."""

    def setup(self) -> None:
        cfg = ModelConfig(**self.model_config["model"])
        self.vocab_size = int(self.model_config["vocab_size"])
        self.temperature = float(self.model_config.get("temperature", 1.0))
        self.rollout_temperature = float(self.model_config.get("rollout_temperature", 1.0))
        self.rollout_top_p = float(self.model_config.get("rollout_top_p", 1.0))
        self.precision = str(self.model_config.get("precision", "auto"))
        self.sampling_logits_in_episodes = bool(self.model_config.get("sampling_logits_in_episodes", True))
        self.action_dist_cls = TorchCategorical
        self.generator = Generator(self.vocab_size, cfg)
        # Deleted again on env runners (inference_only) by TorchRLModule, see get_non_inference_attributes.
        self.critic = make_critic(self.model_config.get("critic", "lstm"), self.vocab_size, cfg, self.generator)
        self._sampling_cache = IncrementalDecoder(self.generator.seq2seq)

    # -- policy ---------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Learner: the policy's logits, and the decoder features they come from as EMBEDDINGS, which
        the learners hand to `compute_values` (a value-head critic reads them instead of a second pass)."""
        with self._autocast(batch):
            features = self.position_features(self.generator, batch)
            return {Columns.ACTION_DIST_INPUTS: self._tempered(self.generator.head(features)), Columns.EMBEDDINGS: features}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Env runners: the same logits as `_forward`, decoded incrementally (see the module docstring).
        RLlib calls it in eval mode, so dropout is off as the cache requires."""
        context, filled, position = unpack_observation(batch[Columns.OBS])
        rows = torch.arange(len(position), device=position.device)
        with self._autocast(batch):
            features = self._sampling_cache.features(rows, context, filled[:, :-1], position)
            return {Columns.ACTION_DIST_INPUTS: self._tempered(self.generator.head(features))}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Env runners' sampling: a token per row from the behaviour policy mu, i.e. the policy's logits
        made colder by gan.rollout_temperature and cut to their gan.rollout_top_p nucleus (both 1: the
        policy itself), with its ACTION_LOGP = log mu(token); mu's logits too where the algorithm's loss
        reads them back (`sampling_logits_in_episodes`), since RLlib stores every output in the episodes.
        The module samples itself (RLlib's GetActions then leaves the batch alone) by inverse CDF
        (`layers.sample_log_probs`), several times faster than torch.multinomial at 5-10k tokens."""
        logits = self._forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        behaviour = cold_logits(logits, self.rollout_temperature, self.rollout_top_p)
        tokens, logp = sample_log_probs(torch.log_softmax(behaviour.float(), dim=-1))
        out = {Columns.ACTIONS: tokens, Columns.ACTION_LOGP: logp}
        if self.sampling_logits_in_episodes:
            out[Columns.ACTION_DIST_INPUTS] = behaviour
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        self._sampling_cache.clear()  # its decoder states were computed with the old weights
        super().set_state(state)

    def policy_logits(self, generator: Generator, batch: dict[str, Any]) -> Tensor:
        """Logits [B, V] of the token for target `position`, under softmax(logits / temperature)."""
        return self._tempered(generator.head(self.position_features(generator, batch)))

    def position_features(self, generator: Generator, batch: dict[str, Any]) -> Tensor:
        """Decoder features [B, H] at target `position`: `generator.features(context, filled)[b, position[b]]`,
        but the decoder stops after the furthest position in the batch (it is causal, later inputs
        cannot matter), and the vocabulary projection, the most expensive layer at large
        vocabularies, then runs on one row per step instead of T."""
        context, filled, sequence, position = self._sequences(batch)
        enc = generator.seq2seq.encode(context)
        features, _ = generator.seq2seq.decode(enc, filled[:, : int(position.max()) + 1], enc.state)
        return features[sequence, position]

    @property
    def explores_off_policy(self) -> bool:
        """Whether env runners sample from a behaviour policy other than the policy (cold exploration)."""
        return self.rollout_temperature != 1.0 or self.rollout_top_p < 1.0

    def _autocast(self, batch: dict[str, Any]) -> torch.autocast:
        # The generator's width decides "auto" for all its networks: the critic and target copy have its shape.
        return autocast(self.precision, batch[Columns.OBS].device, self.generator)

    def _tempered(self, logits: Tensor) -> Tensor:
        # At T=1 the division is skipped: on [steps, vocabulary] logits it is a full pass each way.
        return logits if self.temperature == 1.0 else logits / self.temperature

    # -- value function -------------------------------------------------------------------------
    def compute_values(self, batch: dict[str, Any], embeddings: Optional[Any] = None) -> Tensor:
        """Critic value [B] of target `position`: expected discounted return from there on.
        `embeddings`: `_forward`'s EMBEDDINGS of the same batch, which a value head reads (else it runs the decoder)."""
        with self._autocast(batch):
            if isinstance(self.critic, ValueHead):
                return self.critic(embeddings if embeddings is not None else self.position_features(self.generator, batch))
            _, filled, sequence, position = self._sequences(batch)
            # Not-yet-filled targets hold missing_id, which the critic's embedding has no row for. They
            # all lie after `position` and the critic is causal, so any real id there changes nothing.
            filled = filled.masked_fill(filled == self.vocab_size, 0)
            return self.critic(filled)[sequence, position]

    def _sequences(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The sequences to run: (context [S, T+1], filled [S, T+1], sequence of each row [B], position [B]).

        Env runners: one sequence per row (its observation). Learner: one per distinct (context,
        FINAL_FILLED), i.e. per episode; the episode's latest `filled` agrees with each of its steps'
        own `filled` on every token that step's outputs can depend on (tokens are only ever added).
        """
        context, filled, position = unpack_observation(batch[Columns.OBS])
        if FINAL_FILLED not in batch:
            return context, filled, torch.arange(len(position), device=position.device), position
        width = context.shape[1]
        pairs = torch.cat([context, batch[FINAL_FILLED]], dim=1)
        unique, sequence = torch.unique(pairs, dim=0, return_inverse=True)
        return unique[:, :width], unique[:, width:], sequence, position

    # -- APPO's target ("old") policy -----------------------------------------------------------
    def make_target_networks(self) -> None:
        self._target_generator = make_target_network(self.generator)

    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.generator, self._target_generator)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with self._autocast(batch):
            return {TARGET_NETWORK_ACTION_DIST_INPUTS: self.policy_logits(self._target_generator, batch)}

    def get_non_inference_attributes(self) -> list[str]:
        return ["critic", "_target_generator"]

    # -- MaskGAN weights in and out -------------------------------------------------------------
    @torch.no_grad()
    def load_generator_state(self, generator_state: dict[str, Tensor]) -> None:
        """Start from a MaskMLE generator; an LSTM critic starts from its decoder, as in the authors' code."""
        self._sampling_cache.clear()
        self.generator.load_state_dict(generator_state)
        if isinstance(self.critic, Critic):
            self.critic.init_from_generator(self.generator)
        if hasattr(self, "_target_generator"):
            self._target_generator.load_state_dict(generator_state)


def policy_model_config(model: ModelConfig) -> ModelConfig:
    """The generator's and critic's shape in the adversarial stage: `model` without dropout.

    The policy the learner differentiates must be the one that sampled. RLlib samples in eval mode
    (no dropout) and computes losses in train mode, where dropout would draw fresh masks: PPO's ratio
    and V-trace's importance weights would compare against a different policy, and REINFORCE's
    gradient would be another policy's. Dropout regularises pretraining and the discriminator.
    """
    return dataclasses.replace(model, keep_prob=1.0)


def module_spec(cfg: Config, vocab_size: int, sampling_logits_in_episodes: bool = True) -> RLModuleSpec:
    """The RLModuleSpec every algorithm of the registry uses (only plain data: it travels to workers).
    `sampling_logits_in_episodes`: whether the algorithm's loss reads the behaviour policy's logits
    back from its batches (else episodes keep only the tokens and their log-probabilities)."""
    model = to_dict(policy_model_config(cfg.model))
    return RLModuleSpec(
        module_class=MaskGANModule,
        model_config={
            "vocab_size": vocab_size,
            "model": model,
            "temperature": cfg.gan.temperature,
            "rollout_temperature": cfg.gan.rollout_temperature,
            "rollout_top_p": cfg.gan.rollout_top_p,
            "critic": cfg.gan.critic,
            "precision": cfg.resources.precision,
            "sampling_logits_in_episodes": sampling_logits_in_episodes,
        },
    )

