"""Every hyperparameter of a run, in one structured config.

`load_config(preset, overrides)` merges, in order: the defaults below, a named preset
(`maskgan_rl/presets/<name>.yaml`) or a YAML file, then dotted overrides such as
`gan.algo=ppo model.hidden=256`. The result is type-checked by OmegaConf and range-checked by
`validate`; any problem is a `ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maskgan_rl.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"

DATASETS = ("synthetic", "text", "imdb")
MASK_STRATEGIES = ("random", "contiguous", "blanks")
# The RL algorithms gan.algo may name; maskgan_rl.rl.algorithms.ALGORITHMS holds one entry for each.
ALGORITHM_NAMES = ("reinforce", "ppo", "appo", "impala")
CRITIC_NAMES = ("lstm", "head", "head_stop_gradient")  # gan.critic, see maskgan_rl/models/critic.py
PRECISIONS = ("auto", "32", "bf16-mixed")  # resources.precision, see maskgan_rl/models/precision.py


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic | text (one sentence per line, PTB style) | imdb (JSONL)
    train_path: Optional[str] = None  # text/imdb: training corpus (.txt, .txt.gz, .jsonl, .jsonl.gz)
    valid_path: Optional[str] = None
    test_path: Optional[str] = None
    seq_len: int = 20  # T: a window is T+1 tokens, inputs x[0:T], targets x[1:T+1]
    vocab_size: int = 10000  # text/imdb: cap on the vocabulary, special tokens included (synthetic: oracle_vocab)
    min_freq: int = 1
    lowercase: bool = False  # text corpora; IMDB is always lower-cased
    imdb_max_reviews: int = 0  # 0 = all reviews of a split
    # The synthetic oracle corpus: a random LSTM LM samples the "real" data (SeqGAN's benchmark).
    oracle_vocab: int = 5000
    oracle_hidden: int = 32
    oracle_seed: int = 88
    synthetic_train: int = 10000  # sequences
    synthetic_valid: int = 1000
    synthetic_test: int = 1000


@dataclass
class MaskConfig:
    strategy: str = "contiguous"  # random (scattered targets) | contiguous (one block, as in the paper) | blanks (several)
    present_rate: float = 0.5  # fraction of targets kept; the paper used 0.5 everywhere
    num_blanks: int = 2  # blanks strategy only
    # The paper's mask-rate curriculum (docs/levers.md): over the first `curriculum_iterations`
    # adversarial iterations the present rate moves linearly from `curriculum_start_present_rate`
    # (few masked tokens) to `present_rate`, then stays there. 0 = off. Evaluation always uses present_rate.
    curriculum_iterations: int = 0
    curriculum_start_present_rate: float = 0.9


@dataclass
class ModelConfig:
    embed: int = 32
    hidden: int = 32
    layers: int = 1
    # Variational dropout keep probability (the PTB GAN run used 0.34), in pretraining and in D (unless
    # gan.disc_keep_prob is set); the adversarial policy and critic run without it
    # (maskgan_rl.rl.module.policy_model_config says why).
    keep_prob: float = 1.0
    attention: bool = True
    tie_weights: bool = True  # softmax weights = embedding (hidden -> embed by a linear map if they differ)


@dataclass
class PretrainConfig:
    lm_steps: int = 300
    mle_steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    grad_clip: float = 10.0
    eval_every: int = 100
    eval_batches: int = 10


@dataclass
class GanConfig:
    algo: str = "reinforce"  # one of ALGORITHM_NAMES
    # Settings of gan.algo's own RLlib config, passed to its AlgorithmConfig.training(...) over the
    # project's defaults, e.g. {clip_param: 0.1, entropy_coeff: 0.01} for ppo (README, "Algorithms").
    # Checked against that config class when training starts (rl.algorithms.check_algo_params).
    algo_params: dict = field(default_factory=dict)
    iterations: int = 20
    episodes_per_iteration: int = 64  # masked windows filled per generator update
    gamma: float = 0.9
    advantage_clip: float = 5.0
    gen_lr: float = 5e-4
    critic_lr: float = 1e-3
    # The baseline's design (maskgan_rl/models/critic.py): "lstm", its own LSTM over the filled prefix
    # (the authors'), or "head" / "head_stop_gradient", a linear value head on the generator's decoder.
    critic: str = "lstm"
    disc_lr: float = 1e-3
    disc_steps: int = 2  # k: discriminator steps per generator update (the critic learns with the generator)
    disc_pretrain_steps: int = 0  # D steps on MaskMLE in-fills before adversarial training (paper's step 3)
    # Iterations at the start in which only the critic (and D) learn, the generator held at MaskMLE:
    # a fresh critic predicts ~0, so until it has learned the returns every advantage is negative and
    # REINFORCE pushes probability off every sampled token (entropy up). Not in the paper.
    critic_warmup_iterations: int = 0
    disc_batch_size: int = 64
    # The discriminator's own shape and regularisation (docs/levers.md; ScratchGAN's regularised D).
    # Sizes None = the generator's (model.*); only a D of the generator's size starts from MaskMLE's
    # weights, as in the paper, any other starts from random weights.
    disc_embed: Optional[int] = None
    disc_hidden: Optional[int] = None
    disc_layers: Optional[int] = None
    disc_keep_prob: Optional[float] = None  # D's variational dropout keep probability; None = model.keep_prob
    disc_weight_decay: float = 0.0  # L2 penalty in D's Adam (ScratchGAN: 1e-6)
    disc_layer_norm: bool = False  # LayerNorm on every LSTM layer's outputs in D (encoder and decoder)
    disc_label_smoothing: float = 0.0  # one-sided: D's target for real tokens is 1 - this (Salimans et al. 2016)
    grad_clip: float = 10.0
    # Adam's beta1 for the generator, critic and D in the adversarial stage (ScratchGAN: 0.5, less
    # momentum against a moving target); beta2 stays 0.999.
    adam_beta1: float = 0.9
    temperature: float = 1.0  # the policy's softmax temperature: it samples and learns softmax(logits / temperature)
    # Cold exploration (ColdGAN; docs/levers.md): env runners sample from a behaviour policy mu, the
    # policy's distribution at temperature gan.temperature * rollout_temperature, cut to its top-p
    # nucleus; reinforce weights each token's policy-gradient term by pi(a) / mu(a), truncated at
    # importance_weight_clip (PPO, APPO and IMPALA apply their own corrections). 1 and 1 = off.
    rollout_temperature: float = 1.0
    rollout_top_p: float = 1.0
    importance_weight_clip: float = 5.0
    # Weight of the past in a moving average of the generator's weights, updated every iteration
    # (0 = off, 0.95 ~ the last 20 iterations). The average is what is evaluated and shipped;
    # training goes on from the current weights.
    generator_ema: float = 0.0
    # Most D versions a rollout's rewards may lag behind D's; older episodes are not used to train D
    # (lag comes from the asynchronous algorithms and from gan.disc_overlap).
    max_disc_lag: int = 1
    disc_overlap: bool = False  # run D's update alongside the next iteration's sampling (lag 1, faster)
    # Divergence guard: the run stops when learner_masked_perplexity (logged every iteration: the
    # current generator on a fixed validation batch) passes it; eval/masked_perplexity is not guarded.
    max_masked_perplexity: float = 1e4
    eval_every: int = 5
    checkpoint_every: int = 5
    keep_checkpoints: int = 2  # newest gan-*.pt files kept in <run_dir>/checkpoints (the rest are deleted)


@dataclass
class ResourcesConfig:
    # "auto", "HOST:PORT" or "ray://...": join that cluster. None: inside a `ray job submit` job, the job's
    # cluster; anywhere else a new local Ray, even where a cluster runs or RAY_ADDRESS is set (train.ray_address).
    ray_address: Optional[str] = None
    num_cpus: Optional[int] = None  # local Ray only
    num_env_runners: int = 0  # 0: sample in the driver's local env runner
    # Sub-environments per env runner, stepped as one batch. None: the runner's share of
    # gan.episodes_per_iteration, so that each runner fills all its windows in one batched pass.
    num_envs_per_env_runner: Optional[int] = None
    num_cpus_per_env_runner: float = 1.0
    # GPUs per remote env runner (a fraction shares one): its generator samples and its environments' D scores
    # the rewards there. RLlib's local env runner (num_env_runners=0) always runs on the CPU.
    num_gpus_per_env_runner: float = 0.0
    num_learners: int = 0  # 0: learn in the driver process
    num_gpus_per_learner: float = 0.0
    disc_num_cpus: float = 1.0
    disc_num_gpus: float = 0.0
    # Torch threads per process of the adversarial stage (driver, env runners, learners, D) and per
    # serve replica. None: chosen per process from the CPUs Ray gives it (resources.ThreadShare).
    torch_threads: Optional[int] = None
    # The training forward passes' arithmetic: "32" (float32), "bf16-mixed" (torch.autocast to
    # bfloat16: matrix products and LSTMs in bfloat16, weights, losses and optimisers in float32), or
    # "auto": bf16-mixed for networks of 256+ units on a CPU with bfloat16 units, else 32
    # (models/precision.py). Evaluation, in-filling and serving always run in float32.
    precision: str = "auto"
    env_runner_resources: dict = field(default_factory=dict)  # custom resources, e.g. {"cpu_node": 0.1}
    learner_resources: dict = field(default_factory=dict)
    disc_resources: dict = field(default_factory=dict)


@dataclass
class TrackingConfig:
    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/../mlflow.db (for a URI run_dir: beside
    # the driver's local cache of it, see maskgan_rl/storage.py)
    tracking_uri: Optional[str] = None
    experiment: str = "maskgan"
    run_name: Optional[str] = None
    log_model: bool = True
    # An MLflow run to nest this run under (its tag mlflow.parentRunId): `maskgan tune` sets it to the
    # sweep's run for every trial and shared pretraining.
    parent_run_id: Optional[str] = None


@dataclass
class ServeConfig:
    """`maskgan serve`: the generator behind an HTTP API on Ray Serve (its flags override these keys)."""

    host: str = "127.0.0.1"  # 0.0.0.0 accepts requests from other machines
    port: int = 8000
    replicas: int = 1  # copies of the generator, each its own Ray actor, requests spread between them
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 0.0  # > 0: the replica fills on its GPU
    replica_resources: dict = field(default_factory=dict)  # custom resources, e.g. {"cpu_node": 0.1}
    max_batch_size: int = 32  # concurrent requests a replica samples together
    batch_wait_ms: float = 10.0  # how long a replica waits for more requests before sampling a batch
    max_texts: int = 64  # texts per request
    max_samples: int = 16  # filled versions per text


@dataclass
class Config:
    # Checkpoints, D's saved state, plots: a local folder, or a URI pyarrow opens (s3://bucket/path,
    # gs://..., with filesystem options as query parameters; see maskgan_rl/storage.py).
    run_dir: str = "runs/synthetic"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then a preset name or YAML path, then dotted `key=value` overrides; validated."""
    cfg = OmegaConf.structured(Config)
    if preset:
        cfg = _merged(cfg, _read_preset(preset), f"preset {preset!r}: ")
    return _with_overrides(cfg, overrides)


