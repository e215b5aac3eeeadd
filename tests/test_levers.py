"""The quality levers of docs/levers.md, each on a case small enough to check by hand.

Cold exploration (behaviour policy, importance weights), the discriminator's own size and
regularisation, the mask-rate curriculum, checkpoint rotation, and their config checks. The levers
inside the environments and a running adversarial stage (Ray) are tested in test_env.py,
test_learners.py and test_adversarial.py.
"""

import math

import numpy as np
import pytest
import torch

from maskgan_rl.config import Config, MaskConfig, load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.masking import present_rate_at
from maskgan_rl.models.discriminator import Discriminator, discriminator_loss, discriminator_model_config
from maskgan_rl.models.generator import Generator
from maskgan_rl.models.layers import cold_logits
from maskgan_rl.rl.discriminator_actor import DiscriminatorTrainer
from maskgan_rl.rl.returns import importance_weights, reinforce_loss
from maskgan_rl.train import prune_checkpoints

torch.set_num_threads(1)

# -- cold exploration ------------------------------------------------------------------------------
# A 3-token policy pi = (0.5, 0.3, 0.2). At temperature 0.5, mu is proportional to pi^2 =
# (0.25, 0.09, 0.04), which sum to 0.38: mu = (0.25, 0.09, 0.04) / 0.38, and the importance weight of
# token a is pi(a) / mu(a) = 0.38 / pi(a) = (0.76, 1.2666..., 1.9).
PI = torch.tensor([0.5, 0.3, 0.2])
MU_AT_HALF = torch.tensor([0.25, 0.09, 0.04]) / 0.38
WEIGHTS_AT_HALF = torch.tensor([0.76, 0.38 / 0.3, 1.9])


def test_cold_logits_at_half_temperature_give_the_hand_computed_behaviour_policy_and_weights():
    logits = PI.log()[None]
    mu = torch.softmax(cold_logits(logits, temperature=0.5), dim=-1)[0]
    torch.testing.assert_close(mu, MU_AT_HALF)
    tokens = torch.arange(3)
    weights = importance_weights(torch.log_softmax(logits, -1)[0, tokens], mu.log()[tokens], clip=10.0)
    torch.testing.assert_close(weights, WEIGHTS_AT_HALF)
    # Truncated at 1.5: only the rarest token's weight (1.9) is cut.
    clipped = importance_weights(torch.log_softmax(logits, -1)[0, tokens], mu.log()[tokens], clip=1.5)
    torch.testing.assert_close(clipped, torch.tensor([0.76, 0.38 / 0.3, 1.5]))


def test_without_cold_exploration_weights_are_exactly_one_and_the_loss_is_unchanged():
    logits = torch.randn(7, 11)
    assert cold_logits(logits, 1.0, 1.0) is logits  # the behaviour policy is the policy itself
    logp = torch.log_softmax(logits, -1)[:, 3][None]
    weights = importance_weights(logp, logp.clone(), clip=5.0)
    assert torch.equal(weights, torch.ones_like(weights))
    advantages, present = torch.randn(1, 7), torch.zeros(1, 7, dtype=torch.bool)
    assert torch.equal(reinforce_loss(logp, advantages, present, weights), reinforce_loss(logp, advantages, present))


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.4, {0}),  # the most probable token alone already reaches 0.4
        (0.75, {0, 1}),  # 0.5 < 0.75, then 0.5 + 0.3 = 0.8 >= 0.75: tokens 0.15 and 0.05 are cut
        (0.85, {0, 1, 2}),  # 0.8 < 0.85, then 0.95 >= 0.85: only 0.05 is cut
        (0.99, {0, 1, 2, 3}),
    ],
)
def test_nucleus_cut_removes_exactly_the_tokens_outside_the_top_p_set(top_p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    order = torch.tensor([2, 0, 3, 1])  # shuffled: token order must not matter
    logits = probs.log()[order][None]
    cut = cold_logits(logits, temperature=1.0, top_p=top_p)[0]
    expected_kept = {int(i) for i in range(4) if int(order[i]) in kept}
    assert {int(i) for i in torch.isfinite(cut).nonzero()} == expected_kept
    assert torch.equal(cut[list(expected_kept)], logits[0, list(expected_kept)])  # the kept logits are untouched
    assert all(cut[i] == -math.inf for i in set(range(4)) - expected_kept)


def test_importance_weighted_gradient_equals_the_on_policy_gradient_in_exact_expectation():
    # One masked token (a bandit): pi = softmax(theta) over 4 tokens, fixed rewards, a baseline.
    # On-policy: the gradient of E_pi[r] = sum_a pi(a) r(a). Cold: sum over a of mu(a) * w(a) *
    # grad log pi(a) * (r(a) - b), every token enumerated with its probability (no sampling).
    theta = torch.tensor([1.0, 0.2, -0.5, 0.7], requires_grad=True)
    rewards, baseline = torch.tensor([-1.0, -3.0, -0.2, -2.0]), -1.5
    (on_policy,) = torch.autograd.grad((torch.softmax(theta, -1) * rewards).sum(), theta)

    def expected_cold_gradient(temperature: float, clip: float) -> torch.Tensor:
        logp = torch.log_softmax(theta, -1)
        mu = torch.softmax(cold_logits(theta.detach()[None], temperature)[0], -1)
        weights = importance_weights(logp, mu.log(), clip)
        surrogate = (mu * weights * logp * (rewards - baseline)).sum()  # minus the REINFORCE loss, in expectation
        return torch.autograd.grad(surrogate, theta)[0]

    torch.testing.assert_close(expected_cold_gradient(0.5, clip=1e6), on_policy)
    torch.testing.assert_close(expected_cold_gradient(0.3, clip=1e6), on_policy)
    # Truncating the weights (the rarest tokens' weights exceed 2 here) biases it.
    assert not torch.allclose(expected_cold_gradient(0.5, clip=1.0), on_policy, atol=1e-3)


# -- the discriminator's size and regularisation ---------------------------------------------------
V, T = 13, 6


def tiny(*overrides: str) -> Config:
    return load_config("synthetic", [f"data.seq_len={T}", "model.embed=8", "model.hidden=8", *overrides])


def lstm_shapes(disc: Discriminator) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for lstm in disc.seq2seq.decoder.layers for p in lstm.parameters()]


