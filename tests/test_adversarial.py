"""End-to-end adversarial training in a real local Ray, for every algorithm of the registry.

Tiny everything (vocabulary 30, T=8, 8-unit LSTMs, 16 episodes per iteration) so each algorithm
trains a few iterations in seconds; the cost is mostly starting the env-runner and D processes.
"""

import copy
import io
import math

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns

from maskgan_rl.config import Config
from maskgan_rl.dataset import WindowDataset, prepare_data
from maskgan_rl.masking import mask_context, num_masked, pack_observation, unpack_observation
from maskgan_rl.models.discriminator import Discriminator, log_real_prob
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.losses import masked_cross_entropy
from maskgan_rl.rl.adversarial import AdversarialTrainer
from maskgan_rl.rl.algorithms import ALGORITHMS
from maskgan_rl.rl.discriminator_actor import DiscriminatorTrainer

pytestmark = pytest.mark.slow


def tiny_config(run_dir, algo: str, runners: int) -> Config:
    cfg = Config()
    cfg.run_dir = str(run_dir)
    cfg.data.seq_len = 8
    cfg.data.oracle_vocab, cfg.data.oracle_hidden = 30, 8
    cfg.data.synthetic_train, cfg.data.synthetic_valid, cfg.data.synthetic_test = 200, 40, 40
    cfg.model.embed = cfg.model.hidden = 8
    cfg.gan.algo = algo
    cfg.gan.episodes_per_iteration = cfg.gan.disc_batch_size = 16
    cfg.gan.gen_lr = cfg.gan.disc_lr = 1e-2  # big steps: changes must show after 2-3 iterations
    cfg.resources.num_env_runners = runners
    cfg.resources.num_envs_per_env_runner = 4
    cfg.resources.disc_num_cpus = 0.5  # runner 1 CPU + D 0.5 on the 2-CPU test Ray; the learner is the driver
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("adversarial")


def start(cfg: Config):
    data = prepare_data(cfg)
    torch.manual_seed(0)
    generator = Generator(len(data.vocab), cfg.model)
    return data, generator.state_dict()


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before)


