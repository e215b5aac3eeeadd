"""The RLlib policy module: the generator's logits at the position being filled, the critic's value there."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.connectors.module_to_env.get_actions import GetActions
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

from maskgan_rl.config import Config
from maskgan_rl.masking import mask_context, pack_observation
from maskgan_rl.models import Generator
from maskgan_rl.rl.module import FINAL_FILLED, module_spec

V, T, B = 13, 8, 6
torch.set_num_threads(1)


def config(keep_prob: float = 1.0) -> Config:
    cfg = Config()
    cfg.model.embed = cfg.model.hidden = 8
    cfg.model.layers = 2
    cfg.model.keep_prob = keep_prob
    return cfg


def build(inference_only: bool = False, keep_prob: float = 1.0):
    observations = gym.spaces.Box(0, V, (2 * T + 3,), np.int64)
    spec = module_spec(config(keep_prob), V)
    spec.observation_space, spec.action_space, spec.inference_only = observations, gym.spaces.Discrete(V), inference_only
    torch.manual_seed(0)
    return spec.build()


def observation(seed: int = 0) -> dict[str, torch.Tensor]:
    """Mid-episode observations: masked block at targets 2..5, row b is at a position in it, earlier ones filled."""
    g = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, V, (B, T + 1), generator=g)
    present = torch.ones(B, T, dtype=torch.bool)
    present[:, 2:6] = False
    position = torch.tensor([2, 3, 4, 5, 5, 2])
    filled = windows.clone()
    for b, p in enumerate(position):
        filled[b, p + 1 : 7] = V  # masked targets from `position` on are still missing
    return {"context": mask_context(windows, present, V), "filled": filled, "position": position}


def batch(obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The module's input batch: `obs`'s parts packed into observations as the environment sends them."""
    return {Columns.OBS: pack_observation(obs["context"], obs["filled"], obs["position"])}


def test_logits_are_the_generator_logits_at_position():
    module = build()
    obs = observation()
    out = module.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS]
    with torch.no_grad():
        full = module.generator.logits(obs["context"], obs["filled"])
    assert out.shape == (B, V)
    assert torch.allclose(out, full[torch.arange(B), obs["position"]], atol=1e-5)
    train = module.forward_train(batch(obs))[Columns.ACTION_DIST_INPUTS]
    assert train.requires_grad and torch.allclose(train, out, atol=1e-5)


def test_the_learner_differentiates_the_policy_that_sampled_even_with_dropout_configured():
    # RLlib samples in eval mode and computes losses in train mode: with dropout in the policy the
    # learner's log-probabilities (PPO's ratio, V-trace's weights) would be another policy's.
    module = build(keep_prob=0.5)
    obs = observation()
    module.eval()
    sampled = module.forward_exploration(batch(obs))[Columns.ACTION_DIST_INPUTS]  # the logits the tokens came from
    values = module.compute_values(batch(obs))
    module.train()
    for _ in range(3):
        assert torch.allclose(module.forward_train(batch(obs))[Columns.ACTION_DIST_INPUTS], sampled, atol=1e-5)
        assert torch.allclose(module.compute_values(batch(obs)), values, atol=1e-5)


def test_values_are_the_critic_values_at_position_and_ignore_later_blanks():
    module = build()
    obs = observation()
    values = module.compute_values(batch(obs))
    assert values.shape == (B,)
    # Whatever stands after `position` (missing or not) must not change the value there (causal critic).
    later = obs["filled"].clone()
    later[later == V] = 1
    with torch.no_grad():
        expected = module.critic(later)[torch.arange(B), obs["position"]]
    assert torch.allclose(values, expected, atol=1e-5)


