"""The networks: output shapes, in-filling semantics, and that step-by-step sampling agrees with
whole-sequence teacher forcing (the RL learner relies on it)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskgan_rl.config import ModelConfig
from maskgan_rl.masking import mask_context
from maskgan_rl.models import Critic, Discriminator, Generator, LanguageModel, discriminator_loss, log_real_prob, precision
from maskgan_rl.models.critic import ValueHead
from maskgan_rl.models.layers import sample_logits
from maskgan_rl.models.precision import BFLOAT16_MIN_HIDDEN, autocast, describe, native_bfloat16, resolve, width

V, T, B = 11, 6, 5
torch.set_num_threads(1)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**{"embed": 8, "hidden": 8, "layers": 2, **overrides})


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, V, (B, T + 1), generator=g)
    present = torch.rand(B, T, generator=g) < 0.5
    present[:, 0] = True  # row 0 masks only the last target, row 1 nothing
    present[0], present[1] = torch.arange(T) < T - 1, True
    return windows, present


def eval_generator(**overrides) -> Generator:
    torch.manual_seed(0)
    return Generator(V, config(**overrides)).eval()


def test_output_shapes():
    cfg = config(keep_prob=0.5)
    windows, present = batch()
    context = mask_context(windows, present, V)
    assert LanguageModel(V, cfg)(windows[:, :-1]).shape == (B, T, V)
    gen = Generator(V, cfg)
    assert gen.logits(context, windows).shape == (B, T, V)
    enc = gen.encode(context)
    step_logits, (h, c) = gen.decode_step(enc, windows[:, 0], enc.state)
    assert step_logits.shape == (B, V) and h.shape == c.shape == (2, B, 8)
    filled, logp = gen.sample(windows, present)
    assert filled.shape == (B, T + 1) and filled.dtype == torch.int64 and logp.shape == (B, T)
    assert Discriminator(V, cfg)(context, filled).shape == (B, T)
    assert Critic(V, cfg)(filled).shape == (B, T)
    assert ValueHead(cfg.hidden, stop_gradient=False)(gen.features(context, filled)).shape == (B, T)
    assert LanguageModel(V, cfg).logits(context, windows).shape == (B, T, V)


def test_lm_infill_reads_only_the_left_context_and_its_logp_matches_its_logits():
    torch.manual_seed(0)
    lm = LanguageModel(V, config()).eval()
    windows, present = batch()
    # Change every present target after a row's last blank: the text there must not matter to the LM.
    targets = torch.arange(T)
    last = torch.where(present, -1, targets).max(dim=1).values
    after = present & (targets > last[:, None])
    changed = windows.clone()
    changed[:, 1:][after] = (windows[:, 1:][after] + 1) % V
    with torch.no_grad():
        filled, logp = lm.sample(windows, present, generator=torch.Generator().manual_seed(1))
        again, _ = lm.sample(changed, present, generator=torch.Generator().manual_seed(1))
        expected = torch.log_softmax(lm.logits(None, filled), -1).gather(-1, filled[:, 1:, None])[..., 0]
    assert torch.equal(filled[:, 1:][present], windows[:, 1:][present])
    assert after.any() and torch.equal(filled[:, 1:][~present], again[:, 1:][~present])
    assert torch.allclose(logp[~present], expected[~present], atol=1e-5) and (logp[present] == 0).all()


@pytest.mark.parametrize("attention", [True, False])
def test_infill_copies_present_tokens_and_samples_only_blanks(attention):
    gen = eval_generator(attention=attention)
    windows, present = batch()
    with torch.no_grad():
        gen.head.bias[windows.min()] = 100.0  # every sample is this token, unlike real ones it replaces
    windows[~torch.cat([torch.ones(B, 1, dtype=torch.bool), present], 1)] = windows.max()
    filled, logp = gen.sample(windows, present)
    targets = filled[:, 1:]
    assert filled[:, 0].equal(windows[:, 0])
    assert targets[present].equal(windows[:, 1:][present])
    assert (targets[~present] == windows.min()).all()
    assert (logp[present] == 0).all()  # not computed where nothing is sampled


def test_infill_logp_matches_teacher_forced_logits():
    """...and `token_log_probs`, the one-pass recomputation that rewards and metrics use, gives the same
    numbers at the masked targets and 0 at the present ones."""
    gen = eval_generator()
    windows, present = batch()
    for temperature in (1.0, 0.7):
        with torch.no_grad():
            filled, logp = gen.sample(windows, present, temperature, torch.Generator().manual_seed(1))
            logits = gen.logits(mask_context(windows, present, V), filled)
            recomputed = gen.token_log_probs(mask_context(windows, present, V), filled, ~present, temperature)
        teacher = F.log_softmax(logits / temperature, -1).gather(2, filled[:, 1:, None]).squeeze(2)
        assert torch.allclose(logp[~present], teacher[~present], atol=1e-5)
        assert torch.allclose(recomputed[~present], teacher[~present], atol=1e-5)
        assert (recomputed[present] == 0).all() and (recomputed[~present] < 0).all()


@pytest.mark.parametrize("model_class", [Generator, LanguageModel])
def test_logits_at_chosen_targets_and_masked_target_nll_match_the_full_pass(model_class):
    from maskgan_rl.models.losses import masked_cross_entropy, masked_target_nll

    torch.manual_seed(0)
    gen = model_class(V, config()).eval()
    windows, present = batch()
    context = mask_context(windows, present, V)
    with torch.no_grad():
        full = gen.logits(context, windows)
        assert torch.allclose(gen.logits(context, windows, at=~present), full[~present], atol=1e-6)
        nll, count = masked_target_nll(gen, windows, present)
        expected, expected_count = masked_cross_entropy(full, windows[:, 1:], ~present)
    assert count == expected_count == (~present).sum()
    assert torch.allclose(nll, expected, atol=1e-6)


def test_infill_is_reproducible_with_a_generator():
    gen = eval_generator()
    windows, present = batch()
    runs = [gen.sample(windows, present, generator=torch.Generator().manual_seed(3))[0] for _ in range(2)]
    assert runs[0].equal(runs[1])


def test_low_temperature_gives_argmax():
    gen = eval_generator()
    windows, present = batch()
    with torch.no_grad():
        filled, _ = gen.sample(windows, present, temperature=1e-6)
        logits = gen.logits(mask_context(windows, present, V), filled)
    assert filled[:, 1:][~present].equal(logits.argmax(-1)[~present])


def test_sampling_never_draws_zero_probability_tokens():
    logits = torch.zeros(2000, V)
    logits[:, ::2] = float("-inf")  # tokens 0, 2, ... impossible, including the first and the last
    tokens, logp = sample_logits(logits, generator=torch.Generator().manual_seed(0))
    assert (tokens % 2 == 1).all() and set(tokens.tolist()) == set(range(1, V, 2))
    assert torch.allclose(logp, torch.full_like(logp, -torch.log(torch.tensor(5.0)).item()))


def test_masked_positions_use_the_missing_embedding():
    gen = eval_generator()
    windows, present = batch()
    changed = windows.clone()
    changed[:, 1:][~present] = (changed[:, 1:][~present] + 1) % V  # only the hidden true tokens differ
    with torch.no_grad():
        seed = 5
        a = gen.sample(windows, present, generator=torch.Generator().manual_seed(seed))
        b = gen.sample(changed, present, generator=torch.Generator().manual_seed(seed))
    assert a[0].equal(b[0]) and a[1].equal(b[1])
    assert mask_context(windows, present, V).equal(mask_context(changed, present, V))


def test_discriminator_is_causal():
    torch.manual_seed(0)
    disc = Discriminator(V, config()).eval()
    windows, present = batch()
    context = mask_context(windows, present, V)
    base = disc(context, windows)
    for t in range(T):
        later = windows.clone()
        later[:, t + 2 :] = (later[:, t + 2 :] + 1) % V
        assert torch.allclose(disc(context, later)[:, : t + 1], base[:, : t + 1])
        current = windows.clone()
        current[:, t + 1] = (current[:, t + 1] + 1) % V  # the judged token itself must matter
        assert not torch.allclose(disc(context, current)[:, t], base[:, t])


def test_discriminator_loss_counts_masked_positions_only():
    present = torch.tensor([[True, False, False]])
    real = torch.tensor([[5.0, 0.0, 2.0]])
    fake = torch.tensor([[-5.0, 1.0, -3.0]])
    # Masked targets 1 and 2 only; -log sigmoid(x) = log(1 + e^-x), -log(1 - sigmoid(x)) = log(1 + e^x).
    l_real = (math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(-2.0))) / 2
    l_fake = (math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(-3.0))) / 2
    assert discriminator_loss(real, fake, present).item() == pytest.approx((l_real + l_fake) / 2, rel=1e-6)


def test_log_real_prob_is_finite_for_confident_fakes():
    rewards = log_real_prob(torch.tensor([0.0, -100.0]))
    assert torch.allclose(rewards, torch.log(torch.tensor([0.5, 1e-7])))


def test_init_copies_weights():
    cfg = config()
    torch.manual_seed(0)
    lm, gen, disc, critic = LanguageModel(V, cfg), Generator(V, cfg), Discriminator(V, cfg), Critic(V, cfg)
    gen.init_from_language_model(lm)
    for lstm in (gen.seq2seq.encoder, gen.seq2seq.decoder):
        for (name, a), b in zip(lstm.state_dict().items(), lm.lstm.state_dict().values()):
            assert a.equal(b), name
    assert gen.seq2seq.embedding.weight.equal(lm.embedding.weight) and gen.head.bias.equal(lm.head.bias)

    disc.init_from_generator(gen)
    for name, value in gen.seq2seq.state_dict().items():
        assert disc.seq2seq.state_dict()[name].equal(value), name
    assert disc.seq2seq.attention.key.weight.data_ptr() != gen.seq2seq.attention.key.weight.data_ptr()

    critic.init_from_generator(gen)
    assert critic.embedding.weight.equal(gen.seq2seq.embedding.weight)
    for name, value in gen.seq2seq.decoder.state_dict().items():
        assert critic.lstm.state_dict()[name].equal(value), name


def test_tied_softmax_shares_the_embedding():
    gen, lm = Generator(V, config()), LanguageModel(V, config())
    assert gen.head.weight is gen.seq2seq.embedding.weight and lm.head.weight is lm.embedding.weight
    assert gen.head.weight.shape == (V, 8)  # the missing vector is no output class
    untied = Generator(V, config(tie_weights=False, embed=4))
    assert untied.head.weight.data_ptr() != untied.seq2seq.embedding.weight.data_ptr()


def test_tied_softmax_with_a_hidden_size_of_its_own_projects_to_the_embedding_size():
    cfg = config(embed=4, hidden=12)
    gen, lm = Generator(V, cfg), LanguageModel(V, cfg)
    assert gen.head.weight is gen.seq2seq.embedding.weight and gen.head.project.weight.shape == (4, 12)
    windows = torch.randint(0, V, (3, T + 1))
    assert gen.logits(windows, windows).shape == (3, T, V) and lm(windows[:, :-1]).shape == (3, T, V)
    gen.init_from_language_model(lm)  # the projection travels with the head
    assert torch.equal(gen.head.project.weight, lm.head.project.weight)
    assert Generator(V, config()).head.project is None  # equal sizes: the plain tied softmax


def test_dropout_mask_is_locked_across_time_and_off_in_eval():
    lm = LanguageModel(V, config(keep_prob=0.5))
    inputs = torch.zeros(1, T, dtype=torch.long)  # same input each step: a locked mask zeroes the same units
    lm.train()
    dropped = lm.lstm.dropout(lm.embedding(inputs), lm.lstm.dropout_masks(1, lm.head.bias)[0])[0]
    assert ((dropped == 0) == (dropped[0] == 0)).all() and (dropped == 0).any()
    lm.eval()
    assert lm(inputs).equal(lm(inputs))


def test_training_mode_sampling_runs_with_locked_masks():
    torch.manual_seed(0)
    gen = Generator(V, config(keep_prob=0.5)).train()
    windows, present = batch()
    filled, logp = gen.sample(windows, present)
    logp[~present].sum().backward()  # a single-process REINFORCE can back-propagate through the rollout
    assert gen.seq2seq.decoder.layers[0].weight_ih_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("attention", [True, False])
def test_discriminator_scores_a_real_and_fake_pair_as_two_separate_calls_would(attention):
    torch.manual_seed(0)
    disc = Discriminator(V, config(attention=attention), layer_norm=True).eval()
    windows, present = batch()
    context = mask_context(windows, present, V)
    fake = torch.where(torch.cat([torch.ones(B, 1, dtype=torch.bool), present], 1), windows, torch.randint(0, V, windows.shape))
    real_logits, fake_logits = disc.real_and_fake_logits(context, windows, fake)
    assert torch.allclose(real_logits, disc(context, windows), atol=1e-6)
    assert torch.allclose(fake_logits, disc(context, fake), atol=1e-6)
    assert not torch.allclose(real_logits, fake_logits)


def test_bf16_mixed_precision_computes_in_bfloat16_and_every_network_returns_float32():
    torch.manual_seed(0)
    cfg = config(embed=16, hidden=16)
    gen, disc, lm = Generator(V, cfg).eval(), Discriminator(V, cfg).eval(), LanguageModel(V, cfg).eval()
    critic, head = Critic(V, cfg).eval(), ValueHead(16, stop_gradient=False)
    windows, present = batch()
    context = mask_context(windows, present, V)
    masked = ~present

    def outputs() -> dict[str, torch.Tensor]:
        with torch.no_grad():
            features = gen.features(context, windows)
            return {
                "generator logits": gen.logits(context, windows),
                "token log-probs": gen.token_log_probs(context, windows, masked, 0.8),
                "sampled log-probs": gen.sample(windows, present, generator=torch.Generator().manual_seed(0))[1],
                "D logits": disc(context, windows),
                "D real and fake logits": torch.cat(disc.real_and_fake_logits(context, windows, windows)),
                "LM logits": lm(windows[:, :-1]),
                "critic values": critic(windows),
                "value head": head(features),
            }

    full = outputs()
    with autocast("32", "cpu", gen):  # float32: a disabled autocast changes nothing
        assert all(torch.equal(full[name], out) for name, out in outputs().items())
    with autocast("bf16-mixed", "cpu", gen):  # asked for explicitly: whatever the width
        mixed = outputs()
    for name, out in mixed.items():
        assert out.dtype == torch.float32, name  # softmaxes and losses downstream run in float32
        # bfloat16 keeps 8 significant bits: close to the float32 outputs, but not equal to them.
        scale = full[name].abs().max()
        assert torch.allclose(out, full[name], atol=0.05 * float(scale) + 1e-3), name
    assert not torch.equal(mixed["generator logits"], full["generator logits"])
    with pytest.raises(ValueError, match="precision 'fp16': use one of auto, 32, bf16-mixed"):
        autocast("fp16", "cpu", gen)


def test_auto_precision_is_bfloat16_only_for_wide_lstms_on_a_cpu_with_bfloat16_units(monkeypatch):
    narrow = Generator(V, config(embed=8, hidden=BFLOAT16_MIN_HIDDEN - 1))
    wide = Critic(V, config(embed=8, hidden=BFLOAT16_MIN_HIDDEN))
    assert (width(narrow), width(wide), width(nn.Linear(4, 4))) == (BFLOAT16_MIN_HIDDEN - 1, BFLOAT16_MIN_HIDDEN, 0)
    assert native_bfloat16("cuda") is False  # GPUs: not measured, so never chosen by "auto"
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bfloat16", lambda kind, native=native: native and kind == "cpu")
        assert resolve("auto", "cpu", wide) == ("bf16-mixed" if native else "32")
        assert resolve("auto", "cpu", narrow) == "32"
        # Set explicitly, a precision applies whatever the network and the hardware.
        assert resolve("bf16-mixed", "cpu", narrow) == "bf16-mixed" and resolve("32", "cpu", wide) == "32"
        with autocast("auto", "cpu", wide):
            assert torch.is_autocast_enabled("cpu") is native
        with autocast("auto", "cpu", narrow):
            assert not torch.is_autocast_enabled("cpu")
        assert describe("auto", "cpu", wide) == ("bf16-mixed (auto: 256-unit LSTMs on a cpu with bfloat16 units" if native
                                                 else "32 (auto: no bfloat16 units on this cpu") + "; resources.precision=32 or bf16-mixed to choose)"
        assert describe("auto", "cpu", narrow).startswith("32 (auto: " + ("255-unit LSTMs, bfloat16 from 256 on" if native else "no bfloat16"))
        assert describe("bf16-mixed", "cpu", narrow) == "bf16-mixed"
