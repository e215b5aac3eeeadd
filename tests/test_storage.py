"""run_dir on a local disk or an object store (maskgan_rl/storage.py), against a real S3-compatible
server: moto's, started here on loopback and reached over HTTP as a remote one would be.

pyarrow is pointed at it through the URI's query (`?endpoint_override=127.0.0.1:PORT&scheme=http`,
read by pyarrow >= 14); credentials come from the usual AWS variables, which moto accepts whatever
their value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskgan_rl import storage
from maskgan_rl.checkpoint import latest_good_checkpoint, load_checkpoint, save_checkpoint
from maskgan_rl.cli import main
from maskgan_rl.errors import CheckpointError
from processes import free_port

BUCKET = "maskgan-test"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata service
}
RUN_TIMEOUT_S = 300


def test_locations_join_and_name_local_paths_and_uris(tmp_path):
    assert storage.join(tmp_path, "checkpoints", "a.pt") == tmp_path / "checkpoints" / "a.pt"
    uri = "s3://bucket/runs/x?endpoint_override=127.0.0.1:9000&scheme=http"
    joined = storage.join(uri, "checkpoints", "gan-000001.pt")
    assert joined == "s3://bucket/runs/x/checkpoints/gan-000001.pt?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.name(joined) == "gan-000001.pt" and storage.name(tmp_path / "a.pt") == "a.pt"
    assert storage.location("file:///tmp/x") == Path("/tmp/x") and storage.location("runs/x") == Path("runs/x")
    assert storage.is_uri(uri) and not storage.is_uri("MaskGAN:s3://b/x.pt") and not storage.is_uri("run_dir=s3://b")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    assert storage.local_dir(uri) == cache / "maskgan-rl" / "s3" / "bucket" / "runs" / "x"
    assert storage.local_dir(tmp_path) == tmp_path


def test_local_listing_writing_and_deleting(tmp_path):
    for name in ("gan-2.pt", "gan-1.pt", "mle.pt"):
        storage.write_bytes(tmp_path / "c" / name, name.encode())
    assert [e.name for e in storage.listdir(tmp_path / "c", "gan-*.pt")] == ["gan-1.pt", "gan-2.pt"]
    assert storage.read_bytes(tmp_path / "c" / "mle.pt") == b"mle.pt"
    storage.delete(tmp_path / "c" / "mle.pt")
    assert not storage.exists(tmp_path / "c" / "mle.pt") and storage.listdir(tmp_path / "missing") == []
    assert sorted(os.listdir(tmp_path / "c")) == ["gan-1.pt", "gan-2.pt"]  # no temporary left behind


# ---------------------------------------------------------------- a real S3-compatible server


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port, with one empty bucket; yields its host:port."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **_boto_credentials())
        client.create_bucket(Bucket=BUCKET)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def s3_uri(server: str, path: str, bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{path}?endpoint_override={server}&scheme=http"


def bucket_keys(server: str, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{server}", **_boto_credentials())
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    # (Keys ending in "/" are folder markers: pyarrow leaves one where it deletes a folder's last object.)
    return sorted(item["Key"][len(prefix):] for item in listed if not item["Key"].endswith("/"))


def test_checkpoints_round_trip_through_s3(s3_server, aws_env):
    folder = s3_uri(s3_server, "unit/checkpoints")
    payload = {"vocab": ["<eos>", "a"], "models": {"g": {"w": torch.arange(3.0)}}}
    first = save_checkpoint(storage.join(folder, "gan-000001.pt"), {**payload, "iteration": 1})
    second = save_checkpoint(storage.join(folder, "gan-000002.pt"), {**payload, "iteration": 2})
    assert torch.equal(load_checkpoint(second)["models"]["g"]["w"], torch.arange(3.0))
    assert [e.name for e in storage.listdir(folder, "gan-*.pt")] == ["gan-000001.pt", "gan-000002.pt"]
    # A corrupt newest checkpoint is skipped, as on a local disk.
    storage.write_bytes(second, b"garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        found, loaded = latest_good_checkpoint(folder, "gan-*.pt")
    assert found == first and loaded["iteration"] == 1
    storage.delete(first)
    assert not storage.exists(first) and bucket_keys(s3_server, "unit/checkpoints/") == ["gan-000002.pt"]
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(first)


def test_failed_save_to_s3_uploads_nothing(s3_server, aws_env):
    target = s3_uri(s3_server, "unit-failed/c.pt")

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_checkpoint(target, {"bad": Unsaveable()})
    assert bucket_keys(s3_server, "unit-failed/") == []


def run_dir_error(capsys, run_dir: str) -> str:
    assert main(["pretrain", f"run_dir={run_dir}", "tracking.enabled=false"]) == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1, message
    return message[0]


def test_bad_storage_uris_are_one_line_config_errors(s3_server, aws_env, capsys):
    unknown = run_dir_error(capsys, "nosuch://bucket/run")
    assert unknown.startswith("maskgan pretrain: error: run_dir=nosuch://bucket/run: pyarrow cannot open it")
    assert unknown.endswith("use a local path or a URI such as s3://bucket/folder")
    missing = run_dir_error(capsys, s3_uri(s3_server, "run", bucket="no-such-bucket"))
    assert missing.startswith("maskgan pretrain: error: run_dir=s3://no-such-bucket/run")
    assert "cannot write there" in missing and "check that the bucket exists" in missing and "AWS_ACCESS_KEY_ID" in missing


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 300)  # two trainings, then infill and evaluate
def test_training_writes_to_s3_and_resumes_from_it(s3_server, tmp_path, aws_env, monkeypatch, capsys):
    """`maskgan train` with run_dir on S3 for 2 iterations, then `--resume` to 3: the checkpoints,
    D's state, config and plot are in the bucket, and the resumed run continues the first. Then
    `infill` and `evaluate` read its checkpoints from the bucket and evaluate writes its outputs there."""
    run_dir = s3_uri(s3_server, "e2e/run")
    env = {**os.environ, **AWS_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env = {k: v for k, v in env.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env["RAY_raylet_start_wait_time_s"] = "120"  # Ray's own wait for its node, on a busy 2-core machine
    common = [
        f"run_dir={run_dir}", "data.seq_len=8", "data.oracle_vocab=30", "data.oracle_hidden=8",
        "data.synthetic_train=200", "data.synthetic_valid=40", "data.synthetic_test=40",
        "model.embed=8", "model.hidden=8", "pretrain.lm_steps=5", "pretrain.mle_steps=5",
        "pretrain.batch_size=16", "pretrain.eval_every=5", "pretrain.eval_batches=1",
        "gan.episodes_per_iteration=16", "gan.disc_batch_size=16", "gan.checkpoint_every=1", "gan.eval_every=1000",
        "resources.num_env_runners=1", "resources.num_envs_per_env_runner=4", "resources.num_cpus=2",
        "resources.disc_num_cpus=0.5", "tracking.log_model=false",
    ]

    def train(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "maskgan_rl.cli", "train", *args, *common], env=env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout + done.stderr

    first = train("gan.iterations=2")
    assert "MLflow records this run on this machine only" in first  # the default store, said
    assert bucket_keys(s3_server, "e2e/run/checkpoints/") == ["gan-000001.pt", "gan-000002.pt", "lm.pt", "maskgan.pt", "mle.pt"]
    resumed = train("--resume", "gan.iterations=3")
    assert f"[gan] resumed from {storage.join(run_dir, 'checkpoints', 'gan-000002.pt')} at iteration 2" in resumed
    keys = bucket_keys(s3_server, "e2e/run/")
    for key in ("checkpoints/gan-000002.pt", "checkpoints/gan-000003.pt", "checkpoints/maskgan.pt",
                "discriminator_actor.pt", "config.yaml", "training_curves.png", "mlflow_run_id.train"):
        assert key in keys, (key, keys)
    assert "checkpoints/gan-000001.pt" not in keys  # the newest two are kept
    final = load_checkpoint(storage.join(run_dir, "checkpoints", "maskgan.pt"))
    assert final["iteration"] == 3 and [r["iteration"] for r in final["history"]] == [0, 1, 2, 3]
    newest = load_checkpoint(storage.join(run_dir, "checkpoints", "gan-000003.pt"))
    assert newest["trainer"]["iteration"] == 3

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    final_uri, mle_uri = (str(storage.join(run_dir, "checkpoints", name)) for name in ("maskgan.pt", "mle.pt"))
    assert main(["infill", final_uri, "w2 ___ w3", "--seed", "1"]) == 0
    filled = capsys.readouterr().out.split()
    assert filled[0] == "w2" and filled[2] == "w3" and filled[1] != "___"
    assert main(["evaluate", final_uri, mle_uri, "--samples", "8", "--temperatures", "1.0", "--reverse-lm-steps", "0",
                 "--bleu-references", "4", "--table-rows", "2", "tracking.enabled=false"]) == 0
    for key in ("eval/metrics.md", "eval/metrics.csv", "eval/results.json", "eval/samples.md"):
        assert key in bucket_keys(s3_server, "e2e/run/"), key
    # Nothing of the run was written to the working directory as a path named like the URI.
    assert not (tmp_path / "s3:").exists()
