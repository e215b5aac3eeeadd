"""Tiny whole runs for end-to-end tests, and what they left in MLflow."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from maskgan_rl.tracking import RUN_ID_FILE


def tiny_overrides(run_dir: Path, iterations: int) -> list[str]:
    """A whole pipeline in seconds: 30-word oracle, T=8, 8-unit LSTMs, 5 pretraining steps, one
    remote env runner; MLflow in a sqlite file beside `run_dir`."""
    return [
        f"run_dir={run_dir}",
        "data.seq_len=8", "data.oracle_vocab=30", "data.oracle_hidden=8",
        "data.synthetic_train=200", "data.synthetic_valid=40", "data.synthetic_test=40",
        "model.embed=8", "model.hidden=8",
        "pretrain.lm_steps=5", "pretrain.mle_steps=5", "pretrain.batch_size=16", "pretrain.eval_every=5",
        "pretrain.eval_batches=1",
        f"gan.iterations={iterations}", "gan.episodes_per_iteration=16", "gan.disc_batch_size=16",
        "gan.checkpoint_every=1", "gan.eval_every=1000",
        "resources.num_env_runners=1", "resources.num_envs_per_env_runner=4",
        # One runner CPU + half a CPU for D fit the 2-CPU test Ray; the learner is the driver.
        "resources.num_cpus=2", "resources.disc_num_cpus=0.5",
        f"tracking.tracking_uri=sqlite:///{run_dir.parent / 'mlflow.db'}", "tracking.log_model=false",
    ]


def logged_metrics(run_dir: Path, prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    """Every metric (starting with `prefix`) of the run's MLflow history -> its (step, value) pairs, in logging order."""
    run_id = (run_dir / f"{RUN_ID_FILE}.train").read_text().strip()
    client = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    keys = [key for key in client.get_run(run_id).data.metrics if key.startswith(prefix)]
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in keys}