def test_loading_a_generator_state_changes_logits_and_starts_the_critic_from_its_decoder():
    module = build()
    obs = observation()
    before = module.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS]
    torch.manual_seed(1)
    other = Generator(V, config().model)
    module.load_generator_state(other.state_dict())
    after = module.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS]
    with torch.no_grad():
        expected = other.logits(obs["context"], obs["filled"])[torch.arange(B), obs["position"]]
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-5)
    assert torch.equal(module.critic.embedding.weight, other.seq2seq.embedding.weight)
    assert all(torch.equal(a, b) for a, b in zip(module.critic.lstm.parameters(), other.seq2seq.decoder.parameters()))


def test_temperature_scales_logits_and_target_network_starts_equal():
    module = build()
    obs = observation()
    logits = module.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS]
    module.temperature = 0.5
    assert torch.allclose(module.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS], 2 * logits, atol=1e-5)
    module.make_target_networks()
    with torch.no_grad():
        target = module.forward_target(batch(obs))[TARGET_NETWORK_ACTION_DIST_INPUTS]
    assert torch.allclose(target, 2 * logits, atol=1e-5)
    assert not any(p.requires_grad for p in module._target_generator.parameters())


def test_env_runner_copy_has_no_critic_and_takes_the_learner_weights():
    learner, runner = build(), build(inference_only=True)
    assert not hasattr(runner, "critic")
    weights = learner.get_state(inference_only=True)
    assert not any(key.startswith("critic.") for key in weights)
    runner.set_state(weights)
    obs = observation()
    assert torch.allclose(
        runner.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS],
        learner.forward_inference(batch(obs))[Columns.ACTION_DIST_INPUTS],
    )


def test_learner_batches_share_one_pass_per_episode_with_the_same_results():
    """Rows = every step of two episodes; with each episode's final `filled` the module runs 2
    sequences instead of 8 and must give what the per-step observations give."""
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, V, (2, T + 1), generator=g)
    present = torch.ones(2, T, dtype=torch.bool)
    present[:, 2:6] = False
    rows = {"context": [], "filled": [], "position": []}
    finals = []
    for e in range(2):
        final = windows[e].clone()
        final[3:7] = torch.randint(0, V, (4,), generator=g)  # the generator's tokens for targets 2..5
        for p in range(2, 6):
            step = final.clone()
            step[p + 1 : 7] = V
            rows["context"].append(mask_context(windows[e : e + 1], present[e : e + 1], V)[0])
            rows["filled"].append(step)
            rows["position"].append(torch.tensor(p))
            finals.append(final)
    obs = {k: torch.stack(v) for k, v in rows.items()}
    module = build()
    per_step = batch(obs)
    per_episode = batch(obs) | {FINAL_FILLED: torch.stack(finals)}
    assert module._sequences(per_episode)[0].shape[0] == 2
    with torch.no_grad():
        for fn in (lambda b: module.forward_train(b)[Columns.ACTION_DIST_INPUTS], module.compute_values):
            assert torch.allclose(fn(per_step), fn(per_episode), atol=1e-5)


