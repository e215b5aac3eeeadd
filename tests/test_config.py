import pytest

from maskgan_rl.config import Config, available_presets, config_from_dict, flatten, load_config, to_dict
from maskgan_rl.errors import ConfigError


def test_presets_and_dotted_overrides():
    assert {"synthetic", "ptb", "imdb"} <= set(available_presets())
    cfg = load_config("ptb", ["model.hidden=256", "gan.algo=ppo", "mask.present_rate=0.25"])  # the hidden size alone
    assert cfg.data.dataset == "text" and cfg.data.vocab_size == 10000
    assert (cfg.model.hidden, cfg.gan.algo, cfg.mask.present_rate) == (256, "ppo", 0.25)


def test_print_config_shows_the_resolved_config_and_preset_reads_it_back(tmp_path, capsys):
    from maskgan_rl.cli import main

    args = ["--preset", "synthetic-gan", "gan.algo=ppo", f"run_dir={tmp_path / 'run'}"]
    assert main(["train", "--print-config", *args]) == 0
    printed = capsys.readouterr().out
    preset_size = load_config("synthetic-gan", []).data.synthetic_train
    assert preset_size != Config().data.synthetic_train  # so the line below tells the preset from the defaults
    assert "algo: ppo" in printed and f"synthetic_train: {preset_size}" in printed
    assert not (tmp_path / "run").exists()  # printed, nothing run
    (tmp_path / "resolved.yaml").write_text(printed)
    assert load_config(str(tmp_path / "resolved.yaml")) == load_config("synthetic-gan", args[2:])


def test_resume_auto_leaves_the_overrides_after_it_alone(capsys):
    from maskgan_rl.cli import main

    # `auto` is the flag's word; an override right after `--resume` stays an override.
    for resume in (["--resume", "auto"], ["--resume"]):
        assert main(["train", *resume, "gan.iterations=7", "--print-config", "gan.algo=ppo"]) == 0
        printed = capsys.readouterr().out
        assert "iterations: 7" in printed and "algo: ppo" in printed
    assert main(["train", "--resume", "latest", "--print-config"]) == 2  # another word is not a mode
    assert "override 'latest' is not of the form key=value" in capsys.readouterr().err


def test_round_trip_through_a_stored_dict():
    cfg = load_config("imdb", ["seed=7"])
    again = config_from_dict(to_dict(cfg))
    assert again == cfg
    assert flatten(cfg)["data.seq_len"] == 40


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.hiden=3", ["unknown key 'model.hiden'", "hidden"]),
        ("nokey=1", ["unknown key 'nokey'", "gan"]),
        ("model.hidden=abc", ["model.hidden", "abc"]),
        ("mask.present_rate=1.5", ["mask.present_rate", "strictly between 0 and 1"]),
        ("mask.present_rate=0", ["mask.present_rate"]),
        ("data.seq_len=1", ["data.seq_len", ">= 2"]),
        ("gan.algo=dqn", ["gan.algo", "reinforce | ppo | appo | impala"]),
        ("gan.generator_ema=1", ["gan.generator_ema", "in [0, 1)"]),
        ("mask.strategy=middle", ["mask.strategy", "random | contiguous | blanks"]),
        ("hidden", ["not of the form key=value"]),
        ("gan.eval_every=0", ["gan.eval_every=0"]),
        ("model.embed=0", ["model.embed=0"]),
        ("resources.disc_num_cpus=-1", ["resources.disc_num_cpus=-1"]),
        ("resources.disc_num_gpus=-1", ["resources.disc_num_gpus=-1"]),
        ("resources.num_gpus_per_env_runner=-1", ["resources.num_gpus_per_env_runner=-1"]),
        ("resources.num_gpus_per_env_runner=0.5", ["num_env_runners=0", "local env runner", "resources.num_env_runners=1"]),
        ("gan.temperature=nan", ["gan.temperature", "> 0"]),
        ("resources.disc_resources=[1, 2]", ["resources.disc_resources", "a mapping key sub-keys"]),
        ("resources.disc_resources.x=abc", ["resources.disc_resources", "amounts >= 0"]),
        ("resources.learner_resources.x=-1", ["resources.learner_resources", "amounts >= 0"]),
        ("resources.precision=fp16", ["resources.precision='fp16'", "auto | 32 | bf16-mixed"]),
    ],
)
def test_bad_overrides_name_the_key_and_the_allowed_values(override, words):
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", [override])
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="synthetic"):
        load_config("nope")


def test_text_dataset_needs_a_corpus():
    with pytest.raises(ConfigError, match="data.train_path"):
        load_config(None, ["data.dataset=text"])
