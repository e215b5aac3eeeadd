"""The RLlib learners around the hand-checked maths: what they compute from real episodes, and that
the single-process reference loop (rl/reference.py) computes the same."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from maskgan_rl.config import ALGORITHM_NAMES, load_config
from maskgan_rl.masking import mask_context, pack_observation, unpack_observation
from maskgan_rl.models.critic import make_critic
from maskgan_rl.models.generator import Generator
from maskgan_rl.rl.algorithms import ALGORITHMS, algorithm_config
from maskgan_rl.rl.module import policy_model_config
from maskgan_rl.rl.reference import actor_critic_losses
from maskgan_rl.rl.reinforce import RETURNS, MaskedReturnsToGo
from maskgan_rl.rl.returns import clipped_advantages, critic_loss, reinforce_loss

V, T, MISSING = 13, 6, 13
torch.set_num_threads(1)


def build_learner(algo: str, *overrides: str):
    cfg = load_config("synthetic", [f"data.seq_len={T}", "model.embed=8", "model.hidden=8", f"gan.algo={algo}", *overrides])
    observations = gym.spaces.Box(0, V, (2 * T + 3,), np.int64)
    learner = algorithm_config(cfg, V, {}, disc_actor=None).build_learner(  # built, as RLlib's LearnerGroup does
        env=None, spaces={"default_policy": (observations, gym.spaces.Discrete(V))}
    )
    return cfg, learner


def episode(
    window: np.ndarray, present: np.ndarray, actions: list[int], rewards: list[float], action_logp=None
) -> SingleAgentEpisode:
    """The episode InfillEnv would record: one step per masked target, left to right; `action_logp`:
    the log-probabilities the sampling policy gave the actions (default: a uniform policy's)."""
    context = np.where(np.r_[True, present], window, MISSING)
    masked = np.flatnonzero(~present)
    filled, observations = context.copy(), []
    for position, action in zip(masked, actions):
        observations.append(pack_observation(context, filled, np.array(position)))
        filled[position + 1] = action
    observations.append(pack_observation(context, filled, np.array(masked[-1])))
    # What an env runner stores beside each action (PPO's ratio and KL read them): a uniform policy.
    logp = np.full(len(actions), -np.log(V)) if action_logp is None else action_logp
    sampled_by = {"action_logp": np.asarray(logp, np.float32),
                  "action_dist_inputs": np.zeros((len(actions), V), np.float32)}
    return SingleAgentEpisode(
        observations=observations, actions=actions, rewards=rewards, extra_model_outputs=sampled_by,
        terminated=True, len_lookback_buffer=0,
    ).to_numpy()


def test_returns_connector_discounts_over_target_positions():
    # Masked targets 0, 2, 3 with rewards 1, 2, 4 and gamma 0.5 (test_returns.py's row 0):
    # R = [1 + 0.5^2 * 2 + 0.5^3 * 4, 2 + 0.5 * 4, 4] = [2, 4, 4].
    present = np.array([False, True, False, False, True, True])
    ep = episode(np.arange(T + 1), present, [5, 6, 7], [1.0, 2.0, 4.0])
    batch = MaskedReturnsToGo(gamma=0.5)(rl_module=None, episodes=[ep], batch={})
    (returns,) = batch[RETURNS].values()
    np.testing.assert_allclose(np.concatenate(returns), [2.0, 4.0, 4.0])


# An episode of three masked targets (0, 2, 3) of six, and its returns at gamma 0.5 by hand.
PRESENT = np.array([False, True, False, False, True, True])
ACTIONS, REWARDS = [5, 6, 7], [-1.0, -2.0, -0.5]
RETURNS_BY_HAND = torch.tensor([[-1.0 - 0.25 * 2.0 - 0.125 * 0.5, -2.0 - 0.5 * 0.5, -0.5]])


def outputs_by_hand(module, ep: SingleAgentEpisode) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's networks on the episode, before any update: (generator logits [3, V] at the
    masked targets, critic values [1, 3])."""
    final = torch.as_tensor(unpack_observation(ep.get_observations(-1))[1])[None]
    context = torch.as_tensor(unpack_observation(ep.get_observations(0))[0])[None]
    masked = torch.as_tensor(~PRESENT)
    with torch.no_grad():
        return module.generator.logits(context, final)[0, masked], module.critic(final)[0, masked][None]


def test_reinforce_learner_loss_is_the_hand_checked_loss_of_the_episode():
    cfg, learner = build_learner("reinforce", "gan.gamma=0.5", "gan.advantage_clip=1.5")
    ep = episode(np.random.default_rng(0).integers(0, V, T + 1), PRESENT, ACTIONS, REWARDS)
    logits, values = outputs_by_hand(learner.module["default_policy"].unwrapped(), ep)
    logp = torch.log_softmax(logits, -1)[range(3), ACTIONS][None]
    returns = RETURNS_BY_HAND
    nothing_present = torch.zeros_like(returns, dtype=torch.bool)
    advantages = clipped_advantages(returns, values, nothing_present, cfg.gan.advantage_clip)
    assert advantages.abs().max() == pytest.approx(1.5)  # the clip is in play

    results = learner.update(episodes=[ep])["default_policy"]
    assert results["policy_loss"].peek() == pytest.approx(float(reinforce_loss(logp, advantages, nothing_present)), rel=1e-4)
    assert results["vf_loss"].peek() == pytest.approx(float(critic_loss(values, returns, nothing_present)), rel=1e-4)
    assert results["mean_return"].peek() == pytest.approx(float(returns.mean()), rel=1e-5)


def test_the_registry_holds_exactly_the_algorithms_the_config_accepts():
    # config validation checks gan.algo against ALGORITHM_NAMES without importing RL: a name there
    # without an entry here would pass validation and fail at training time.
    assert set(ALGORITHMS) == set(ALGORITHM_NAMES) == {"reinforce", "ppo", "appo", "impala"}


def test_reinforce_learner_weights_cold_samples_by_pi_over_mu():
    # Cold exploration: the tokens were sampled at temperature 0.5 (mu), the loss weights each
    # step's term by min(pi(a) / mu(a), 1.2) with pi at temperature 1.
    cfg, learner = build_learner("reinforce", "gan.gamma=0.5", "gan.rollout_temperature=0.5", "gan.importance_weight_clip=1.2")
    window = np.random.default_rng(1).integers(0, V, T + 1)
    logits, values = outputs_by_hand(learner.module["default_policy"].unwrapped(), episode(window, PRESENT, ACTIONS, REWARDS))
    logp = torch.log_softmax(logits, -1)[range(3), ACTIONS][None]
    logp_mu = torch.log_softmax(logits / 0.5, -1)[range(3), ACTIONS][None]
    weights = torch.exp(logp - logp_mu).clamp(max=1.2)
    assert (weights < 1.2).any() and (weights != 1.0).all()  # (the weights differ from 1, not all clipped)
    nothing_present = torch.zeros_like(RETURNS_BY_HAND, dtype=torch.bool)
    advantages = clipped_advantages(RETURNS_BY_HAND, values, nothing_present, cfg.gan.advantage_clip)
    expected = -(weights * logp * advantages).mean()

    results = learner.update(episodes=[episode(window, PRESENT, ACTIONS, REWARDS, logp_mu[0].numpy())])["default_policy"]
    assert results["policy_loss"].peek() == pytest.approx(float(expected), rel=1e-4)
    assert results["importance_weight_mean"].peek() == pytest.approx(float(weights.mean()), rel=1e-4)


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_synchronous_learners_learn_from_nucleus_cut_cold_samples(algo):
    # PPO keeps the behaviour policy's logits (-inf outside the nucleus) in its batch and reads mu's
    # log-probabilities for its ratio: all must stay finite. (APPO's and IMPALA's learners update in a
    # thread of their own: test_adversarial.py runs them on cold samples end to end.)
    _, learner = build_learner(algo, "gan.rollout_temperature=0.5", "gan.rollout_top_p=0.5")
    ep = episode(np.arange(T + 1), PRESENT, ACTIONS, REWARDS, action_logp=[-0.1, -0.7, -0.3])
    cut = np.zeros((3, V), np.float32)
    cut[:, [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]] = -np.inf  # the nucleus: tokens 5, 6, 7
    ep.extra_model_outputs["action_dist_inputs"].data[:] = cut
    before = {k: v.clone() for k, v in learner.module["default_policy"].unwrapped().generator.state_dict().items()}
    results = learner.update(episodes=[ep])["default_policy"]
    losses = [results[key].peek() for key in ("policy_loss", "mean_pi_loss", "vf_loss") if key in results]
    assert losses and all(np.isfinite(loss) for loss in losses)
    after = learner.module["default_policy"].unwrapped().generator.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values()) and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_generator_and_critic_learn_at_their_own_rates(algo):
    _, learner = build_learner(algo, "gan.gen_lr=0.003", "gan.critic_lr=0.0007", "gan.adam_beta1=0.5")
    module = learner.module["default_policy"].unwrapped()
    for name, network, lr in (("generator", module.generator, 0.003), ("critic", module.critic, 0.0007)):
        optimizer = learner.get_optimizer("default_policy", name)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)
        assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in network.parameters()}


def test_ppo_fits_the_critic_to_large_returns_without_clipping_its_error():
    # Returns are sums of log D <= 0 and reach -10 and below; RLlib's PPO clips the squared value
    # error at vf_clip_param (10 by default), which would leave the critic no gradient there.
    _, learner = build_learner("ppo")
    present = np.array([False, True, False, False, True, True])
    ep = episode(np.arange(T + 1), present, [5, 6, 7], [-10.0, -10.0, -10.0])
    results = learner.update(episodes=[ep])["default_policy"]
    assert results["vf_loss_unclipped"].peek() > 10.0
    assert results["vf_loss"].peek() == pytest.approx(results["vf_loss_unclipped"].peek())


@pytest.mark.parametrize("critic_design", ["lstm", "head", "head_stop_gradient"])
def test_reference_loop_losses_and_gradients_equal_the_reinforce_learners(critic_design):
    # The same weights, episodes and rewards through rl/reference.py's actor_critic_losses and through
    # the RLlib learner's connectors, module and loss. Clipping off: the gradients are compared as computed.
    cfg, learner = build_learner(
        "reinforce", "gan.gamma=0.7", "gan.advantage_clip=0.8", "gan.temperature=0.6", "gan.grad_clip=1e9",
        f"gan.critic={critic_design}",
    )
    module = learner.module["default_policy"].unwrapped()
    rng = np.random.default_rng(5)
    windows = torch.as_tensor(rng.integers(0, V, (3, T + 1)))
    present = torch.tensor([[False, True, False, False, True, True],  # a gap between masked targets
                            [True, False, False, False, True, True],
                            [False, False, True, True, True, False]])
    filled = torch.where(torch.cat([torch.ones(3, 1, dtype=torch.bool), present], 1), windows, torch.as_tensor(rng.integers(0, V, (3, T + 1))))
    rewards = torch.as_tensor(-rng.exponential(1.0, (3, T)), dtype=torch.float32)  # log D < 0; present targets' unused
    episodes = [
        episode(windows[b].numpy(), present[b].numpy(), filled[b, 1:][~present[b]].tolist(), rewards[b][~present[b]].tolist())
        for b in range(3)
    ]

    generator = Generator(V, policy_model_config(cfg.model))
    generator.load_state_dict(module.generator.state_dict())
    critic = make_critic(critic_design, V, policy_model_config(cfg.model), generator)
    critic.load_state_dict(module.critic.state_dict())
    policy_loss, value_loss = actor_critic_losses(
        generator, critic, mask_context(windows, present, MISSING), filled, present, rewards, cfg.gan
    )
    (policy_loss + value_loss).backward()

    results = learner.update(episodes=episodes)["default_policy"]  # leaves each parameter's gradient in .grad
    assert results["policy_loss"].peek() == pytest.approx(policy_loss.item(), rel=1e-5)
    assert results["vf_loss"].peek() == pytest.approx(value_loss.item(), rel=1e-5)
    for mine, theirs in ((generator, module.generator), (critic, module.critic)):
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name
    assert any(p.grad.abs().sum() > 0 for p in generator.parameters())
    # The value loss alone reaches the generator's encoder with gan.critic=head only.
    values_only = make_critic(critic_design, V, policy_model_config(cfg.model), generator)
    values_only.load_state_dict(module.critic.state_dict())
    generator.zero_grad()
    _, value_loss = actor_critic_losses(generator, values_only, mask_context(windows, present, MISSING), filled, present, rewards, cfg.gan)
    value_loss.backward()
    encoder_grad = sum(float(p.grad.abs().sum()) for p in generator.seq2seq.encoder.parameters() if p.grad is not None)
    assert (encoder_grad > 0) == (critic_design == "head")
