"""MaskGAN's adversarial stage on Ray: an RLlib algorithm trains the generator, an actor trains D.

One `train_iteration`:
1. reseed every env runner's data/mask stream and torch RNG, and the learner's, from (seed, iteration);
2. `algo.train()`: env runners fill masked windows with the generator policy, their environments
   reward each token with log D; the learner updates generator and critic (gan.algo picks how);
   every finished episode is also sent to the discriminator actor (`MaskGANCallbacks.on_sample_end`);
3. the discriminator actor takes gan.disc_steps steps on those episodes and bumps its version;
4. its weights are pushed to every env runner, which score the next rollouts with them.

Design notes (lag, checkpoints, metrics, failures...): docs/design.md, "The adversarial stage (`maskgan_rl/rl/adversarial.py`)".
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import time
from typing import Any, Optional

import numpy as np
import ray
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from maskgan_rl.config import Config, to_dict
from maskgan_rl.dataset import PreparedData, WindowDataset
from maskgan_rl.masking import make_present, present_rate_at
from maskgan_rl.models.discriminator import discriminator_model_config
from maskgan_rl.models.losses import masked_target_nll
from maskgan_rl.resources import thread_shares
from maskgan_rl.rl.algorithms import algorithm_config
from maskgan_rl.rl.callbacks import push_discriminator_weights
from maskgan_rl.rl.discriminator_actor import create_discriminator_actor, iteration_seed
from maskgan_rl.rl.reinforce import Reinforce

LEARNER_COMPONENTS = ("rl_module", "optimizer")  # of RLlib's learner state: all a resume needs


def environment_config(cfg: Config, vocab_size: int, windows: Any) -> dict[str, Any]:
    """The in-filling environment's config (its contract: envs/infilling_env.py); `windows` the training
    windows or a Ray ObjectRef of them."""
    return {
        "windows": windows,
        "vocab_size": vocab_size,
        "seq_len": cfg.data.seq_len,
        "mask": to_dict(cfg)["mask"],
        "model": dataclasses.asdict(discriminator_model_config(cfg)),  # the environments' D
        "disc_layer_norm": cfg.gan.disc_layer_norm,
        "precision": cfg.resources.precision,
        "device": "cuda" if cfg.resources.num_gpus_per_env_runner > 0 else "cpu",  # remote runners only (config.py)
        "seed": cfg.seed,
        "torch_threads": dataclasses.asdict(thread_shares(cfg)["env_runner"]),
    }


class AdversarialTrainer:
    """Build with the MaskMLE generator's state_dict; call `train_iteration()` per generator update.

    Ray must already be initialised (the command line does it; tests use a local Ray).
    `discriminator_state`: optional Discriminator state_dict to start D from (else the generator's).
    """

    def __init__(
        self,
        cfg: Config,
        data: PreparedData,
        generator_state: dict[str, torch.Tensor],
        discriminator_state: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        self.cfg = cfg
        self.iteration = 0
        self.vocab_size = len(data.vocab)
        self.disc_actor = create_discriminator_actor(cfg, self.vocab_size, generator_state, discriminator_state)
        # Put in Ray's object store once: env runners and the D actor on any node read them from
        # there, never from run_dir, so a cluster needs no shared file system.
        self._train_windows = ray.put(WindowDataset(data.train_path).windows)
        env_config = environment_config(cfg, self.vocab_size, self._train_windows)
        torch.manual_seed(iteration_seed(cfg.seed, 0, 9))  # the critic's initial weights, on a learner in this process
        self.algo = algorithm_config(cfg, self.vocab_size, env_config, self.disc_actor).build_algo()
        torch.set_num_threads(thread_shares(cfg)["driver"].threads())  # for its local env runner and learner, if any
        self.algo.learner_group.foreach_learner(
            lambda learner: learner.module[DEFAULT_MODULE_ID].unwrapped().load_generator_state(generator_state)
        )
        self._push_all_weights()
        self._steps_sampled = 0
        self._disc_update = None  # ObjectRef of a D update still running
        if isinstance(self.algo, Reinforce) and not cfg.gan.disc_overlap:
            self.algo.on_episodes_sampled = self._start_disc_update  # D learns while the learner does
        self._disc_result: Optional[tuple[dict[str, float], float]] = None  # a finished one, not yet reported
        self._runner_restarts = 0  # lifetime count at the end of the previous iteration
        # gan.generator_ema: the moving average of the generator's weights, from MaskMLE's on.
        self._generator_average = _copy(generator_state) if cfg.gan.generator_ema else None
        self._eval_batch = self._fixed_validation_batch(data)
        self._generator_frozen: Optional[bool] = None  # unknown to the learners until the first iteration
        self.rllib_metrics: dict[str, float] = {}  # RLlib's results of the last iteration, see rllib_metrics()

    # -- training -------------------------------------------------------------------------------
    def pretrain_discriminator(self) -> dict[str, float]:
        """gan.disc_pretrain_steps D steps on the current generator's in-fills, then D to every env runner."""
        stats = ray.get(
            self.disc_actor.pretrain.remote(self.generator_state_dict(), self._train_windows, self.cfg.gan.disc_pretrain_steps)
        )
        push_discriminator_weights(self.algo.env_runner_group, self.disc_actor)
        return stats

    def train_iteration(self) -> dict[str, float]:
        start = time.perf_counter()
        self.iteration += 1
        self._reseed()
        self._freeze_generator(self.iteration <= self.cfg.gan.critic_warmup_iterations)
        result = self.algo.train()
        self.rllib_metrics = rllib_metrics(result)
        rl_s = time.perf_counter() - start
        if self.cfg.gan.disc_overlap:
            # The D update of the previous iteration ran alongside this one's sampling and learning;
            # it is collected (and pushed) now, and this iteration's update starts in its place.
            disc, push_s = self._collect_disc_update()
            self._start_disc_update()
        else:
            # REINFORCE started it as soon as the episodes were sampled (alongside its learner
            # update); the other algorithms' RLlib training steps have no such hook: it starts now.
            self._start_disc_update()
            disc, push_s = self._collect_disc_update()
        disc_s = time.perf_counter() - start - rl_s

        runners = result.get(ENV_RUNNER_RESULTS, {})
        lifetime = runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, self._steps_sampled)
        tokens, self._steps_sampled = lifetime - self._steps_sampled, lifetime
        restarts = self.algo.env_runner_group.num_remote_worker_restarts()
        runner_restarts, self._runner_restarts = restarts - self._runner_restarts, restarts
        total_s = time.perf_counter() - start
        self._update_generator_average()
        metrics = {
            "iteration": self.iteration,
            "masked_tokens": int(tokens),
            "masked_tokens_per_s": tokens / total_s,
            "learner_masked_perplexity": self._learner_masked_perplexity(),
            "env_runner_restarts": runner_restarts,
            **disc,
            "time_rl_s": rl_s,
            "time_disc_s": disc_s - push_s,  # waiting for D after RLlib's step: the part of D's update that did not overlap
            "time_push_s": push_s,
            "time_iteration_s": total_s,
        }
        # Left out, not NaN, when an (async) iteration finished no episode or made no update: the
        # divergence guard treats NaN as divergence.
        if "episode_return_mean" in runners:
            metrics["episode_reward_mean"] = float(runners["episode_return_mean"])
            metrics["reward_per_token_mean"] = float(runners["episode_return_mean"]) / float(runners["episode_len_mean"])
        learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
        # IMPALA logs summed losses under the plain names and means under "mean_*".
        for name, keys in (("policy_loss", ("mean_pi_loss", "policy_loss")), ("vf_loss", ("mean_vf_loss", "vf_loss"))):
            found = [learner[key] for key in keys if key in learner]
            if found:
                metrics[name] = float(found[0])
        # Logged by RLlib's gradient clipping; non-finite exactly when some gradient is, which the
        # divergence guard then stops on (RLlib's own per-tensor NaN checks are off, see algorithms.py).
        for network in ("generator", "critic"):
            if f"gradients_{network}_global_norm" in learner:
                metrics[f"grad_norm_{network}"] = float(learner[f"gradients_{network}_global_norm"])
        for key in ("importance_weight_mean", "importance_weight_clipped"):  # reinforce with cold exploration
            if key in learner:
                metrics[key] = float(learner[key])
        return metrics

    def _freeze_generator(self, frozen: bool) -> None:
        """gan.critic_warmup_iterations: tell every learner whether to step the generator (on changes only)."""
        if frozen != self._generator_frozen:
            self.algo.learner_group.foreach_learner(lambda learner: setattr(learner, "generator_frozen", frozen))
            self._generator_frozen = frozen

    def _start_disc_update(self) -> None:
        """Start D's update on the episodes received since the last one, unless one is running already
        (REINFORCE started it mid-iteration, or RLlib repeated a training step whose runners died)."""
        if self._disc_update is None:
            self._disc_update = self.disc_actor.train.remote(self.iteration)

    def _finish_disc_update(self) -> None:
        """Wait for the running D update, then push its weights to every env runner; its (stats, push
        seconds) wait in `_disc_result` for the iteration that reports them."""
        disc = ray.get(self._disc_update)
        self._disc_update = None
        pushed = time.perf_counter()
        push_discriminator_weights(self.algo.env_runner_group, self.disc_actor)
        self._disc_result = (disc, time.perf_counter() - pushed)

    def _collect_disc_update(self) -> tuple[dict[str, float], float]:
        """(stats, push seconds) of the last D update, waiting for it if it still runs; ({}, 0) if none."""
        if self._disc_update is not None:
            self._finish_disc_update()
        result, self._disc_result = self._disc_result or ({}, 0.0), None
        return result

    def _reseed(self) -> None:
        """Everything random in an iteration derives from (cfg.seed, iteration), wherever it runs; the
        environments also get the iteration's mask rate (mask.curriculum_*), so a resumed run has it too."""
        seed, iteration = self.cfg.seed, self.iteration
        present_rate = present_rate_at(self.cfg.mask, iteration)  # the mask-rate curriculum's, for this iteration

        def reseed_runner(runner) -> None:
            torch.manual_seed(iteration_seed(seed, iteration, 2, runner.worker_index))
            runner.env.unwrapped.reseed(iteration_seed(seed, iteration, 3, runner.worker_index))
            runner.env.unwrapped.set_present_rate(present_rate)
            # Every iteration's episodes start with a reset, as a new (restarted, resumed) runner's
            # do. Else a timestep-sampling algorithm (ppo...) starts with gymnasium's autoreset step,
            # whose discarded actions draw from the runner's torch RNG. (RLlib has no public switch.)
            runner._needs_initial_reset = True

        def reseed_learner(learner) -> None:
            torch.manual_seed(iteration_seed(seed, iteration, 4))
            np.random.seed(iteration_seed(seed, iteration, 5))  # RLlib shuffles PPO's minibatches with it

        self.algo.env_runner_group.foreach_env_runner(reseed_runner, local_env_runner=True)
        self.algo.learner_group.foreach_learner(reseed_learner)

    # -- evaluation on the driver ---------------------------------------------------------------
    def _fixed_validation_batch(self, data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
        windows = WindowDataset(data.valid_path).windows[: self.cfg.gan.disc_batch_size]
        present = make_present(len(windows), self.cfg.data.seq_len, self.cfg.mask, np.random.default_rng(self.cfg.seed + 1))
        return torch.as_tensor(windows), torch.as_tensor(present)

    def _learner_masked_perplexity(self) -> float:
        """The current (not the averaged, shipped) generator's teacher-forced perplexity on the masked
        targets of one fixed validation batch (gan.disc_batch_size windows): the divergence guard's
        number, cheap enough for every iteration. Computed on the learner, where the weights are: no
        weights travel for it. `eval/masked_perplexity` is another number: the shipped generator on
        pretrain.eval_batches batches, every gan.eval_every iterations."""
        windows, present = self._eval_batch

        @torch.no_grad()
        def perplexity(learner) -> float:
            generator = learner.module[DEFAULT_MODULE_ID].unwrapped().generator
            was_training = generator.training
            generator.eval()  # no dropout
            device = next(generator.parameters()).device
            nll, _ = masked_target_nll(generator, windows.to(device), present.to(device))
            generator.train(was_training)
            return math.exp(float(nll))

        first_learner = next(iter(self.algo.learner_group.foreach_learner(perplexity)))
        return first_learner.get()

    # -- weights and state ----------------------------------------------------------------------
    def _module_weights(self) -> dict[str, torch.Tensor]:
        weights = self.algo.learner_group.get_weights(module_ids=[DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        return {name: torch.as_tensor(value) for name, value in weights.items()}

    def generator_state_dict(self) -> dict[str, torch.Tensor]:
        return _sub_state(self._module_weights(), "generator.")

    def shipped_generator_state_dict(self) -> dict[str, torch.Tensor]:
        """The generator that is evaluated and shipped: with gan.generator_ema > 0 the moving average
        of its weights over iterations (a GAN's generator oscillates from update to update, the
        average much less), else the learner's current weights."""
        return _copy(self._generator_average) if self._generator_average is not None else self.generator_state_dict()

    def _update_generator_average(self) -> None:
        if self._generator_average is not None:
            update_moving_average(self._generator_average, self.generator_state_dict(), self.cfg.gan.generator_ema)

    def discriminator_state_dict(self) -> dict[str, torch.Tensor]:
        """The actor's current D (after any update still running)."""
        return ray.get(self.disc_actor.weights.remote())[0]

    def critic_state_dict(self) -> dict[str, torch.Tensor]:
        return _sub_state(self._module_weights(), "critic.")

    def get_state(self) -> dict[str, Any]:
        if self._disc_update is not None:  # a checkpoint holds D after this iteration's update
            self._finish_disc_update()
        learner = self.algo.learner_group.get_state(components=[f"learner/{c}" for c in LEARNER_COMPONENTS])["learner"]
        return {
            "iteration": self.iteration,
            "seed": self.cfg.seed,
            "algo": self.cfg.gan.algo,
            "learner": _to_torch({c: learner[c] for c in LEARNER_COMPONENTS}),
            "discriminator": ray.get(self.disc_actor.get_state.remote()),
            "generator_average": self._generator_average,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.algo.learner_group.set_state({"learner": state["learner"]})
        ray.get(self.disc_actor.set_state.remote(state["discriminator"]))
        self.iteration = int(state["iteration"])
        if self.cfg.gan.generator_ema:  # (a checkpoint written without the average starts one here)
            self._generator_average = _copy(state.get("generator_average") or self.generator_state_dict())
        self._push_all_weights()

    def _push_all_weights(self) -> None:
        """Learner's generator and the actor's D to every env runner, waiting until they hold them."""
        self.algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.algo.learner_group, inference_only=True, timeout_seconds=None
        )
        push_discriminator_weights(self.algo.env_runner_group, self.disc_actor)

    def stop(self) -> None:
        self.algo.stop()
        ray.kill(self.disc_actor)


def rllib_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of an `algo.train()` result's learner and env-runner parts, flattened with "/":
    `rllib/learner/default_policy/entropy`, `rllib/env_runner/episode_return_mean`... Finite numbers
    only: RLlib reports NaN for a statistic with no data in the iteration (no episode finished).
    RLlib's `*_lifetime` counters are left out: they live in the algorithm's metrics logger, which a
    resumed run starts anew, so they would restart from 0 (the iteration is the project's own count)."""
    flat: dict[str, float] = {}

    def walk(name: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).endswith("_lifetime"):
                    walk(f"{name}/{_metric_name_part(key)}", value)
            return
        if isinstance(node, torch.Tensor):
            node = node.detach().cpu().numpy()
        if isinstance(node, np.ndarray) and node.size == 1:  # a reduced statistic in an array
            node = node.item()
        if isinstance(node, numbers.Real) and not isinstance(node, (bool, np.bool_)) and math.isfinite(node):
            flat[name] = float(node)

    for prefix, key in (("learner", LEARNER_RESULTS), ("env_runner", ENV_RUNNER_RESULTS)):
        walk(f"rllib/{prefix}", result.get(key, {}))
    return flat


def _metric_name_part(key: Any) -> str:
    """A result key as MLflow accepts it in a metric name on every platform (letters, digits, `_-. `;
    "/" separates parts), e.g. a module id holding other characters."""
    part = re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(key))
    return "_" if part in ("", ".", "..") else part


def _sub_state(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in weights.items() if name.startswith(prefix)}


@torch.no_grad()
def update_moving_average(average: dict[str, torch.Tensor], current: dict[str, torch.Tensor], decay: float) -> None:
    """average <- decay * average + (1 - decay) * current, in place, tensor by tensor (gan.generator_ema)."""
    for name, value in average.items():
        value.lerp_(current[name], 1.0 - decay)


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


def _to_torch(tree: Any) -> Any:
    """numpy arrays (RLlib's state format) -> tensors, so that torch.load(weights_only=True) accepts them."""
    if isinstance(tree, dict):
        return {key: _to_torch(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(value) for value in tree)
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy())
    if isinstance(tree, np.generic):
        return tree.item()
    return tree
