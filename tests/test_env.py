"""The in-filling environments on a tiny made-up corpus (vocabulary 13, T = 6)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from ray.rllib.env.env_context import EnvContext
from ray.tune.registry import ENV_CREATOR, _global_registry

import maskgan_rl_envs as envs
from maskgan_rl_envs import InfillEnv, InfillVectorEnv
from maskgan_rl.config import MaskConfig, ModelConfig, load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.masking import mask_context, present_rate_at, unpack_observation
from maskgan_rl.models.discriminator import Discriminator, discriminator_model_config, log_real_prob

V, T = 13, 6
MODEL = {"embed": 8, "hidden": 8, "layers": 1}


@pytest.fixture(scope="module")
def config() -> dict:
    windows = np.random.default_rng(0).integers(0, V, size=(40, T + 1))
    # The random strategy gives episodes with gaps between masked targets.
    return {
        "windows": windows,
        "vocab_size": V,
        "seq_len": T,
        "mask": {"strategy": "random", "present_rate": 0.5},
        "model": MODEL,
        "seed": 3,
    }


def discriminator(seed: int) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(V, ModelConfig(**MODEL)).eval()


def play(env: InfillEnv, actions: np.random.Generator, seed=None) -> dict:
    """One episode with random actions: what it observed, earned and reported at the end."""
    obs, _ = env.reset(seed=seed)
    first, positions, rewards = obs, [], []
    done = False
    while not done:
        positions.append(int(unpack_observation(obs)[2]))
        obs, reward, done, truncated, info = env.step(int(actions.integers(V)))
        assert not truncated
        rewards.append(reward)
    return {"first": parts(first), "last": parts(obs), "positions": positions, "rewards": np.array(rewards), "info": info}


def parts(observation: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(("context", "filled", "position"), unpack_observation(observation)))


def test_passes_gymnasium_env_checker(config):
    # Through gymnasium.make so the env has a spec: the checker then also tests seeded determinism.
    check_env(gym.make(envs.GYM_ID, config=config).unwrapped)


def test_episode_fills_masked_targets_in_order_and_rewards_are_discriminator_log_probs(config):
    env, d = InfillEnv(config), discriminator(seed=7)
    env.set_discriminator_weights(d.state_dict(), version=1)
    actions = np.random.default_rng(1)
    layouts = set()
    for _ in range(8):
        ep = play(env, actions)
        window, present = ep["info"]["window"], ep["info"]["present"]
        masked = np.flatnonzero(~present)
        layouts.add(tuple(masked))
        # Only masked targets are steps, left to right; present targets were copied in from the start.
        assert ep["positions"] == masked.tolist()
        context = np.where(np.r_[True, present], window, V)
        np.testing.assert_array_equal(ep["first"]["context"], context)
        np.testing.assert_array_equal(ep["first"]["filled"], context)
        filled = ep["last"]["filled"]
        np.testing.assert_array_equal(filled[1:][present], window[1:][present])
        assert np.all(filled < V) and filled[0] == window[0]
        # D is causal, so each step's reward is D's judgement of that token within the final sequence.
        with torch.no_grad():
            logits = d(torch.from_numpy(context)[None], torch.from_numpy(filled)[None])[0]
        np.testing.assert_allclose(ep["rewards"], log_real_prob(logits).numpy()[masked], rtol=1e-5, atol=1e-6)
        assert ep["info"]["disc_version"] == 1
    assert len(layouts) > 1  # the stream really varied the mask


def test_new_discriminator_weights_change_rewards_and_version(config):
    env = InfillEnv(config)
    assert env.discriminator_version == 0
    env.set_discriminator_weights(discriminator(seed=7).state_dict(), version=1)
    before = play(env, np.random.default_rng(2), seed=5)
    env.set_discriminator_weights(discriminator(seed=8).state_dict(), version=2)
    after = play(env, np.random.default_rng(2), seed=5)
    assert env.discriminator_version == 2 and after["info"]["disc_version"] == 2
    np.testing.assert_array_equal(before["last"]["filled"], after["last"]["filled"])  # same episode, same actions
    assert not np.allclose(before["rewards"], after["rewards"])
    # As numpy arrays, read-only as Ray's object store hands them over (how the D actor broadcasts them).
    arrays = {name: value.numpy().copy() for name, value in discriminator(seed=7).state_dict().items()}
    for value in arrays.values():
        value.flags.writeable = False
    env.set_discriminator_weights(arrays, version=3)
    again = play(env, np.random.default_rng(2), seed=5)
    np.testing.assert_array_equal(before["rewards"], again["rewards"])


def test_env_runners_with_gpus_score_on_the_gpu_and_the_driver_on_the_cpu():
    from maskgan_rl.rl.adversarial import environment_config

    on_gpus = load_config("synthetic", ["resources.num_env_runners=2", "resources.num_gpus_per_env_runner=0.5"])
    assert environment_config(on_gpus, V, windows=None)["device"] == "cuda"
    assert environment_config(load_config("synthetic", []), V, windows=None)["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rewards_on_the_gpu_are_those_on_the_cpu(config, monkeypatch):
    # cuDNN's LSTMs compute in TF32 by default (10-bit mantissas); in full float32 the two devices agree to rounding.
    if hasattr(torch.backends.cudnn, "rnn"):  # torch >= 2.9
        monkeypatch.setattr(torch.backends.cudnn.rnn, "fp32_precision", "ieee")
    else:
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    weights = discriminator(seed=7).state_dict()
    episodes = []
    for device in ("cpu", "cuda"):
        env = InfillEnv({**config, "device": device, "precision": "32"})
        env.set_discriminator_weights(weights, version=1)
        episodes.append(play(env, np.random.default_rng(2), seed=5))
    on_cpu, on_gpu = episodes
    np.testing.assert_array_equal(on_cpu["last"]["filled"], on_gpu["last"]["filled"])
    assert on_gpu["rewards"].dtype == np.float32
    np.testing.assert_allclose(on_gpu["rewards"], on_cpu["rewards"], rtol=1e-5, atol=1e-5)


def test_vector_env_matches_single_envs_with_next_step_autoreset(config):
    seeds, weights = [10, 11, 12], discriminator(seed=7).state_dict()
    vec = InfillVectorEnv(config, num_envs=3)
    singles = [InfillEnv(config) for _ in seeds]
    for env in [vec, *singles]:
        env.set_discriminator_weights(weights, version=4)
    obs, _ = vec.reset(seed=seeds)
    expected = [env.reset(seed=s)[0] for env, s in zip(singles, seeds)]
    done = np.zeros(3, dtype=bool)
    actions, finished = np.random.default_rng(3), 0
    for _ in range(30):
        np.testing.assert_array_equal(obs, np.stack(expected))
        act = actions.integers(V, size=3)
        obs, rewards, terminated, truncated, infos = vec.step(act)
        assert not truncated.any()
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP: this step ignored the action and started a new episode
                expected[i], _ = env.reset()
                assert rewards[i] == 0.0 and not terminated[i]
                continue
            expected[i], reward, term, _, info = env.step(int(act[i]))
            assert rewards[i] == pytest.approx(reward, rel=1e-5, abs=1e-6) and terminated[i] == term
            if term:
                finished += 1
                assert infos["_window"][i] and infos["disc_version"][i] == 4
                np.testing.assert_array_equal(infos["window"][i], info["window"])
                np.testing.assert_array_equal(infos["present"][i], info["present"])
        assert "_window" not in infos or infos["_window"].tolist() == terminated.tolist()
        done = terminated
    assert finished >= 6


def test_reseed_replays_the_same_stream(config):
    def run(env: InfillVectorEnv) -> list:
        obs, _ = env.reset()
        trace = [obs]
        for step in range(12):
            trace.append(env.step(np.full(3, step % V)))
        return trace

    vec = InfillVectorEnv(config, num_envs=3)
    vec.reseed(21)
    first = run(vec)
    run(vec)  # move the stream on
    vec.reseed(21)
    gym.utils.env_checker.data_equivalence(first, run(vec), exact=True) or pytest.fail("reseed did not replay")
    # An int seed gives each sub-env its own stream.
    assert len({tuple(row) for row in parts(first[0])["context"]}) == 3

    single = InfillEnv(config)
    single.reseed(9)
    replay = play(single, np.random.default_rng(0))
    seeded = play(single, np.random.default_rng(0), seed=9)
    np.testing.assert_array_equal(replay["last"]["filled"], seeded["last"]["filled"])
    np.testing.assert_array_equal(replay["rewards"], seeded["rewards"])


def test_registered_names_build_the_environments(config):
    vec = gym.make_vec(envs.GYM_ID, num_envs=2, vectorization_mode="vector_entry_point", config=config)
    assert isinstance(vec, InfillVectorEnv) and vec.num_envs == 2
    # RLlib calls the Ray creators with an EnvContext; its vector entry point adds "num_envs".
    context = EnvContext(config, worker_index=1)
    assert isinstance(_global_registry.get(ENV_CREATOR, envs.RAY_ENV)(context), InfillEnv)
    ray_vec = _global_registry.get(ENV_CREATOR, envs.RAY_VECTOR_ENV)(context | {"num_envs": 4})
    assert isinstance(ray_vec, InfillVectorEnv) and ray_vec.num_envs == 4


def test_windows_may_come_through_rays_object_store(config, ray_session):
    import ray

    by_value, by_reference = InfillEnv(config), InfillEnv({**config, "windows": ray.put(config["windows"])})
    first, second = play(by_value, np.random.default_rng(0), seed=5), play(by_reference, np.random.default_rng(0), seed=5)
    np.testing.assert_array_equal(first["last"]["filled"], second["last"]["filled"])
    np.testing.assert_array_equal(first["rewards"], second["rewards"])


def test_config_problems_are_named(config):
    with pytest.raises(ConfigError, match="windows"):
        InfillEnv({k: v for k, v in config.items() if k != "windows"})
    with pytest.raises(ConfigError, match="seq_len"):
        InfillEnv({**config, "seq_len": T + 1})
    with pytest.raises(ConfigError, match=f"ids up to {V - 1}"):
        InfillEnv({**config, "vocab_size": V - 1})
    with pytest.raises(ConfigError, match="mask"):
        InfillEnv({**config, "mask": {"strategy": "random", "rate": 0.5}})


def test_misuse_is_refused_with_what_to_do(config):
    env = InfillEnv(config)
    env.reset(seed=1)
    with pytest.raises(ValueError, match=rf"token ids in \[0, {V}\), got \[{V}\]"):
        env.step(V)  # the missing id is no action
    play(env, np.random.default_rng(0), seed=1)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(2)
    vec = InfillVectorEnv(config, num_envs=3)
    with pytest.raises(ValueError, match="got 2 seeds for 3 sub-envs"):
        vec.reseed([1, 2])
    vec.reset(seed=4)
    with pytest.raises(ValueError, match="token ids"):
        vec.step(np.array([0, -1, 0]))


def test_rewards_come_from_a_layer_normed_discriminator_of_its_own_size(config):
    # gan.disc_* give the env's D its own shape; it takes the actor's weights and its step-by-step
    # scoring equals a whole pass.
    cfg = load_config("synthetic", [f"data.seq_len={T}", "model.embed=8", "model.hidden=8", "gan.disc_hidden=12", "gan.disc_layer_norm=true"])
    disc = Discriminator.from_config(V, cfg).eval()
    env = InfillEnv(config | {"model": vars(discriminator_model_config(cfg)), "disc_layer_norm": True})
    env.set_discriminator_weights(disc.state_dict(), version=1)
    episode = play(env, np.random.default_rng(0), seed=0)
    present = torch.as_tensor(episode["info"]["present"])
    context = mask_context(torch.as_tensor(episode["info"]["window"])[None], present[None], V)
    with torch.no_grad():
        expected = log_real_prob(disc(context, torch.as_tensor(episode["last"]["filled"])[None]))[0][~present]
    np.testing.assert_allclose(episode["rewards"], expected.numpy(), atol=1e-5)


def test_masks_follow_the_mask_rate_curriculum(config):
    # Random masks of T=6 targets hide round((1 - rate) * 6): rate 0.9 -> round(0.6) = 1,
    # 0.7 -> round(1.8) = 2, 0.5 -> 3 targets; an episode is that many steps long.
    mask = MaskConfig(strategy="random", present_rate=0.5, curriculum_iterations=4, curriculum_start_present_rate=0.9)
    env = InfillEnv(config)
    actions = np.random.default_rng(0)
    for iteration, masked in ((0, 1), (2, 2), (4, 3), (9, 3)):
        env.set_present_rate(present_rate_at(mask, iteration))
        for seed in range(3):
            episode = play(env, actions, seed=seed)
            assert (~episode["info"]["present"]).sum() == masked and len(episode["rewards"]) == masked, iteration
