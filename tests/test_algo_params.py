"""gan.algo_params: RLlib's own settings of the chosen algorithm, checked before training does anything
(tests/test_cli.py runs that through `maskgan train`) and passed to its AlgorithmConfig; and RLlib's
learner and env-runner results in MLflow as `rllib/*`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from maskgan_rl.config import load_config
from maskgan_rl.errors import ConfigError
from maskgan_rl.rl.adversarial import AdversarialTrainer, rllib_metrics
from maskgan_rl.rl.algorithms import ALGORITHMS, algorithm_config, check_algo_params, tunable_params
from maskgan_rl.tracking import RUN_ID_FILE
from maskgan_rl.train import run_training
from test_failures import tiny_overrides


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check_algo_params(load_config("synthetic", overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


def built(*overrides: str, preset: str = "synthetic"):
    """The full AlgorithmConfig of a config (no Ray started: only built, never run)."""
    return algorithm_config(load_config(preset, overrides), vocab_size=30, env_config={}, disc_actor=None)


def test_an_unknown_key_names_the_key_the_algorithm_and_valid_keys():
    message = refused("gan.algo=ppo", "gan.algo_params.clip=0.1")
    assert message.startswith("gan.algo_params.clip: PPOConfig (gan.algo=ppo) has no training setting 'clip'")
    assert "clip_param" in message and "entropy_coeff" in message and "kl_coeff" in message
    # IMPALA has no clipping: the same key is refused there.
    assert "IMPALAConfig (gan.algo=impala)" in refused("gan.algo=impala", "gan.algo_params.clip_param=0.1")


def test_keys_the_project_sets_are_refused_with_the_key_to_use_instead():
    assert refused("gan.algo=ppo", "gan.algo_params.lr=0.1") == "gan.algo_params.lr cannot be set for gan.algo=ppo: set it with gan.gen_lr"
    assert "gan.episodes_per_iteration" in refused("gan.algo=appo", "gan.algo_params.train_batch_size_per_learner=7")
    assert "one pass over each batch" in refused("gan.algo=reinforce", "gan.algo_params.num_epochs=3")
    assert "old API stack" in refused("gan.algo=impala", "gan.algo_params.opt_type=sgd")


def test_values_of_another_type_than_rllibs_default_are_refused():
    assert "must be an integer" in refused("gan.algo=ppo", "gan.algo_params.num_epochs=2.5")
    assert "must be true or false" in refused("gan.algo=ppo", "gan.algo_params.use_kl_loss=1")
    assert "must be a number" in refused("gan.algo=ppo", "gan.algo_params.clip_param=wide")


def test_valid_keys_reach_the_algorithm_config_over_the_projects_defaults(tmp_path):
    config = built("gan.algo=ppo", "gan.algo_params.clip_param=0.1", "gan.algo_params.num_epochs=3")
    assert (config.clip_param, config.num_epochs) == (0.1, 3)
    assert config.vf_clip_param == math.inf and config.entropy_coeff == 0.0  # the project's, untouched
    default = built("gan.algo=ppo")
    assert (default.clip_param, default.num_epochs) == (0.3, 2)  # RLlib's clip, the project's epochs
    # A schedule where RLlib takes one, and the same settings from a YAML preset.
    assert built("gan.algo=ppo", "gan.algo_params.entropy_coeff=[[0,0.01],[1000,0.0]]").entropy_coeff == [[0, 0.01], [1000, 0.0]]
    preset = tmp_path / "mine.yaml"
    preset.write_text("gan:\n  algo: appo\n  algo_params:\n    clip_param: 0.2\n    vtrace: false\n")
    config = built(preset=str(preset))
    assert (type(config).__name__, config.clip_param, config.vtrace) == ("APPOConfig", 0.2, False)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_key_said_to_be_valid_is_accepted_with_its_current_value(algo):
    """The list in the error message and the README holds no key that the checks would refuse."""
    config = built(f"gan.algo={algo}")
    for key in tunable_params(config, algo):
        value = getattr(config, key)
        if value is None or isinstance(value, (bool, int, float)):
            as_yaml = yaml.safe_dump(value).split("\n")[0]  # null, true, 0.3, .inf
            assert getattr(built(f"gan.algo={algo}", f"gan.algo_params.{key}={as_yaml}"), key) == value, key


def test_rllib_results_are_flattened_to_finite_numbers_under_valid_mlflow_names():
    result = {
        "learners": {
            "default_policy": {"entropy": np.float32(2.5), "curr_lr": 0.001, "vf_loss": torch.tensor(0.25),
                               "weights_seq_no": 3, "nan_stat": float("nan"), "flag": True, "note": "text",
                               "num_module_steps_trained_lifetime": 96},  # restarts on resume: left out
            "__all_modules__": {"num_trainable_parameters": np.array([7])},
        },
        "env_runners": {"episode_return_mean": -4.0, "module_episode_returns_mean": {"policy:1/x": -4.0}},
        "config": {"lr": 0.1},  # not a result: left out
    }
    assert rllib_metrics(result) == {
        "rllib/learner/default_policy/entropy": 2.5,
        "rllib/learner/default_policy/curr_lr": 0.001,
        "rllib/learner/default_policy/vf_loss": 0.25,
        "rllib/learner/default_policy/weights_seq_no": 3.0,
        "rllib/learner/__all_modules__/num_trainable_parameters": 7.0,
        "rllib/env_runner/episode_return_mean": -4.0,
        "rllib/env_runner/module_episode_returns_mean/policy_1_x": -4.0,
    }


@pytest.mark.slow
def test_ppo_runs_with_its_own_clip_and_logs_rllibs_metrics_every_iteration(ray_session, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    iterations = 2
    cfg = load_config("synthetic", [*tiny_overrides(run_dir, iterations), "gan.algo=ppo", "gan.algo_params.clip_param=0.1"])
    seen = []
    real_train_iteration = AdversarialTrainer.train_iteration

    def train_iteration(trainer: AdversarialTrainer) -> dict:
        # What the loss reads: the learner's own copy of the config.
        seen.extend(trainer.algo.learner_group.foreach_learner(lambda learner: learner.config.clip_param))
        return real_train_iteration(trainer)

    monkeypatch.setattr(AdversarialTrainer, "train_iteration", train_iteration)
    run_training(cfg)
    assert [result.get() for result in seen] == [0.1] * iterations

    client = MlflowClient(cfg.tracking.tracking_uri)
    run_id = (run_dir / f"{RUN_ID_FILE}.train").read_text().strip()
    logged = client.get_run(run_id).data.metrics
    for key in ("rllib/learner/default_policy/entropy", "rllib/learner/default_policy/policy_loss",
                "rllib/learner/default_policy/vf_explained_var", "rllib/learner/default_policy/mean_kl_loss",
                "rllib/env_runner/episode_return_mean"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, iterations + 1)), key
    # The learner's entropy is the generator's, per token: positive and below log(vocabulary).
    entropies = [m.value for m in client.get_metric_history(run_id, "rllib/learner/default_policy/entropy")]
    assert all(0.0 < e < math.log(30 + 3) for e in entropies), entropies
    assert len([key for key in logged if key.startswith("rllib/")]) > 20