def test_discriminator_defaults_to_the_generator_shape_and_starts_from_its_weights():
    cfg = tiny()
    disc = Discriminator.from_config(V, cfg)
    assert discriminator_model_config(cfg) == cfg.model
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in disc.modules())
    generator = Generator(V, cfg.model)
    assert disc.init_from_generator(generator)
    for name, value in generator.seq2seq.state_dict().items():
        assert torch.equal(disc.seq2seq.state_dict()[name], value), name


def test_discriminator_options_change_the_built_network():
    cfg = tiny("gan.disc_hidden=16", "gan.disc_embed=4", "gan.disc_layers=2", "gan.disc_keep_prob=0.9", "gan.disc_layer_norm=true")
    disc = Discriminator.from_config(V, cfg)
    # nn.LSTM(input, hidden): weight_ih [4 hidden, input], weight_hh [4 hidden, hidden], two biases [4 hidden].
    assert lstm_shapes(disc) == [(64, 4), (64, 16), (64,), (64,), (64, 16), (64, 16), (64,), (64,)]
    assert tuple(disc.head.weight.shape) == (1, 16) and tuple(disc.seq2seq.embedding.weight.shape) == (V, 4)
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4 and all(m.normalized_shape == (16,) for m in norms)  # 2 layers x (encoder, decoder)
    assert disc.seq2seq.encoder.dropout.keep_prob == disc.seq2seq.decoder.dropout.keep_prob == 0.9
    # The generator keeps its own size; a D of another size cannot start from it.
    generator = Generator(V, cfg.model)
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    assert not disc.init_from_generator(generator)
    assert all(torch.equal(before[k], v) for k, v in disc.state_dict().items())


def test_a_layer_normed_discriminator_of_the_generator_size_starts_from_its_weights():
    cfg = tiny("gan.disc_layer_norm=true")
    disc, generator = Discriminator.from_config(V, cfg), Generator(V, cfg.model)
    assert disc.init_from_generator(generator)
    assert torch.equal(disc.seq2seq.decoder.layers[0].weight_hh_l0, generator.seq2seq.decoder.layers[0].weight_hh_l0)


def test_regularised_discriminator_trainer_steps_with_weight_decay(tmp_path):
    cfg = tiny("gan.disc_hidden=12", "gan.disc_weight_decay=0.01", "gan.disc_layer_norm=true", "gan.disc_keep_prob=0.5",
               "gan.disc_batch_size=4", "gan.adam_beta1=0.5")
    generator_state = Generator(V, cfg.model).state_dict()
    trainer = DiscriminatorTrainer(cfg, V, generator_state)
    assert [(group["weight_decay"], group["betas"]) for group in trainer.optimizer.param_groups] == [(0.01, (0.5, 0.999))]
    assert tuple(trainer.model.head.weight.shape) == (1, 12)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, V, (6, T + 1))
    present = np.ones((6, T), dtype=bool)
    present[:, 2:4] = False
    before = {k: v.clone() for k, v in trainer.weights()[0].items()}
    trainer.add_rollouts(filled=windows[::-1].copy(), window=windows, present=present, disc_version=np.zeros(6, int))
    stats = trainer.train(iteration=1)
    assert stats["disc_version"] == 1 and math.isfinite(stats["disc_loss"])
    after = trainer.weights()[0]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    norms = [k for k in after if ".norms." in k]
    assert norms and any(not torch.equal(before[k], after[k]) for k in norms)  # the LayerNorms learn too