def test_sampling_decodes_incrementally_with_the_logits_of_a_full_pass():
    """Env runners reuse each row's decoder state between steps; the logits must not change by it,
    also when an episode restarts in a row, rows arrive in another order, or new weights arrive."""
    module = build(inference_only=True)
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, V, (B, T + 1), generator=g)
    present = torch.ones(B, T, dtype=torch.bool)
    present[:, 1:6] = False
    context = mask_context(windows, present, V)
    filled = context.clone()

    def check(rows: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        obs = {"context": context[rows], "filled": filled[rows], "position": position}
        cached = module.forward_exploration(batch(obs))[Columns.ACTION_DIST_INPUTS]
        with torch.no_grad():
            full = module.generator.logits(obs["context"], obs["filled"])[torch.arange(len(rows)), position]
        assert torch.allclose(cached, full, atol=1e-5)
        return cached.argmax(-1)

    rows = torch.arange(B)
    for position in range(1, 6):  # one episode per row, filled left to right
        tokens = check(rows, torch.full((B,), position))
        filled[:, position + 1] = tokens
        if position == 3:  # new weights half-way through the episodes
            module.set_state({k: v + 0.01 for k, v in module.get_state().items()})
    filled[2] = context[2]  # row 2 starts a new episode, and the rows come reversed
    check(rows.flip(0), torch.tensor([5, 5, 5, 1, 5, 5]).flip(0))


def test_sampling_draws_tokens_with_the_softmax_frequencies_and_their_log_probabilities():
    """The module samples on the env runners itself: RLlib's GetActions finds ACTIONS and leaves them."""
    module = build(inference_only=True)
    obs = observation()
    rows = torch.arange(B).repeat_interleave(4000)  # every observation 4000 times
    many = {Columns.OBS: batch(obs)[Columns.OBS][rows]}
    logits = module.forward_inference(many)[Columns.ACTION_DIST_INPUTS]
    torch.manual_seed(0)
    out = module.forward_exploration(many)
    actions = out[Columns.ACTIONS]
    assert actions.shape == (B * 4000,) and actions.dtype == torch.int64
    log_probs = torch.log_softmax(logits, -1)
    assert torch.allclose(out[Columns.ACTION_LOGP], log_probs.gather(1, actions[:, None])[:, 0], atol=1e-6)
    assert torch.allclose(out[Columns.ACTION_DIST_INPUTS], logits)  # kept by default (PPO reads them back)
    for b in range(B):
        frequencies = torch.bincount(actions[rows == b], minlength=V).double() / 4000
        assert torch.allclose(frequencies, log_probs[b * 4000].double().exp(), atol=0.03)
    batch_of_actions = {**many, Columns.ACTIONS: actions}
    GetActions()(rl_module=module, batch=batch_of_actions, episodes=[None], explore=True)
    assert batch_of_actions[Columns.ACTIONS] is actions  # not sampled again


def test_sampling_leaves_the_logits_out_where_the_loss_does_not_read_them():
    observations = gym.spaces.Box(0, V, (2 * T + 3,), np.int64)
    spec = module_spec(config(), V, sampling_logits_in_episodes=False)
    spec.observation_space, spec.action_space, spec.inference_only = observations, gym.spaces.Discrete(V), True
    out = spec.build().forward_exploration(batch(observation()))
    assert set(out) == {Columns.ACTIONS, Columns.ACTION_LOGP}


def test_learner_entropy_metric_equals_the_categorical_entropy():
    from maskgan_rl.rl.reinforce import mean_entropy

    logits = torch.randn(50, V) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy().mean()
    assert torch.allclose(mean_entropy(torch.log_softmax(logits, -1)), expected, atol=1e-5)
    uniform = torch.log_softmax(torch.zeros(2, V), -1)
    assert torch.allclose(mean_entropy(uniform), torch.tensor(np.log(V), dtype=torch.float32))


def test_entropy_diagnostic_is_the_mean_over_evenly_spaced_rows():
    from maskgan_rl.rl.reinforce import ENTROPY_ROWS, mean_entropy

    # Row i is uniform over its first i + 1 tokens: entropy log(i + 1).
    n, vocab = 4 * ENTROPY_ROWS, 4 * ENTROPY_ROWS
    support = torch.arange(vocab)[None] <= torch.arange(n)[:, None]
    log_probs = torch.log_softmax(torch.where(support, 0.0, -1e4), dim=-1)  # exp(-1e4) = 0 in float32
    expected = torch.log(torch.arange(0, n, 4, dtype=torch.float64) + 1).mean()  # every 4th row
    assert mean_entropy(log_probs).item() == pytest.approx(expected.item(), rel=1e-5)
    few = log_probs[:10]  # fewer rows than ENTROPY_ROWS: all of them
    assert mean_entropy(few).item() == pytest.approx(torch.log(torch.arange(1, 11, dtype=torch.float64)).mean().item(), rel=1e-5)
