import math

import torch

from maskgan_rl.oracle import OracleLM, inverse_cdf_sample, oracle_vocab


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = OracleLM(50, 8, seed=3), OracleLM(50, 8, seed=3), OracleLM(50, 8, seed=4)
    for name, weight in a.state_dict().items():
        assert torch.equal(weight, b.state_dict()[name])
    assert not torch.equal(a.output.weight, c.output.weight)
    assert not any(p.requires_grad for p in a.parameters())


def test_building_an_oracle_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    OracleLM(50, 8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_weights_are_standard_normal():
    weights = torch.cat([p.flatten() for p in OracleLM(500, 32, seed=0).parameters()])
    assert abs(weights.mean().item()) < 0.02 and abs(weights.std().item() - 1.0) < 0.02


def test_sample_shape_boundary_and_determinism():
    oracle = OracleLM(50, 8, seed=3)
    first = oracle.sample(300, 7, torch.Generator().manual_seed(1))
    again = oracle.sample(300, 7, torch.Generator().manual_seed(1))
    assert first.shape == (300, 8) and first.dtype == torch.long
    assert (first[:, 0] == 0).all() and first.min() >= 0 and first.max() < 50
    assert torch.equal(first, again)
    assert not torch.equal(first, oracle.sample(300, 7, torch.Generator().manual_seed(2)))


def test_sample_reports_each_chunk_of_rows_without_changing_the_samples():
    oracle = OracleLM(50, 8, seed=3)
    reported = []
    with_progress = oracle.sample(600, 5, torch.Generator().manual_seed(1), reported.append)
    assert sum(reported) == 600 and len(reported) == 3  # chunks of 256 rows: 256, 256, 88
    assert torch.equal(with_progress, oracle.sample(600, 5, torch.Generator().manual_seed(1)))


def _hand_token_nlls(oracle, window):
    """The chain rule written out: LSTM equations (PyTorch gate order i, f, g, o), then log-softmax."""
    lstm = oracle.lstm
    hidden = lstm.hidden_size
    h, c, nlls = torch.zeros(hidden), torch.zeros(hidden), []
    for t in range(len(window) - 1):
        x = oracle.embedding.weight[window[t]]
        gates = lstm.weight_ih_l0 @ x + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
        i, f, g, o = gates.split(hidden)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits = oracle.output.weight @ h + oracle.output.bias
        nlls.append(math.log(torch.exp(logits).sum().item()) - logits[window[t + 1]].item())
    return nlls


def test_nll_matches_hand_computed_chain():
    oracle = OracleLM(vocab_size=5, hidden=3, seed=7)
    windows = torch.tensor([[0, 3, 1, 4, 4], [0, 2, 2, 0, 1]])
    expected = torch.tensor([sum(_hand_token_nlls(oracle, w.tolist())) / 4 for w in windows])
    assert torch.allclose(oracle.nll(windows), expected, atol=1e-5)


def test_nll_weights_average_only_selected_targets():
    oracle = OracleLM(vocab_size=5, hidden=3, seed=7)
    window = [0, 3, 1, 4, 4]
    nlls = _hand_token_nlls(oracle, window)
    weights = torch.tensor([[False, True, True, False]])
    expected = torch.tensor([(nlls[1] + nlls[2]) / 2])
    assert torch.allclose(oracle.nll(torch.tensor([window]), weights), expected, atol=1e-5)


def test_own_samples_are_likelier_than_uniform_tokens():
    oracle = OracleLM(vocab_size=200, hidden=16, seed=88)
    rng = torch.Generator().manual_seed(0)
    own = oracle.sample(200, 20, rng)
    uniform = torch.cat([torch.zeros(200, 1, dtype=torch.long), torch.randint(200, (200, 20), generator=rng)], 1)
    assert oracle.nll(own).mean() < oracle.nll(uniform).mean() - 1.0


def test_inverse_cdf_sample_hand_cases():
    probs = torch.tensor([[0.2, 0.5, 0.3]]).expand(6, 3)
    uniforms = torch.tensor([0.0, 0.1999, 0.2, 0.6999, 0.7001, 0.99999999])
    assert inverse_cdf_sample(probs, uniforms).tolist() == [0, 0, 1, 1, 2, 2]
    # A CDF that rounds to just below 1 still yields a valid index.
    assert inverse_cdf_sample(torch.tensor([[0.5, 0.4999]]), torch.tensor([0.99995])).tolist() == [1]


def test_oracle_vocab_ids_match_oracle_ids():
    assert oracle_vocab(5).tokens == ["<eos>", "<unk>", "w2", "w3", "w4"]