def test_one_sided_label_smoothing_lowers_the_real_label_only():
    # Two masked targets. Real logits 0 and log 3 (sigmoid 1/2 and 3/4), fake logit 0 twice.
    # Real label 0.9: BCE(l, y) = -(y log s + (1 - y) log(1 - s)), so
    #   real: [-(0.9 log 0.5 + 0.1 log 0.5), -(0.9 log 0.75 + 0.1 log 0.25)] = [log 2, -0.9 log 0.75 - 0.1 log 0.25],
    #   fake: [log 2, log 2]; loss = (sum real + sum fake) / 2 targets / 2.
    real, fake = torch.tensor([[0.0, math.log(3.0)]]), torch.zeros(1, 2)
    present = torch.zeros(1, 2, dtype=torch.bool)
    by_hand = (math.log(2) + (-0.9 * math.log(0.75) - 0.1 * math.log(0.25)) + 2 * math.log(2)) / 2 / 2
    assert discriminator_loss(real, fake, present, real_label=0.9).item() == pytest.approx(by_hand, rel=1e-6)
    # The trainer's steps use it: from the same start and data, smoothing changes the update.
    rng = np.random.default_rng(0)
    windows = rng.integers(0, V, (6, T + 1))
    present = np.ones((6, T), dtype=bool)
    present[:, 1:3] = False
    updated = []
    for smoothing in (0.0, 0.1, 0.0):
        cfg = tiny(f"gan.disc_label_smoothing={smoothing}", "gan.disc_batch_size=4")
        torch.manual_seed(0)
        trainer = DiscriminatorTrainer(cfg, V, Generator(V, cfg.model).state_dict())
        trainer.add_rollouts(filled=windows[::-1].copy(), window=windows, present=present, disc_version=np.zeros(6, int))
        trainer.train(iteration=1)
        updated.append(trainer.weights()[0])
    assert all(torch.equal(updated[0][k], updated[2][k]) for k in updated[0])
    assert any(not torch.equal(updated[0][k], updated[1][k]) for k in updated[0])


# -- the mask-rate curriculum ----------------------------------------------------------------------
def test_curriculum_present_rate_is_linear_then_constant():
    mask = MaskConfig(present_rate=0.5, curriculum_iterations=4, curriculum_start_present_rate=0.9)
    # 0.9 + (0.5 - 0.9) * i / 4: 0.9, 0.8, 0.7, 0.6, then 0.5 from iteration 4 on.
    rates = [present_rate_at(mask, i) for i in range(7)]
    np.testing.assert_allclose(rates, [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5])
    assert present_rate_at(mask, 4) == 0.5  # exactly the target rate
    assert present_rate_at(MaskConfig(present_rate=0.3), 0) == 0.3  # no curriculum


# -- long runs: checkpoint rotation -----------------------------------------------------------------
def test_checkpoint_rotation_keeps_the_newest(tmp_path):
    for iteration in (5, 10, 15, 20, 25):
        (tmp_path / f"gan-{iteration:06d}.pt").write_bytes(b"x")
    (tmp_path / "maskgan.pt").write_bytes(b"x")
    prune_checkpoints(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gan-000015.pt", "gan-000020.pt", "gan-000025.pt", "maskgan.pt"]


# -- config checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key",
    [
        ("gan.rollout_temperature=0", "gan.rollout_temperature"),
        ("gan.rollout_top_p=1.5", "gan.rollout_top_p"),
        ("gan.rollout_top_p=0", "gan.rollout_top_p"),
        ("gan.importance_weight_clip=0", "gan.importance_weight_clip"),
        ("gan.disc_hidden=0", "gan.disc_hidden"),
        ("gan.disc_layers=-1", "gan.disc_layers"),
        ("gan.disc_keep_prob=0", "gan.disc_keep_prob"),
        ("gan.disc_weight_decay=-1e-6", "gan.disc_weight_decay"),
        ("gan.disc_label_smoothing=0.5", "gan.disc_label_smoothing"),
        ("mask.curriculum_iterations=-1", "mask.curriculum_iterations"),
        ("mask.curriculum_start_present_rate=1.0", "mask.curriculum_start_present_rate"),
        ("gan.keep_checkpoints=1", "gan.keep_checkpoints"),
        ("gan.adam_beta1=1.0", "gan.adam_beta1"),
    ],
)
def test_bad_lever_settings_are_refused_in_one_line(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", [override])
    message = str(err.value)
    assert key in message and "\n" not in message