def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Rebuild a Config stored in a checkpoint or an MLflow run, then apply dotted overrides
    (same checks as the command line)."""
    cfg = _merged(OmegaConf.structured(Config), OmegaConf.create(data), "stored config: ")
    return _with_overrides(cfg, overrides)


def _with_overrides(cfg: DictConfig, overrides: Sequence[str]) -> Config:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. gan.algo=ppo)")
        try:  # the value is parsed as YAML: `x=[` or `x=*a` fail there
            layer = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_one_line(err)}): quote it") from None
        cfg = _merged(cfg, layer, f"override {item!r}: ")
    return _resolved_and_validated(cfg, "")


def _merged(cfg: DictConfig, layer: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}{_describe(err)}") from None
    except TypeError as err:  # OmegaConf's own words for a list given to a mapping key, or the reverse
        raise ConfigError(f"{where}{err}: give a mapping key sub-keys (key.name=value), a list key a list") from None


def _resolved_and_validated(cfg: DictConfig, where: str) -> Config:
    # `${...}` interpolations resolve lazily, i.e. inside `validate`; resolving them first turns an
    # unknown reference or a resolved value of the wrong type into the same error as any bad value.
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}{_describe(err)}") from None
    validate(cfg)
    return OmegaConf.to_object(cfg)


def with_values(cfg: Config, values: Mapping[str, Any], where: str = "") -> Config:
    """`cfg` with dotted keys set to Python values (`{"gan.gen_lr": 1e-4}`: a sweep's trial), checked
    like overrides; `where` starts every error message."""
    node = OmegaConf.structured(cfg)
    for key, value in values.items():
        layer = OmegaConf.create()
        OmegaConf.update(layer, key, value)
        node = _merged(node, layer, where)
    try:
        return _resolved_and_validated(node, "")
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def to_dict(cfg: Config | DictConfig) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(cfg: Config) -> dict[str, Any]:
    """`{"gan.algo": "reinforce", ...}`: the form MLflow params and dotted overrides use."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        else:
            out[prefix[:-1]] = node

    walk("", to_dict(cfg))
    return out


def _read_preset(preset: str) -> DictConfig:
    path = Path(preset)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {preset!r}: use one of {', '.join(available_presets())} or a path to a YAML file"
        )
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # a YAML syntax error, reported with the file it came from
        raise ConfigError(f"preset {path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"preset {path}: expected a mapping of sections (data:, model:, gan: ...), got a {type(loaded).__name__}")
    return loaded


def _one_line(err: Exception) -> str:
    """YAML errors span lines (problem, then where); the command line prints one."""
    return " ".join(str(err).split())


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if type(err).__name__ in ("ConfigAttributeError", "ConfigKeyError") and key:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.structured(Config)
        for part in parent.split(".") if parent else []:
            node = node[part]
        return f"unknown key {key!r}; valid keys{' under ' + repr(parent) if parent else ''}: {', '.join(node.keys())}"
    if key:
        return f"bad value for {key!r}: {msg}"
    return msg


def validate(cfg: Config | DictConfig) -> None:
    """Range checks that types alone cannot express. Raises ConfigError naming key and allowed values."""

    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            value = OmegaConf.select(cfg, key) if isinstance(cfg, DictConfig) else _select(cfg, key)
            raise ConfigError(f"{key}={value!r} is out of range: must be {allowed}")

    d, m, mo, p, g, r = cfg.data, cfg.mask, cfg.model, cfg.pretrain, cfg.gan, cfg.resources
    # numpy refuses negative seeds and torch ones past 64 bits; both take [0, 2**32).
    need(0 <= cfg.seed < 2**32, "seed", "an integer in [0, 2**32)")
    need(d.dataset in DATASETS, "data.dataset", " | ".join(DATASETS))
    need(d.dataset == "synthetic" or bool(d.train_path), "data.train_path", "a corpus file when data.dataset is text or imdb")
    need(d.seq_len >= 2, "data.seq_len", "an integer >= 2 (T)")
    need(d.vocab_size >= 3, "data.vocab_size", "an integer >= 3")
    need(d.min_freq >= 1, "data.min_freq", "an integer >= 1")
    need(d.oracle_vocab >= 3, "data.oracle_vocab", "an integer >= 3")
    need(d.oracle_hidden >= 1, "data.oracle_hidden", "an integer >= 1")
    need(0 <= d.oracle_seed < 2**32, "data.oracle_seed", "an integer in [0, 2**32)")
    need(d.imdb_max_reviews >= 0, "data.imdb_max_reviews", "an integer >= 0 (0 = all reviews)")
    for split in ("synthetic_train", "synthetic_valid", "synthetic_test"):
        need(getattr(d, split) >= 1, f"data.{split}", "an integer >= 1")
    need(m.strategy in MASK_STRATEGIES, "mask.strategy", " | ".join(MASK_STRATEGIES))
    need(0.0 < m.present_rate < 1.0, "mask.present_rate", "strictly between 0 and 1")
    need(m.num_blanks >= 1, "mask.num_blanks", "an integer >= 1")
    need(m.curriculum_iterations >= 0, "mask.curriculum_iterations", "an integer >= 0 (0 = no curriculum)")
    need(0.0 < m.curriculum_start_present_rate < 1.0, "mask.curriculum_start_present_rate", "strictly between 0 and 1")
    need(mo.embed >= 1, "model.embed", "an integer >= 1")
    need(mo.hidden >= 1, "model.hidden", "an integer >= 1")
    need(mo.layers >= 1, "model.layers", "an integer >= 1")
    need(0.0 < mo.keep_prob <= 1.0, "model.keep_prob", "in (0, 1]")
    for key in ("lm_steps", "mle_steps"):
        need(getattr(p, key) >= 0, f"pretrain.{key}", "an integer >= 0")
    need(p.batch_size >= 1, "pretrain.batch_size", "an integer >= 1")
    need(p.lr > 0, "pretrain.lr", "> 0")
    need(p.eval_every >= 1, "pretrain.eval_every", "an integer >= 1")
    need(p.eval_batches >= 1, "pretrain.eval_batches", "an integer >= 1")
    need(p.grad_clip > 0, "pretrain.grad_clip", "> 0")
    need(g.algo in ALGORITHM_NAMES, "gan.algo", " | ".join(ALGORITHM_NAMES))
    need(g.iterations >= 0, "gan.iterations", "an integer >= 0")
    need(g.episodes_per_iteration >= 1, "gan.episodes_per_iteration", "an integer >= 1")
    need(0.0 <= g.gamma <= 1.0, "gan.gamma", "in [0, 1]")
    need(g.advantage_clip > 0, "gan.advantage_clip", "> 0")
    for key in ("gen_lr", "critic_lr", "disc_lr"):
        need(getattr(g, key) > 0, f"gan.{key}", "> 0")
    need(g.disc_steps >= 0, "gan.disc_steps", "an integer >= 0")
    need(g.disc_pretrain_steps >= 0, "gan.disc_pretrain_steps", "an integer >= 0")
    need(g.critic in CRITIC_NAMES, "gan.critic", " | ".join(CRITIC_NAMES))
    need(g.critic_warmup_iterations >= 0, "gan.critic_warmup_iterations", "an integer >= 0")
    need(g.disc_batch_size >= 1, "gan.disc_batch_size", "an integer >= 1")
    for key in ("disc_embed", "disc_hidden", "disc_layers"):
        need(getattr(g, key) is None or getattr(g, key) >= 1, f"gan.{key}", "null (the generator's size) or an integer >= 1")
    need(g.disc_keep_prob is None or 0.0 < g.disc_keep_prob <= 1.0, "gan.disc_keep_prob", "null (model.keep_prob) or in (0, 1]")
    need(g.disc_weight_decay >= 0, "gan.disc_weight_decay", ">= 0 (0 = none)")
    need(0.0 <= g.disc_label_smoothing < 0.5, "gan.disc_label_smoothing", "in [0, 0.5) (0 = none)")
    need(g.rollout_temperature > 0, "gan.rollout_temperature", "> 0 (1 = sample the policy itself)")
    need(0.0 < g.rollout_top_p <= 1.0, "gan.rollout_top_p", "in (0, 1] (1 = no nucleus cut)")
    need(g.importance_weight_clip > 0, "gan.importance_weight_clip", "> 0")
    need(g.grad_clip > 0, "gan.grad_clip", "> 0")
    need(0.0 <= g.adam_beta1 < 1.0, "gan.adam_beta1", "in [0, 1)")
    need(g.max_masked_perplexity > 0, "gan.max_masked_perplexity", "> 0 (the run stops when learner_masked_perplexity passes it)")
    need(g.temperature > 0, "gan.temperature", "> 0")
    need(0.0 <= g.generator_ema < 1.0, "gan.generator_ema", "in [0, 1) (0 = no moving average)")
    need(g.max_disc_lag >= 0, "gan.max_disc_lag", "an integer >= 0")
    need(g.eval_every >= 1, "gan.eval_every", "an integer >= 1")
    need(g.checkpoint_every >= 1, "gan.checkpoint_every", "an integer >= 1")
    need(g.keep_checkpoints >= 2, "gan.keep_checkpoints", "an integer >= 2")
    need(r.num_cpus is None or r.num_cpus >= 1, "resources.num_cpus", "null (all of this machine's) or an integer >= 1")
    need(r.num_env_runners >= 0, "resources.num_env_runners", "an integer >= 0")
    need(r.num_cpus_per_env_runner >= 0, "resources.num_cpus_per_env_runner", ">= 0")
    need(r.num_gpus_per_env_runner >= 0, "resources.num_gpus_per_env_runner", ">= 0")
    if r.num_gpus_per_env_runner > 0 and r.num_env_runners == 0:
        raise ConfigError(
            f"resources.num_gpus_per_env_runner={r.num_gpus_per_env_runner} with resources.num_env_runners=0: RLlib's local "
            "env runner (in the driver) samples on the CPU; set resources.num_env_runners=1 or more to sample on GPUs"
        )
    need(r.disc_num_cpus >= 0, "resources.disc_num_cpus", ">= 0")
    need(r.num_envs_per_env_runner is None or r.num_envs_per_env_runner >= 1, "resources.num_envs_per_env_runner", "null (each runner's share of gan.episodes_per_iteration) or an integer >= 1")
    need(r.num_learners >= 0, "resources.num_learners", "an integer >= 0")
    need(r.num_gpus_per_learner >= 0, "resources.num_gpus_per_learner", ">= 0")
    need(r.disc_num_gpus >= 0, "resources.disc_num_gpus", ">= 0")
    need(r.torch_threads is None or r.torch_threads >= 1, "resources.torch_threads", "null (chosen per process) or an integer >= 1")
    need(r.precision in PRECISIONS, "resources.precision", " | ".join(PRECISIONS))
    custom_resources = {f"resources.{key}": getattr(r, key) for key in ("env_runner_resources", "learner_resources", "disc_resources")}
    custom_resources["serve.replica_resources"] = cfg.serve.replica_resources
    for key, amounts in custom_resources.items():
        need(all(isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0 for a in amounts.values()),
             key, "a mapping of custom resource names to amounts >= 0, e.g. {cpu_node: 0.1}")
    need(cfg.device in ("auto", "cpu", "cuda"), "device", "auto | cpu | cuda")
    s = cfg.serve
    need(bool(s.host.strip()), "serve.host", "an address to listen on, e.g. 127.0.0.1 (this machine only) or 0.0.0.0")
    need(1 <= s.port <= 65535, "serve.port", "a TCP port in [1, 65535]")
    need(s.replicas >= 1, "serve.replicas", "an integer >= 1")
    need(s.num_cpus_per_replica >= 0, "serve.num_cpus_per_replica", ">= 0")
    need(s.num_gpus_per_replica >= 0, "serve.num_gpus_per_replica", ">= 0")
    need(s.max_batch_size >= 1, "serve.max_batch_size", "an integer >= 1")
    need(s.batch_wait_ms >= 0, "serve.batch_wait_ms", ">= 0 (milliseconds)")
    need(s.max_texts >= 1, "serve.max_texts", "an integer >= 1")
    need(s.max_samples >= 1, "serve.max_samples", "an integer >= 1")
    need(cfg.tracking.parent_run_id is None or bool(cfg.tracking.parent_run_id.strip()), "tracking.parent_run_id",
         "null or an MLflow run id")


def _select(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
