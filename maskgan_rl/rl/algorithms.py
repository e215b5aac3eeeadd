"""The algorithm registry: `gan.algo` picks one entry.

An entry is a function `cfg -> AlgorithmConfig` holding only what is particular to that algorithm
(its config class, learner class, and the defaults this project overrides). `algorithm_config`
adds everything they share: environment, module, resources, learning rates, callbacks.
The names `gan.algo` may take live in the config layer (`config.ALGORITHM_NAMES`), which validates
them without importing RL; this registry has one entry per name, so adding an algorithm is a name
there and an entry here.

Shared choices:
- one iteration = about gan.episodes_per_iteration masked windows (the same number of generated
  tokens for every algorithm); no entropy bonus (the paper has none); value loss weight 1 (the critic
  has its own optimiser and learning rate, gan.critic_lr).
- PPO/APPO/IMPALA use RLlib's own advantages: GAE with lambda=1 (Monte-Carlo returns, like the
  paper) but discounted per env step, i.e. per masked target rather than per position (the same
  for one contiguous blank), and PPO standardises them. Only `reinforce` is the paper's update.

`gan.algo_params` reaches the chosen algorithm's `AlgorithmConfig.training(...)` after the entry's
defaults, so it overrides them; `check_algo_params` refuses, before anything runs, a key that is not a
`training` argument of that algorithm or that the project sets itself (`NOT_TUNABLE`, with the reason).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable

from ray._common.deprecation import DEPRECATED_VALUE  # (where RLlib's own configs take it from)
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.algorithms.ppo import PPOConfig

from maskgan_rl.config import Config
from maskgan_rl.resources import thread_shares
from maskgan_rl.errors import ConfigError
from maskgan_rl.masking import num_masked
from maskgan_rl.rl.callbacks import MaskGANCallbacks
from maskgan_rl.rl.learners import APPOLearner, IMPALALearner, PPOLearner
from maskgan_rl.rl.module import module_spec
from maskgan_rl.rl.reinforce import ReinforceConfig

# Importing the environments registers them with Ray. An install ships envs/ as maskgan_rl_envs; a Ray
# job's working_dir (launch/runtime_env.yaml) runs the source tree, where it is the top-level envs/.
try:
    import maskgan_rl_envs as envs
except ModuleNotFoundError:
    import envs


def masked_per_episode(cfg: Config) -> int:
    return max(num_masked(cfg.mask, cfg.data.seq_len), 1)


def steps_per_iteration(cfg: Config) -> int:
    """Env steps (= generated tokens) in gan.episodes_per_iteration episodes of the configured mask."""
    return cfg.gan.episodes_per_iteration * masked_per_episode(cfg)


# The algorithms whose losses read the sampling policy's logits back from their batches (RLlib's PPO
# learner builds the previous action distribution from them). For the others the episodes keep only the
# sampled tokens and their log-probabilities, not a vocabulary-sized row of logits per token.
READS_SAMPLING_LOGITS = {"ppo"}


def _reinforce(cfg: Config) -> AlgorithmConfig:
    return ReinforceConfig().training(
        episodes_per_iteration=cfg.gan.episodes_per_iteration, advantage_clip=cfg.gan.advantage_clip
    )


def _ppo(cfg: Config) -> AlgorithmConfig:
    batch = steps_per_iteration(cfg)
    return PPOConfig().training(
        learner_class=PPOLearner,
        train_batch_size_per_learner=batch,
        num_epochs=2,  # not RLlib's 30: 15x the learner time, and far off the policy that sampled
        minibatch_size=max(batch // 2, 1),
        use_kl_loss=False,
        lambda_=1.0,
        vf_loss_coeff=1.0,
        # RLlib clips the critic's squared error at 10 by default; returns, sums of log D <= 0, reach -10
        # and below, and the critic is plain MSE in every algorithm here.
        vf_clip_param=float("inf"),
        entropy_coeff=0.0,
    )


def _async_common(config: AlgorithmConfig, cfg: Config, learner_class: type) -> AlgorithmConfig:
    """IMPALA and APPO: learn in-process unless asked, iterate without a 10 s floor, bound D lag."""
    batch = steps_per_iteration(cfg)
    return (
        config.training(
            learner_class=learner_class,
            train_batch_size_per_learner=batch,
            broadcast_interval=1,
            vf_loss_coeff=1.0,
            entropy_coeff=0.0,
        )
        # One outstanding sample request per runner: with D pushed after every iteration, a rollout
        # is scored by a D at most one push old (see maskgan_rl/rl/adversarial.py). Generator
        # weights are pushed to the runners directly: RLlib's pull-based state server is one more
        # actor process, slow to start, that only pays off with many runners.
        # While no remote runner is healthy (the only one died and is restarting), RLlib's IMPALA
        # samples on the driver's runner, which then needs environments of its own.
        .env_runners(
            max_requests_in_flight_per_env_runner=1, use_env_runner_state_server=False, create_env_on_local_worker=True
        )
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=batch)
    )


def _appo(cfg: Config) -> AlgorithmConfig:
    return _async_common(APPOConfig(), cfg, APPOLearner)


def _impala(cfg: Config) -> AlgorithmConfig:
    return _async_common(IMPALAConfig(), cfg, IMPALALearner)


# One entry per name in config.ALGORITHM_NAMES, the list config validation checks gan.algo against.
ALGORITHMS: dict[str, Callable[[Config], AlgorithmConfig]] = {
    "reinforce": _reinforce,
    "ppo": _ppo,
    "appo": _appo,
    "impala": _impala,
}


_OWN_LEARNERS = "the project's learners and connectors (maskgan_rl/rl/learners.py) run every algorithm"
_OLD_STACK = "a setting of RLlib's old API stack, which this project does not run"
# `training` arguments that gan.algo_params may not set, and why: the project sets them from its own
# keys, or the pipeline depends on their values. A key's entry under the algorithm wins over "all".
NOT_TUNABLE: dict[str, dict[str, str]] = {
    "all": {
        "lr": "set it with gan.gen_lr",
        "gamma": "set it with gan.gamma",
        "grad_clip": "set it with gan.grad_clip",
        "grad_clip_by": "always global_norm: the grad_norm_* metrics and the divergence guard read those norms",
        "train_batch_size_per_learner": "set from gan.episodes_per_iteration (times the masked tokens of a window)",
        "train_batch_size": "set from gan.episodes_per_iteration (times the masked tokens of a window)",
        "learner_class": _OWN_LEARNERS,
        "learner_connector": _OWN_LEARNERS,
        "add_default_connectors_to_learner_pipeline": _OWN_LEARNERS,
        "learner_config_dict": "set from gan.critic_lr and resources.torch_threads",
        **{key: _OLD_STACK for key in (
            "model", "optimizer", "lr_schedule", "entropy_coeff_schedule", "opt_type", "decay", "momentum", "epsilon",
            "_separate_vf_optimizer", "_lr_vf", "num_multi_gpu_tower_stacks", "minibatch_buffer_size",
            "replay_proportion", "replay_buffer_num_slots", "learner_queue_timeout",
        )},
    },
    "reinforce": {
        "episodes_per_iteration": "set it with gan.episodes_per_iteration",
        "advantage_clip": "set it with gan.advantage_clip",
        **{key: "reinforce makes one pass over each batch (the paper's update)"
           for key in ("num_epochs", "minibatch_size", "shuffle_batch_per_epoch")},
    },
}


def tunable_params(config: AlgorithmConfig, algo: str) -> list[str]:
    """The `training` arguments of `config`'s class (its own and its bases') that gan.algo_params may set."""
    names = set()
    for cls in type(config).__mro__:
        if "training" in vars(cls):
            names |= {
                name for name, param in inspect.signature(vars(cls)["training"]).parameters.items()
                if param.kind is param.KEYWORD_ONLY and param.default is not DEPRECATED_VALUE
            }
    refused = NOT_TUNABLE["all"].keys() | NOT_TUNABLE.get(algo, {}).keys()
    return sorted(names - refused)


def check_algo_params(cfg: Config) -> None:
    """Raise ConfigError for a key of gan.algo_params that gan.algo's config does not take or that the
    project sets, or a value of another type than RLlib's default for it. (Not in config.validate:
    the config layer does not import RL; `maskgan train` calls this before it does anything.)"""
    algo, params = cfg.gan.algo, cfg.gan.algo_params
    config = ALGORITHMS[algo](cfg)  # the algorithm's config with the project's defaults: its types, its class
    valid = tunable_params(config, algo)
    for key, value in params.items():
        reason = NOT_TUNABLE.get(algo, {}).get(key) or NOT_TUNABLE["all"].get(key)
        if reason:
            raise ConfigError(f"gan.algo_params.{key} cannot be set for gan.algo={algo}: {reason}")
        if key not in valid:
            raise ConfigError(
                f"gan.algo_params.{key}: {type(config).__name__} (gan.algo={algo}) has no training setting {key!r}; "
                f"valid ones: {', '.join(valid) or 'none (its settings are gan.* keys)'}"
            )
        default = getattr(config, key, None)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"gan.algo_params.{key}={value!r}: must be true or false (RLlib's default: {default})")
        if isinstance(default, int) and not isinstance(default, bool) and not _is_integer(value):
            raise ConfigError(f"gan.algo_params.{key}={value!r}: must be an integer (RLlib's default: {default})")
        # A float setting may also be a schedule, [[timestep, value], ...], where RLlib takes one.
        if isinstance(default, float) and not (_is_number(value) or isinstance(value, list)):
            raise ConfigError(f"gan.algo_params.{key}={value!r}: must be a number (RLlib's default: {default})")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def algorithm_config(cfg: Config, vocab_size: int, env_config: dict[str, Any], disc_actor: Any) -> AlgorithmConfig:
    """The full RLlib config for cfg.gan.algo: the registry entry plus everything the algorithms share."""
    r, g = cfg.resources, cfg.gan
    config = ALGORITHMS[g.algo](cfg).training(**g.algo_params)  # the user's settings, over the entry's defaults
    # The driver keeps an env runner only where it samples: with no remote runners, or as IMPALA/APPO's
    # fallback (create_env_on_local_worker). Otherwise it would hold one more copy of the generator and
    # receive the learner's weights every iteration for nothing.
    driver_samples = r.num_env_runners == 0 or config.create_env_on_local_worker
    return (
        config
        # Token ids need no unsquashing or clipping: RLlib's connector would deep-copy every action to do nothing.
        .environment(envs.RAY_VECTOR_ENV, env_config=env_config, normalize_actions=False, clip_actions=False)
        .env_runners(
            num_env_runners=r.num_env_runners,
            num_envs_per_env_runner=r.num_envs_per_env_runner or math.ceil(g.episodes_per_iteration / max(r.num_env_runners, 1)),
            num_cpus_per_env_runner=r.num_cpus_per_env_runner,
            num_gpus_per_env_runner=r.num_gpus_per_env_runner,
            custom_resources_per_env_runner=dict(r.env_runner_resources),
            create_local_env_runner=driver_samples,
            gym_env_vectorize_mode="vector_entry_point",
            # A sample call returns about one episode per sub-env, so D hears of rollouts early.
            rollout_fragment_length=masked_per_episode(cfg),
        )
        .learners(
            num_learners=r.num_learners,
            num_gpus_per_learner=r.num_gpus_per_learner,
            custom_resources_per_learner=dict(r.learner_resources),
            learner_config_dict={
                "critic_lr": g.critic_lr,
                "torch_threads": dataclasses.asdict(thread_shares(cfg)["learner"]),
                "importance_weight_clip": g.importance_weight_clip,
                "adam_beta1": g.adam_beta1,
            },
        )
        .rl_module(rl_module_spec=module_spec(cfg, vocab_size, sampling_logits_in_episodes=g.algo in READS_SAMPLING_LOGITS))
        .training(
            lr=g.gen_lr,
            gamma=g.gamma,
            grad_clip=g.grad_clip,
            grad_clip_by="global_norm",
        )
        # RLlib checks every gradient tensor for NaN/Inf twice per update (its cost: benchmarks/README.md).
        # The global gradient norms (grad_norm_* metrics) say the same in one number, and the driver's
        # divergence guard stops on them before any checkpoint holds the resulting weights.
        .framework(torch_skip_nan_gradients=True)
        # An env runner that dies is restarted by Ray; RLlib then gives it the generator's weights (from the
        # driver's env runner or, without one, the learner) and `MaskGANCallbacks.on_env_runners_recreated` pushes D.
        # The 60 s default pause before a runner whose code raised exits would stall training.
        .fault_tolerance(restart_failed_env_runners=True, delay_between_env_runner_restarts_s=1.0)
        # An iteration ends only after a generator update: when a dying runner left a training step
        # without episodes, RLlib restores the runners and runs the step again.
        .reporting(metrics_num_episodes_for_smoothing=g.episodes_per_iteration, min_train_timesteps_per_iteration=1)
        .callbacks(functools.partial(MaskGANCallbacks, disc_actor=disc_actor, wait_for_discriminator=not g.disc_overlap))
    )
