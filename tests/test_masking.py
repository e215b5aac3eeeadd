import numpy as np
import pytest
import torch

from maskgan_rl.config import MaskConfig
from maskgan_rl.masking import make_present, mask_context, num_masked, pack_observation, unpack_observation


def _runs(row):
    """(start, length) of each maximal masked block of one present row."""
    padded = np.concatenate([[True], row, [True]])
    edges = np.flatnonzero(np.diff(padded.astype(int)))
    return [(start, end - start) for start, end in zip(edges[::2], edges[1::2])]


@pytest.mark.parametrize("present_rate, seq_len, expected", [(0.5, 20, 9), (0.75, 20, 4), (0.5, 40, 19), (0.9, 5, 1)])
def test_num_masked_follows_the_papers_formula(present_rate, seq_len, expected):
    assert num_masked(MaskConfig("contiguous", present_rate), seq_len) == expected


def test_contiguous_masks_one_block_of_l_after_the_first_target():
    present = make_present(2000, 20, MaskConfig("contiguous", 0.5), np.random.default_rng(0))
    assert present.shape == (2000, 20) and present.dtype == bool
    runs = [_runs(row) for row in present]
    assert all(len(r) == 1 and r[0][1] == 9 for r in runs)
    assert present[:, 0].all()
    assert {r[0][0] for r in runs} == set(range(1, 12))  # start uniform over 1..T-L


def test_random_masks_the_rate_exactly_at_uniformly_random_targets():
    for rate, masked in ((0.5, 10), (0.8, 4), (0.99, 1)):  # (1 - rate) * 20 rounded, at least one
        present = make_present(2000, 20, MaskConfig("random", rate), np.random.default_rng(1))
        assert num_masked(MaskConfig("random", rate), 20) == masked
        assert ((~present).sum(1) == masked).all()  # every episode the same length
        per_target = (~present).mean(0)  # each target masked with probability masked / 20
        assert np.abs(per_target - masked / 20).max() < 0.04  # 2000 rows: std <= 0.011


def test_blanks_are_separate_blocks_totalling_num_masked():
    present = make_present(500, 20, MaskConfig("blanks", 0.5, num_blanks=3), np.random.default_rng(2))
    assert present[:, 0].all() and ((~present).sum(1) == 9).all()
    assert all(len(_runs(row)) == 3 for row in present)  # 3 maximal runs: no two blocks touch
    assert (~present[:, 1:]).any(0).all()  # every target but the first gets masked sometimes


def test_blanks_use_fewer_blocks_when_they_cannot_fit():
    present = make_present(50, 4, MaskConfig("blanks", 0.5, num_blanks=3), np.random.default_rng(3))
    assert all(_runs(row) and len(_runs(row)) == 1 and _runs(row)[0][1] == 1 for row in present)


@pytest.mark.parametrize("strategy", ["random", "contiguous", "blanks"])
def test_same_seed_same_mask(strategy):
    cfg = MaskConfig(strategy, 0.5)
    first = make_present(8, 20, cfg, np.random.default_rng(5))
    assert np.array_equal(first, make_present(8, 20, cfg, np.random.default_rng(5)))


def test_mask_context_numpy_and_torch():
    windows = np.array([[7, 1, 2, 3, 4], [8, 5, 6, 7, 9]])
    present = np.array([[True, False, False, True], [False, True, True, True]])
    expected = np.array([[7, 1, 99, 99, 4], [8, 99, 6, 7, 9]])
    assert np.array_equal(mask_context(windows, present, missing_id=99), expected)
    as_torch = mask_context(torch.from_numpy(windows), torch.from_numpy(present), 99)
    assert torch.equal(as_torch, torch.from_numpy(expected))
    assert windows[0, 2] == 2  # the input is left untouched


def test_observations_pack_and_unpack_numpy_and_torch():
    context, filled, position = np.array([[7, 99, 2], [8, 5, 99]]), np.array([[7, 4, 2], [8, 5, 99]]), np.array([1, 2])
    packed = pack_observation(context, filled, position)
    assert packed.tolist() == [[7, 99, 2, 7, 4, 2, 1], [8, 5, 99, 8, 5, 99, 2]]
    for got, want in zip(unpack_observation(packed), (context, filled, position)):
        assert np.array_equal(got, want)
    # One observation (no batch dimension) and torch tensors split the same way.
    assert [part.tolist() for part in unpack_observation(torch.from_numpy(packed[1]))] == [[8, 5, 99], [8, 5, 99], 2]
    # Views: writing a part writes the observation (the environment keeps its state that way).
    unpack_observation(packed)[2][0] = 0
    assert packed[0, -1] == 0
