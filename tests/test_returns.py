"""MaskGAN's RL maths on small cases computed by hand (the arithmetic is in the comments)."""

import numpy as np
import pytest
import torch

from maskgan_rl.rl.returns import (
    clipped_advantages,
    critic_loss,
    episode_returns,
    masked_returns,
    reinforce_loss,
)

T, F = True, False

# Row 0: targets 0, 2, 3 masked, target 1 present (its reward 100 must be ignored).
# Row 1: everything present. Row 2: only the last target masked.
PRESENT = torch.tensor([[F, T, F, F], [T, T, T, T], [T, T, T, F]])
REWARDS = torch.tensor([[1.0, 100.0, 2.0, 4.0], [5.0, 5.0, 5.0, 5.0], [9.0, 9.0, 9.0, -1.0]])
GAMMA = 0.5
# Row 0: R_3 = 4;  R_2 = 2 + 0.5 * 4 = 4;  R_1 = 0 (present);
#        R_0 = 1 + 0.5^2 * 2 + 0.5^3 * 4 = 1 + 0.5 + 0.5 = 2  (target 2 is two POSITIONS after target 0).
# Row 1: nothing masked -> all 0.   Row 2: R_3 = -1, the rest present -> 0.
RETURNS = torch.tensor([[2.0, 0.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])


def test_masked_returns_hand_computed():
    torch.testing.assert_close(masked_returns(REWARDS, PRESENT, GAMMA), RETURNS)


def test_masked_returns_gamma_one_and_zero():
    # gamma = 1: plain suffix sums of masked rewards: row 0 -> [1+2+4, 0, 2+4, 4].
    torch.testing.assert_close(masked_returns(REWARDS[:1], PRESENT[:1], 1.0), torch.tensor([[7.0, 0.0, 6.0, 4.0]]))
    # gamma = 0: each masked position keeps only its own reward.
    torch.testing.assert_close(masked_returns(REWARDS[:1], PRESENT[:1], 0.0), torch.tensor([[1.0, 0.0, 2.0, 4.0]]))


def test_episode_returns_hand_computed():
    # Row 0 as an episode: steps at positions 0, 2, 3 with rewards 1, 2, 4 -> returns 2, 4, 4 (as above).
    np.testing.assert_allclose(episode_returns(np.array([1.0, 2.0, 4.0]), np.array([0, 2, 3]), GAMMA), [2.0, 4.0, 4.0])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_step_form_equals_position_form(gamma):
    rng = np.random.default_rng(0)
    present = rng.random((50, 12)) < 0.5
    rewards = rng.normal(size=(50, 12))
    batch = masked_returns(torch.from_numpy(rewards), torch.from_numpy(present), gamma).numpy()
    for row in range(50):
        positions = np.flatnonzero(~present[row])
        per_step = episode_returns(rewards[row, positions], positions, gamma)
        np.testing.assert_allclose(per_step, batch[row, positions], rtol=1e-12, atol=1e-12)
        assert np.all(batch[row, present[row]] == 0.0)


def test_clipped_advantages():
    values = torch.tensor([[10.0, 7.0, 3.5, -3.0]])
    # R - V = [2-10, 0-7, 4-3.5, 4+3] = [-8, -7, 0.5, 7] -> clip at 5 -> [-5, (present) 0, 0.5, 5].
    adv = clipped_advantages(RETURNS[:1], values, PRESENT[:1], clip=5.0)
    torch.testing.assert_close(adv, torch.tensor([[-5.0, 0.0, 0.5, 5.0]]))


def test_critic_loss_counts_masked_positions_only():
    values = torch.tensor([[1.0, 50.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0], [0.0, 0.0, 0.0, 1.0]], requires_grad=True)
    returns = RETURNS.clone().requires_grad_(True)
    # Masked errors: row 0: (1-2)^2 = 1, (3-4)^2 = 1, (4-4)^2 = 0;  row 2: (1+1)^2 = 4;  row 1: none.
    # 4 masked positions in the batch -> (1 + 1 + 0 + 4) / 4 = 1.5. The present 50 vs 0 and row 1 are ignored.
    loss = critic_loss(values, returns, PRESENT)
    torch.testing.assert_close(loss, torch.tensor(1.5))
    loss.backward()
    # d/dV = 2 (V - R) / 4 at masked positions: [-0.5, 0, -0.5, 0], row 2 last: 2 * 2 / 4 = 1.
    expected = torch.tensor([[-0.5, 0.0, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(values.grad, expected)
    assert returns.grad is None  # the return is a target, not something to move


def test_critic_loss_with_nothing_masked_is_zero():
    present = torch.ones(2, 3, dtype=torch.bool)
    assert critic_loss(torch.ones(2, 3), torch.zeros(2, 3), present).item() == 0.0


def test_reinforce_loss_value_and_gradients():
    # Present position 1 holds garbage (-inf log-prob, advantage 9): it must not reach the loss or a gradient.
    logp = torch.tensor([[-1.0, -float("inf"), -2.0, -0.5]], requires_grad=True)
    critic_values = torch.tensor([[0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    advantages = torch.tensor([[2.0, 9.0, -1.0, 4.0]]) - critic_values  # differentiable, as if from a critic
    # loss = -(-1*2 + -2*-1 + -0.5*4) / 3 = -(-2 + 2 - 2) / 3 = 2/3
    loss = reinforce_loss(logp, advantages, PRESENT[:1])
    torch.testing.assert_close(loss, torch.tensor(2.0 / 3.0))
    loss.backward()
    # d loss / d logp_t = -A_t / 3 at masked t: [-2/3, 0, 1/3, -4/3]; exactly 0 at the present position.
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0 / 3.0, 0.0, 1.0 / 3.0, -4.0 / 3.0]]))
    assert critic_values.grad is None  # stop-gradient: the advantage is not differentiated
