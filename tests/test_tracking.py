"""MLflow tracking across runs in one process (a notebook, a sweep): each run logs to its own store."""

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from maskgan_rl.config import load_config
from maskgan_rl.tracking import RUN_ID_FILE, Tracker


def runs_in(uri: str) -> set[str]:
    client = MlflowClient(uri)
    return {run.info.run_id for run in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def test_two_runs_in_one_process_log_to_their_own_stores(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    # A: a store named in its config; B: the default store, a sqlite file beside its run folder, which
    # must not be A's store that A's run left behind.
    first = load_config("synthetic", [f"run_dir={tmp_path / 'a' / 'run'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'a.db'}"])
    second = load_config("synthetic", [f"run_dir={tmp_path / 'b' / 'run'}"])
    stores = [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"]

    run_ids = []
    for cfg, value in zip((first, second), (1.0, 2.0)):
        with Tracker(cfg, "train") as tracker:
            tracker.log_metrics({"gan/disc_loss": value}, step=1)
        run_ids.append(tracker.run_id)
        assert (Path(cfg.run_dir) / f"{RUN_ID_FILE}.train").read_text() == tracker.run_id
        # Nothing of the run is left in the process's MLflow settings.
        assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ

    assert len(set(run_ids)) == 2
    for store, run_id, value in zip(stores, run_ids, (1.0, 2.0)):
        assert runs_in(store) == {run_id}, store
        assert [m.value for m in MlflowClient(store).get_metric_history(run_id, "gan/disc_loss")] == [value]


def test_a_store_set_by_the_user_is_used_and_left_in_place(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'chosen.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    cfg = load_config("synthetic", [f"run_dir={tmp_path / 'run'}"])
    with Tracker(cfg, "train") as tracker:
        tracker.log_metrics({"gan/disc_loss": 1.0}, step=1)
    assert runs_in(store) == {tracker.run_id}
    assert not (tmp_path / "mlflow.db").exists()  # (the default store, unused)
    assert os.environ["MLFLOW_TRACKING_URI"] == store and mlflow.get_tracking_uri() == store