def torch_round_trip(state: dict) -> dict:
    """Through torch.save and torch.load(weights_only=True), as the lead's checkpoints do."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def sample_on_runner(trainer: AdversarialTrainer):
    """One episode sampled by the (remote) env runner: its rewards, final context/filled, info and
    the names of the module outputs it stored."""

    def one_episode(runner):
        episode = runner.sample(num_episodes=1)[0]
        context, filled, _ = unpack_observation(episode.get_observations(-1))
        first_position = unpack_observation(episode.get_observations(0))[2]
        info = episode.get_infos(-1)
        stored = set(episode.extra_model_outputs)
        return episode.get_rewards(), first_position, context.copy(), filled.copy(), info, stored

    return trainer.algo.env_runner_group.foreach_env_runner(one_episode, local_env_runner=False)[0]


@pytest.mark.parametrize(
    "algo, critic, precision",
    [(algo, "lstm", "32") for algo in sorted(ALGORITHMS)]
    + [("reinforce", "head", "32"), ("ppo", "head_stop_gradient", "32"), ("reinforce", "lstm", "bf16-mixed")],
)
def test_training_updates_generator_and_discriminator_and_runners_use_the_new_d(ray_session, run_dir, algo, critic, precision):
    cfg = tiny_config(run_dir, algo, runners=1)
    cfg.gan.critic_warmup_iterations = 1
    cfg.gan.critic = critic  # a value head on the generator: the warm-up must still leave the generator alone
    cfg.resources.precision = precision  # bf16-mixed: runner, learner and D actor compute in bfloat16
    if algo in ("appo", "impala"):  # V-trace reads mu's log-probabilities: it must learn from cold samples too
        cfg.gan.rollout_temperature, cfg.gan.rollout_top_p = 0.7, 0.95
    data, generator_state = start(cfg)
    trainer = AdversarialTrainer(cfg, data, generator_state)
    try:
        # The remote runner samples; the driver keeps an env runner (a generator copy) only as IMPALA's
        # and APPO's fallback sampler.
        assert (trainer.algo.env_runner_group.local_env_runner is not None) == (algo in ("appo", "impala"))
        d_before = ray.get(trainer.disc_actor.get_state.remote())["model"]
        critic_before = trainer.critic_state_dict()
        metrics = [trainer.train_iteration()]
        # The warm-up iteration steps the critic only; the generator stays at its start.
        assert changed(critic_before, trainer.critic_state_dict())
        assert not changed(generator_state, trainer.generator_state_dict())
        metrics += [trainer.train_iteration() for _ in range(2)]
        assert changed(generator_state, trainer.generator_state_dict())
        assert changed(d_before, ray.get(trainer.disc_actor.get_state.remote())["model"])
        losses = [m["disc_loss"] for m in metrics if "disc_loss" in m]
        assert len(losses) >= 2 and len(set(losses)) > 1
        # Rewards are log D < 0 at each of an episode's 3 masked targets; the synchronous algorithms
        # fill (at least) 16 windows an iteration, the asynchronous ones what their runners sent.
        assert all(m["episode_reward_mean"] < 0 for m in metrics)
        least = 16 * 3 if algo in ("reinforce", "ppo") else 1
        assert all(m["masked_tokens"] >= least for m in metrics), [m["masked_tokens"] for m in metrics]
        assert any(m.get("grad_norm_generator", 0) > 0 and m.get("grad_norm_critic", 0) > 0 for m in metrics)
        if algo in ("reinforce", "ppo"):  # the number the critic designs are compared by (benchmarks/README.md)
            assert -1.0 <= trainer.rllib_metrics["rllib/learner/default_policy/vf_explained_var"] <= 1.0
        # The divergence guard's masked perplexity (computed on the learner) is the current generator's.
        # Only the synchronous algorithms hold still between the two reads: APPO's and IMPALA's learner
        # thread may apply a queued update after the metric was computed.
        if algo in ("reinforce", "ppo"):
            windows, present = trainer._eval_batch
            generator = Generator(len(data.vocab), cfg.model).eval()
            generator.load_state_dict(trainer.generator_state_dict())
            with torch.no_grad():
                logits = generator.logits(mask_context(windows, present, len(data.vocab)), windows)
            nll, _ = masked_cross_entropy(logits, windows[:, 1:], ~present)
            assert metrics[-1]["learner_masked_perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
        assert all(math.isfinite(m["learner_masked_perplexity"]) and m["learner_masked_perplexity"] > 1.0 for m in metrics)
        # Synchronous algorithms score every rollout with the current D; async ones at most one push behind.
        assert all(m.get("disc_lag_max", 0) <= (1 if algo in ("appo", "impala") else 0) for m in metrics)

        # The runner's environment rewards the tokens exactly as the actor's current D would.
        rewards, first_position, context, filled, info, stored = sample_on_runner(trainer)
        # Episodes keep the vocabulary-sized logits only where the loss reads them back (PPO's).
        assert Columns.ACTION_LOGP in stored and (Columns.ACTION_DIST_INPUTS in stored) == (algo == "ppo")
        weights, version = ray.get(trainer.disc_actor.weights.remote())
        assert info["disc_version"] == version == metrics[-1]["disc_version"]
        disc = Discriminator(len(data.vocab), cfg.model).eval()
        disc.load_state_dict(weights)
        with torch.no_grad():
            expected = log_real_prob(disc(torch.as_tensor(context)[None], torch.as_tensor(filled)[None]))[0]
        masked = ~torch.as_tensor(info["present"])
        assert int(first_position) == int(masked.nonzero()[0])
        # (In bfloat16 the runner's D rounds to 8 significant bits: close to the float32 reward, not equal.)
        error = np.abs(np.asarray(rewards) - expected[masked].numpy()).max()
        assert error < 1e-5 if precision == "32" else 1e-6 < error < 0.05, error

        # Every algorithm's state survives the checkpoint format and loads back into its learner.
        trainer.set_state(torch_round_trip(trainer.get_state()))
        assert trainer.train_iteration()["iteration"] == 4
    finally:
        trainer.stop()


def test_resumed_run_repeats_the_uninterrupted_next_iteration(ray_session, run_dir):
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.gan.generator_ema = 0.5
    data, generator_state = start(cfg)

    trainer = AdversarialTrainer(cfg, data, generator_state)
    try:
        trainer.train_iteration()
        first_generator = trainer.generator_state_dict()
        state = torch_round_trip(trainer.get_state())
        expected = trainer.train_iteration()
        expected_generator = trainer.generator_state_dict()
        expected_critic = trainer.critic_state_dict()
        expected_average = trainer.shipped_generator_state_dict()
    finally:
        trainer.stop()

    resumed = AdversarialTrainer(cfg, data, generator_state)
    try:
        resumed.set_state(state)
        again = resumed.train_iteration()
        generator, critic = resumed.generator_state_dict(), resumed.critic_state_dict()
        average = resumed.shipped_generator_state_dict()
    finally:
        resumed.stop()
    assert again["iteration"] == expected["iteration"] == 2
    for key in ("episode_reward_mean", "disc_loss", "policy_loss", "vf_loss", "learner_masked_perplexity", "disc_version"):
        assert again[key] == expected[key], key
    assert not changed(expected_generator, generator) and not changed(expected_critic, critic)
    assert changed(generator_state, generator)  # (and training did move it)
    # The shipped generator: the moving average from MaskMLE's weights on, 0.5 * past + 0.5 * new
    # after every iteration, carried through the checkpoint.
    for name, value in average.items():
        by_hand = 0.25 * generator_state[name] + 0.25 * first_generator[name] + 0.5 * expected_generator[name]
        assert torch.allclose(value, by_hand, atol=1e-6) and torch.equal(value, expected_average[name]), name


def test_discriminator_trainer_skips_episodes_scored_by_a_too_old_d(run_dir):
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.gan.max_disc_lag = 1
    cfg.gan.disc_steps = 1  # one step: the loss and accuracy it reports are those of D before it
    data, generator_state = start(cfg)
    trainer = DiscriminatorTrainer(cfg, len(data.vocab), generator_state)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, len(data.vocab), (6, cfg.data.seq_len + 1))
    present = np.ones((6, cfg.data.seq_len), dtype=bool)
    present[:, 2:5] = False
    trainer.version = 3
    before = copy.deepcopy(trainer.get_state())  # get_state hands out the live tensors
    trainer.add_rollouts(filled=windows[::-1].copy(), window=windows, present=present, disc_version=np.array([3, 3, 2, 2, 1, 0]))
    stats = trainer.train(iteration=1)
    assert (stats["disc_episodes"], stats["disc_episodes_too_old"]) == (4, 2)
    assert stats["disc_lag_max"] == 3 and stats["disc_lag_mean"] == pytest.approx((0 + 0 + 1 + 1 + 2 + 3) / 6)
    assert stats["disc_version"] == 4
    # Loss and accuracy of the D before the step on the 4 fresh episodes, by hand: mean over masked
    # targets of (-log sigmoid(real) - log(1 - sigmoid(fake))) / 2; real called real when its logit > 0.
    disc = Discriminator.from_config(len(data.vocab), cfg).eval()
    disc.load_state_dict(before["model"])
    fresh_windows, fresh_filled = torch.as_tensor(windows[:4]), torch.as_tensor(windows[::-1][:4].copy())
    masked = ~torch.as_tensor(present[:4])
    context = mask_context(fresh_windows, ~masked, len(data.vocab))
    with torch.no_grad():
        real, fake = disc(context, fresh_windows)[masked], disc(context, fresh_filled)[masked]
    by_hand = ((-torch.log(torch.sigmoid(real))).mean() + (-torch.log(1 - torch.sigmoid(fake))).mean()) / 2
    assert stats["disc_loss"] == pytest.approx(float(by_hand), rel=1e-5)
    right = float((real > 0).sum() + (fake <= 0).sum()) / (2 * int(masked.sum()))
    assert stats["disc_accuracy"] == pytest.approx(right)
    idle = trainer.train(iteration=2)  # nothing new: no step, no new version
    assert idle["disc_version"] == 4 and idle["disc_episodes"] == 0 and "disc_loss" not in idle

    restored = DiscriminatorTrainer(cfg, len(data.vocab), generator_state)
    restored.set_state(trainer.get_state())
    assert restored.version == 4 and not changed(trainer.weights()[0], restored.weights()[0])

    # The update used the 4 fresh episodes only: given just those, a twin takes the same step.
    twin = DiscriminatorTrainer(cfg, len(data.vocab), generator_state)
    twin.set_state(before)
    twin.add_rollouts(filled=windows[::-1][:4].copy(), window=windows[:4], present=present[:4], disc_version=np.array([3, 3, 2, 2]))
    twin.train(iteration=1)
    assert not changed(restored.weights()[0], twin.weights()[0])


def test_discriminator_update_with_dropout_depends_on_seed_and_iteration_only(run_dir):
    # A resumed run must redraw D's dropout masks as the uninterrupted one did, whatever else the
    # process drew from torch's generator before.
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.model.keep_prob = 0.5
    data, generator_state = start(cfg)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, len(data.vocab), (6, cfg.data.seq_len + 1))
    present = np.ones((6, cfg.data.seq_len), dtype=bool)
    present[:, 2:5] = False
    updated = []
    for draws_before, iteration in ((0, 5), (3, 5), (0, 6)):
        torch.manual_seed(0)  # the same D head to start from
        trainer = DiscriminatorTrainer(cfg, len(data.vocab), generator_state)
        trainer.add_rollouts(filled=windows[::-1].copy(), window=windows, present=present, disc_version=np.zeros(6, int))
        torch.rand(draws_before)
        trainer.train(iteration=iteration)
        updated.append(trainer.weights()[0])
    assert not changed(updated[0], updated[1])
    assert changed(updated[0], updated[2])  # another iteration, other dropout masks (and batches)


def test_discriminator_pretraining_learns_to_tell_maskmle_infills_from_real_windows(run_dir):
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.gan.disc_lr = 3e-3
    data, generator_state = start(cfg)  # an untrained generator: its in-fills are easy to tell apart
    trainer = DiscriminatorTrainer(cfg, len(data.vocab), generator_state)
    first = trainer.pretrain(generator_state, WindowDataset(data.train_path).windows, steps=5)
    before = {k: v.clone() for k, v in trainer.weights()[0].items()}
    later = trainer.pretrain(generator_state, WindowDataset(data.train_path).windows, steps=150)
    assert trainer.version == 2 and changed(before, trainer.weights()[0])
    assert later["disc_pretrain_loss"] < first["disc_pretrain_loss"]
    assert later["disc_pretrain_accuracy"] > max(0.6, first["disc_pretrain_accuracy"])


def test_overlapped_discriminator_update_runs_one_iteration_behind(ray_session, run_dir):
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.gan.disc_overlap = True
    data, generator_state = start(cfg)
    trainer = AdversarialTrainer(cfg, data, generator_state)
    try:
        first = trainer.train_iteration()
        assert "disc_loss" not in first  # its D update is still running
        later = [trainer.train_iteration() for _ in range(2)]
        assert [m["disc_version"] for m in later] == [1, 2]  # each reports the previous iteration's update
        assert [m["disc_lag_max"] for m in later] == [0, 1] and all(m["disc_episodes_too_old"] == 0 for m in later)
        assert trainer.get_state()["discriminator"]["version"] == 3  # a checkpoint waits for the running update
        after_checkpoint = trainer.train_iteration()  # ... and the update it waited for is still reported
        assert after_checkpoint["disc_version"] == 3 and "disc_loss" in after_checkpoint
    finally:
        trainer.stop()


def test_reinforce_updates_the_discriminator_alongside_its_learner_with_the_same_results(ray_session, run_dir):
    # D's update needs only the sampled episodes, so REINFORCE starts it before its learner update;
    # started after it instead (as for the other algorithms), every number must come out the same.
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    data, generator_state = start(cfg)

    def run(alongside: bool) -> tuple[list, list, dict, dict]:
        trainer = AdversarialTrainer(cfg, data, generator_state)
        events, start_update, update = [], trainer.algo.on_episodes_sampled, trainer.algo.learner_group.update
        trainer.algo.on_episodes_sampled = (lambda: (events.append("D starts"), start_update())) if alongside else None
        trainer.algo.learner_group.update = lambda **kwargs: (events.append("learner"), update(**kwargs))[1]
        try:
            metrics = [trainer.train_iteration() for _ in range(2)]
            return events, metrics, trainer.generator_state_dict(), trainer.discriminator_state_dict()
        finally:
            trainer.stop()

    events, metrics, generator, disc = run(alongside=True)
    assert events == ["D starts", "learner"] * 2
    assert [m["disc_version"] for m in metrics] == [1, 2] and all(m["disc_lag_max"] == 0 for m in metrics)
    assert all(m["disc_episodes"] == cfg.gan.episodes_per_iteration for m in metrics)
    events, metrics_after, generator_after, disc_after = run(alongside=False)
    assert events == ["learner"] * 2
    for key in ("episode_reward_mean", "disc_loss", "policy_loss", "vf_loss", "disc_version"):
        assert [m[key] for m in metrics] == [m[key] for m in metrics_after], key
    assert not changed(generator, generator_after) and not changed(disc, disc_after)


def test_runners_send_each_finished_episode_to_the_discriminator_actor(ray_session, run_dir):
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from maskgan_rl.rl.callbacks import MaskGANCallbacks

    cfg = tiny_config(run_dir, "reinforce", runners=0)
    data, generator_state = start(cfg)
    rng = np.random.default_rng(0)
    T, V = cfg.data.seq_len, len(data.vocab)
    windows, filled = rng.integers(0, V, (2, 3, T + 1))
    present = np.ones((3, T), dtype=bool)
    present[:, 2:5] = False

    def episode(i: int, terminated: bool) -> SingleAgentEpisode:
        observations = [pack_observation(windows[i], filled[i], np.array(2))] * 4  # only the last one and info are read
        info = {"window": windows[i], "present": present[i], "disc_version": 0}
        return SingleAgentEpisode(observations=observations, actions=[0] * 3, rewards=[0.0] * 3,
                                  infos=[{}] * 3 + [info], terminated=terminated, len_lookback_buffer=0)

    actor = ray.remote(DiscriminatorTrainer).remote(cfg, V, generator_state)
    local = DiscriminatorTrainer(cfg, V, generator_state)
    local.set_state(ray.get(actor.get_state.remote()))  # the same D to start from
    MaskGANCallbacks(disc_actor=actor).on_sample_end(samples=[episode(0, True), episode(1, False), episode(2, True)])
    ray.get(actor.train.remote(1))
    # The same update, given the two finished episodes' in-fills and real windows directly:
    local.add_rollouts(filled=filled[[0, 2]], window=windows[[0, 2]], present=present[[0, 2]], disc_version=np.zeros(2, int))
    local.train(1)
    assert not changed(local.weights()[0], ray.get(actor.weights.remote())[0])


def test_levers_in_a_running_adversarial_stage(ray_session, run_dir):
    # Cold exploration, a regularised D of its own size and the mask-rate curriculum, all at once.
    cfg = tiny_config(run_dir, "reinforce", runners=0)
    cfg.mask.strategy = "random"  # T=8 targets: round((1 - rate) * 8) masked
    # Iterations 0-3: rates 0.9, 0.7667, 0.6333, 0.5 -> round(8 * (1 - rate)) = 1, 2, 3, 4 masked targets.
    cfg.mask.curriculum_iterations, cfg.mask.curriculum_start_present_rate = 3, 0.9
    cfg.gan.rollout_temperature, cfg.gan.rollout_top_p = 0.5, 0.9
    cfg.gan.disc_hidden, cfg.gan.disc_layer_norm, cfg.gan.disc_weight_decay = 12, True, 1e-3
    data, generator_state = start(cfg)
    trainer = AdversarialTrainer(cfg, data, generator_state)
    env = trainer.algo.env_runner.env.unwrapped
    try:
        metrics = []
        for iteration, rate, masked in ((1, 0.9 - 0.4 / 3, 2), (2, 0.9 - 0.8 / 3, 3), (3, 0.5, 4)):
            metrics.append(trainer.train_iteration())
            assert env._episodes.mask_cfg.present_rate == pytest.approx(rate), iteration
            assert num_masked(env._episodes.mask_cfg, 8) == masked and metrics[-1]["masked_tokens"] % masked == 0
            if iteration == 1:
                state = torch_round_trip(trainer.get_state())
        # Reinforce weighted its tokens (mean weight <= the clip, and not all exactly 1).
        assert all(0 < m["importance_weight_mean"] <= cfg.gan.importance_weight_clip for m in metrics)
        assert any(m["importance_weight_mean"] != 1.0 for m in metrics)
        # D (12 units, LayerNorm) learned and the environments hold it.
        assert tuple(env._episodes.discriminator.head.weight.shape) == (1, 12)

        # A sampled episode recorded log mu(a): the policy's log-probability at temperature 0.5, cut to
        # its 0.9 nucleus, recomputed here from the generator's weights.
        episode = trainer.algo.env_runner.sample(num_episodes=1)[0]
        generator = Generator(len(data.vocab), cfg.model).eval()
        generator.load_state_dict(trainer.generator_state_dict())
        for step in range(len(episode)):
            context, filled, position = unpack_observation(torch.as_tensor(episode.get_observations(step)))
            with torch.no_grad():
                logits = generator.logits(context[None], filled[None])
            logits = logits[0, int(position)] / 0.5
            probs, order = torch.softmax(logits, -1).sort(descending=True)
            nucleus = order[: int((probs.cumsum(0) < 0.9).sum()) + 1]
            action = int(episode.get_actions(step))
            assert action in nucleus.tolist()
            log_mu = torch.log_softmax(logits[nucleus], -1)[nucleus.tolist().index(action)]
            assert float(episode.get_extra_model_outputs(Columns.ACTION_LOGP, step)) == pytest.approx(float(log_mu), abs=1e-4)

        # Resumed at iteration 1 (after iteration 3's rate 0.5), the next iteration masks at iteration 2's rate again.
        trainer.set_state(state)
        assert trainer.train_iteration()["iteration"] == 2
        assert env._episodes.mask_cfg.present_rate == pytest.approx(0.9 - 0.8 / 3)
    finally:
        trainer.stop()
