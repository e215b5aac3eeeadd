"""The discriminator's trainer, a Ray actor of its own beside RLlib's env runners and learner.

Env runners send it every finished episode (`add_rollouts`, from the `on_sample_end` callback):
the real window, its mask, the generator's filled-in window and the version of D that scored it.
Once per generator update the driver calls `train`: k = gan.disc_steps Adam steps, each on a
minibatch of those pairs (real and fake share window and mask, as in the paper), loss =
`discriminator_loss` on the masked targets only. Each `train` that stepped bumps the version; the
driver then ships `weights()` to every env runner, whose environments compute the rewards with it.

Before adversarial training, `pretrain` may first train D on the MaskMLE generator's in-fills
(gan.disc_pretrain_steps; the paper's optional step 3): a D at chance gives every token the same
reward, and the generator's first updates are then noise.

Failures: as an actor it is restarted by Ray (up to DISC_MAX_RESTARTS times) and calls made to it
meanwhile wait and run on the new process. It saves its state (weights, optimiser, version) to
`<run_dir>/discriminator_actor.pt` (on the actor's node for a local run_dir; a storage URI reaches
it from any node) when created and every gan.checkpoint_every updates (written in
the background, see `_save_state`), and a restarted process starts from
that file: the restart loses the episodes received since the last `train` and the updates since the
last save (with gan.checkpoint_every=1, none).
`train` reports the restarts as `disc_actor_restarts`.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import torch

from maskgan_rl import storage
from maskgan_rl.checkpoint import load_checkpoint, save_checkpoint
from maskgan_rl.config import Config
from maskgan_rl.dataset import sample_windows
from maskgan_rl.masking import make_present, mask_at, mask_context
from maskgan_rl.models.discriminator import Discriminator, discriminator_loss, right_counts
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.optim import adam
from maskgan_rl.models.precision import autocast
from maskgan_rl.resources import set_actor_threads, thread_shares

log = logging.getLogger(__name__)

DISC_MAX_RESTARTS = 5  # a D that keeps dying (out of memory...) should stop the run, not loop
STATE_FILE = "discriminator_actor.pt"


def iteration_seed(seed: int, iteration: int, *streams: int) -> int:
    """An independent 32-bit seed for (run seed, iteration, stream...): resumed runs redraw the same numbers."""
    return int(np.random.SeedSequence([seed, iteration, *streams]).generate_state(1)[0])


class DiscriminatorTrainer:
    """Plain class; `create_discriminator_actor` runs it as a Ray actor (tests may use it directly)."""

    def __init__(
        self,
        cfg: Config,
        vocab_size: int,
        generator_state: dict[str, torch.Tensor],
        discriminator_weights: Optional[dict[str, torch.Tensor]] = None,
        state_path: Optional[str] = None,
    ) -> None:
        """Starts from `discriminator_weights` (a Discriminator state_dict, e.g. a pretrained D) if
        given, else from the MaskMLE generator as in the paper. With `state_path` the state is saved
        there after every update, and a restarted actor resumes from it."""
        set_actor_threads(thread_shares(cfg)["discriminator"])  # in-process (benchmarks, tests) the caller's threads stay
        self.gan = cfg.gan
        self.seed = cfg.seed
        self.missing_id = vocab_size
        self.device = torch.device("cuda" if cfg.resources.disc_num_gpus > 0 else "cpu")
        self.model_cfg, self.mask_cfg, self.precision = cfg.model, cfg.mask, cfg.resources.precision
        torch.manual_seed(iteration_seed(self.seed, 0, 8))  # D's own initial weights (those not copied from the generator): the same in every run of a seed
        self.model = Discriminator.from_config(vocab_size, cfg).to(self.device)
        if discriminator_weights is not None:
            self.model.load_state_dict(discriminator_weights)
        else:
            generator = Generator(vocab_size, cfg.model)
            generator.load_state_dict(generator_state)
            if not self.model.init_from_generator(generator):
                log.warning("[disc] gan.disc_embed/hidden/layers differ from the generator's: D starts from random weights")
        # Adam's weight_decay adds the L2 penalty's gradient (ScratchGAN's regularised D).
        self.optimizer = adam(self.model.parameters(), lr=cfg.gan.disc_lr, beta1=cfg.gan.adam_beta1, weight_decay=cfg.gan.disc_weight_decay)
        self.version = 0
        self._rollouts: list[dict[str, np.ndarray]] = []
        self.state_path = storage.location(state_path) if state_path else None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="disc-state")
        self._pending_save: Optional[Future] = None
        self._restarts = 0  # since the last `train`
        if self.state_path is not None:
            import ray

            with warnings.catch_warnings():  # Ray's property reads its own deprecated `actor_id` inside
                warnings.simplefilter("ignore", DeprecationWarning)
                restarted = ray.get_runtime_context().was_current_actor_reconstructed
            if restarted:
                self._resume_after_restart()
            else:  # a restart before the first update must not find a file of an earlier run
                self._save_state()

    def add_rollouts(self, filled: np.ndarray, window: np.ndarray, present: np.ndarray, disc_version: np.ndarray) -> None:
        """Finished episodes [N, ...]: kept until the next `train`."""
        self._rollouts.append({"filled": filled, "window": window, "present": present, "disc_version": disc_version})

    def train(self, iteration: int) -> dict[str, float]:
        """k steps on the rollouts received since the last call; episodes whose rewards came from a D
        more than gan.max_disc_lag versions old are left out (they describe a generator D no longer sees)."""
        start = time.perf_counter()
        restarts, self._restarts = self._restarts, 0
        if not self._rollouts:
            return {"disc_version": self.version, "disc_episodes": 0, "disc_actor_restarts": restarts}
        data = {key: np.concatenate([r[key] for r in self._rollouts]) for key in self._rollouts[0]}
        self._rollouts = []
        lag = self.version - data["disc_version"]
        fresh = lag <= self.gan.max_disc_lag
        stats = {
            "disc_lag_mean": float(lag.mean()),
            "disc_lag_max": int(lag.max()),
            "disc_episodes": int(fresh.sum()),
            "disc_episodes_too_old": int((~fresh).sum()),
        }
        if fresh.any() and self.gan.disc_steps > 0:
            rng = np.random.default_rng(iteration_seed(self.seed, iteration, 1))
            torch.manual_seed(iteration_seed(self.seed, iteration, 2))  # D's dropout masks: a resumed run redraws them
            stats.update(self._steps({key: value[fresh] for key, value in data.items()}, rng, self.gan.disc_steps))
            self.version += 1
            if self.version % self.gan.checkpoint_every == 0:
                self._save_state()
        stats["disc_version"] = self.version
        stats["disc_actor_restarts"] = restarts
        stats["disc_train_s"] = time.perf_counter() - start
        return stats

    def pretrain(self, generator_state: dict[str, torch.Tensor], windows: np.ndarray, steps: int) -> dict[str, float]:
        """The paper's optional step 3, before adversarial training: `steps` Adam steps, each on a fresh
        batch of real `windows` [N, T+1] (passed as an ObjectRef, Ray hands the actor the array) and
        the MaskMLE generator's in-fills of them. Stats: the last 10% of steps."""
        start = time.perf_counter()
        generator = Generator(self.missing_id, self.model_cfg).to(self.device)
        generator.load_state_dict(generator_state)
        generator.eval()
        rng = np.random.default_rng(iteration_seed(self.seed, 0, 5))
        sampling = torch.Generator(device=self.device).manual_seed(iteration_seed(self.seed, 0, 6))
        torch.manual_seed(iteration_seed(self.seed, 0, 7))  # D's dropout masks
        stats = []
        for _ in range(steps):
            window = sample_windows(windows, self.gan.disc_batch_size, rng)
            present = make_present(len(window), window.shape[1] - 1, mask_at(self.mask_cfg, 0), rng)  # the first iterations' mask rate
            with torch.no_grad(), autocast(self.precision, self.device, generator):
                filled, _ = generator.sample(
                    torch.as_tensor(window, device=self.device), torch.as_tensor(present, device=self.device),
                    self.gan.temperature, sampling,
                )
            stats.append(self._steps({"window": window, "filled": filled.cpu().numpy(), "present": present}, rng, 1))
        last = stats[-max(1, steps // 10):]
        self.version += 1
        self._save_state()
        return {f"disc_pretrain_{k.removeprefix('disc_')}": float(np.mean([s[k] for s in last])) for k in last[0]} | {
            "disc_pretrain_s": time.perf_counter() - start
        }

    def _steps(self, data: dict[str, np.ndarray], rng: np.random.Generator, steps: int) -> dict[str, float]:
        count = len(data["window"])
        losses, real_right, fake_right, masked_total = [], 0.0, 0.0, 0.0
        self.model.train()
        for _ in range(steps):
            rows = rng.permutation(count)[: self.gan.disc_batch_size]
            window, filled, present = (
                torch.as_tensor(data[key][rows], device=self.device) for key in ("window", "filled", "present")
            )
            context = mask_context(window, present, self.missing_id)
            with autocast(self.precision, self.device, self.model):
                real_logits, fake_logits = self.model.real_and_fake_logits(context, window, filled)
            loss = discriminator_loss(real_logits, fake_logits, present, real_label=1.0 - self.gan.disc_label_smoothing)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gan.grad_clip)
            self.optimizer.step()
            # Accuracy of the D that took this step, on its own batch, masked targets only.
            real, fake, masked = right_counts(real_logits, fake_logits, present)
            real_right, fake_right, masked_total = real_right + real, fake_right + fake, masked_total + masked
            losses.append(loss.item())
        masked_total = max(masked_total, 1.0)
        return {
            "disc_loss": float(np.mean(losses)),
            "disc_accuracy_real": real_right / masked_total,
            "disc_accuracy_fake": fake_right / masked_total,
            "disc_accuracy": (real_right + fake_right) / (2 * masked_total),
        }

    def weights(self) -> tuple[dict[str, torch.Tensor], int]:
        """(CPU state_dict, version)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, self.version

    def weights_for_runners(self) -> tuple[dict[str, np.ndarray], int]:
        """`weights()` as numpy arrays: what env runners load. Called with .remote(), the result stays in
        Ray's object store, and each runner reads numpy arrays from there without a copy, where torch
        tensors would be unpickled into new memory (benchmarks/README.md, "D's weights as numpy arrays")."""
        state, version = self.weights()
        return {k: v.numpy() for k, v in state.items()}, version

    def get_state(self) -> dict[str, Any]:
        """Tensors and plain Python only (loadable with torch.load(weights_only=True))."""
        self._wait_saved()
        weights, version = self.weights()
        return {"model": weights, "optimizer": self.optimizer.state_dict(), "version": version}

    def set_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self._rollouts = []
        self._save_state()

    def _save_state(self) -> None:
        """Snapshot the state now and write it (atomically, fsynced) on a background thread, while the
        driver goes on sampling and learning (the file is large at the paper's size). Anything that
        reads or replaces the state waits for the write first, so the file is never behind it then."""
        if self.state_path is None:
            return
        snapshot = copy.deepcopy(self.get_state())  # (get_state waits for the previous write)
        self._pending_save = self._writer.submit(save_checkpoint, self.state_path, {"discriminator_actor": snapshot})

    def _wait_saved(self) -> None:
        if self._pending_save is not None:
            pending, self._pending_save = self._pending_save, None
            pending.result()  # a failed write raises here

    def _resume_after_restart(self) -> None:
        self._restarts = 1
        if storage.exists(self.state_path):
            self.set_state(load_checkpoint(self.state_path)["discriminator_actor"])
            log.warning(f"[disc] actor restarted: resumed version {self.version} from {self.state_path}")
        else:  # restarted on another node than the one that saved it, with a local run_dir
            log.warning(f"[disc] actor restarted without {self.state_path}: D starts again from its initial weights")


def create_discriminator_actor(
    cfg: Config,
    vocab_size: int,
    generator_state: dict[str, torch.Tensor],
    discriminator_weights: Optional[dict[str, torch.Tensor]] = None,
):
    """The trainer as a Ray actor with the resources of cfg.resources.disc_* (returns its handle)."""
    import ray  # the trainer also runs in-process without Ray (benchmarks, tests): Ray loads only here

    r = cfg.resources
    actor = ray.remote(DiscriminatorTrainer).options(
        num_cpus=r.disc_num_cpus,
        num_gpus=r.disc_num_gpus,
        resources=dict(r.disc_resources) or None,
        max_restarts=DISC_MAX_RESTARTS,
        max_task_retries=-1,  # calls in flight when it dies run again on the restarted actor
    )
    # Resolved here: the actor's working directory need not be the driver's.
    state_path = str(storage.join(storage.absolute(cfg.run_dir), STATE_FILE))
    return actor.remote(cfg, vocab_size, generator_state, discriminator_weights, state_path)
