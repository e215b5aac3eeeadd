"""Tracking against a REAL MLflow tracking server: a tiny `maskgan train` (LM, MaskMLE, two adversarial
iterations on the shared local Ray) logs params, metric history, artifacts and the generator as a
pyfunc model, which loads back through `runs:/` and fills in text; `--resume` continues the same run."""

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.request

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from maskgan_rl.checkpoint import load_checkpoint
from maskgan_rl.config import load_config
from maskgan_rl.tracking import RUN_ID_FILE
from maskgan_rl.train import run_training
from processes import free_port

pytestmark = pytest.mark.slow

TINY = [
    "data.oracle_vocab=30", "data.oracle_hidden=8", "data.synthetic_train=200", "data.synthetic_valid=40",
    "data.synthetic_test=40", "data.seq_len=8", "model.embed=8", "model.hidden=8", "pretrain.lm_steps=10",
    "pretrain.mle_steps=10", "pretrain.batch_size=16", "pretrain.eval_every=5", "pretrain.eval_batches=1",
    "gan.iterations=2", "gan.eval_every=1", "gan.checkpoint_every=1", "gan.episodes_per_iteration=16",
    "gan.disc_batch_size=16", "gan.disc_pretrain_steps=3", "resources.num_envs_per_env_runner=4",
    "resources.disc_num_cpus=0.5",
]
STARTUP_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory, wait_until_healthy):
    """`mlflow server` on a free port with a sqlite store; yields its URI, then stops it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    # No server-side jobs are needed; without their runner processes the server starts faster.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'db'}",
         "--default-artifact-root", str(root / "art"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: the workers stop with it
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, lambda: _healthy(uri), root / "server.log", "mlflow server", STARTUP_TIMEOUT_S)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_training_is_tracked_on_the_server_and_its_model_fills_in_text(server, tmp_path, ray_session, monkeypatch, caplog):
    cfg = load_config("synthetic", TINY + [f"run_dir={tmp_path / 'run'}", f"tracking.tracking_uri={server}"])
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    run_training(cfg)
    run_id = (tmp_path / "run" / f"{RUN_ID_FILE}.train").read_text().strip()

    client = MlflowClient(server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden"] == "8" and run.data.params["gan.iterations"] == "2"
    assert run.data.tags["maskgan.command"] == "train"
    history = client.get_metric_history(run_id, "mle/valid_perplexity")
    assert [m.step for m in history] == [5, 10]
    # The server holds the numbers the run computed: MaskMLE's checkpoint kept its best validation perplexity.
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "mle.pt")["metrics"]
    best = min(history, key=lambda m: m.value)
    assert (kept["valid_perplexity"], kept["best_step"]) == (pytest.approx(best.value), best.step)
    assert [m.step for m in client.get_metric_history(run_id, "gan/episode_reward_mean")] == [1, 2]
    for key in ("gan/eval/masked_perplexity", "gan/eval/oracle_nll"):  # step 0: the MaskMLE starting point
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1, 2], key
    pretrained_d = client.get_metric_history(run_id, "gan/disc_pretrain_accuracy")
    reported = re.search(r"discriminator pretrained for 3 steps .*: accuracy ([0-9.]+)", caplog.text)
    assert [m.step for m in pretrained_d] == [0] and pretrained_d[0].value == pytest.approx(float(reported[1]), abs=5e-4)
    assert {"config.yaml", "vocab.json", "checkpoints"} <= {a.path for a in client.list_artifacts(run_id)}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # for runs:/ URIs; not left to the tests after this one
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    filled = model.predict(["w5 ___ ___ w9"], params={"seed": 0})
    assert len(filled) == 1 and filled[0].startswith("w5 ") and filled[0].endswith(" w9")
    assert len(filled[0].split()) == 4 and "___" not in filled[0]
    example = mlflow.models.Model.load(f"runs:/{run_id}/model").load_input_example()  # what serving users see
    assert example == ["w2 ___ ___ w29"]  # first and last words of its vocabulary (30)
    (served,) = model.predict(example, params={"seed": 0})
    assert served.startswith("w2 ") and served.endswith(" w29") and "___" not in served

    # --resume for one more iteration continues the same MLflow run: the new step, and none twice.
    run_training(dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, iterations=3)), resume=True)
    assert (tmp_path / "run" / f"{RUN_ID_FILE}.train").read_text().strip() == run_id
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    for key in ("gan/episode_reward_mean", "gan/disc_loss", "gan/eval/oracle_nll"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == ([0, 1, 2, 3] if "eval" in key else [1, 2, 3]), key
