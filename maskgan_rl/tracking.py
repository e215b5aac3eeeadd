"""MLflow tracking for every command that trains or evaluates.

One MLflow run per training (`run_dir`), holding the whole resolved config as params, every
iteration's metrics and the artifacts. The run id is written into `run_dir`, so `--resume` continues
the same run (as does running an interrupted command again with the same config). The default store
is a local sqlite database beside the run folders (works with no server); `MLFLOW_TRACKING_URI` or
`tracking.tracking_uri` points it at a tracking server. When run_dir is a storage URI (s3://...),
that default database is beside the driver's local cache of the run (maskgan_rl.storage.local_dir),
which is said when the run starts: a tracking server keeps the runs where other machines see them.

MLflow's fluent API keeps the store in a process-wide setting, and `mlflow.set_tracking_uri` also
writes it into `MLFLOW_TRACKING_URI`: a `Tracker` sets both for its run only and puts back what was
there when it ends, so the next run in the same process (a notebook, a sweep) resolves its own store.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from maskgan_rl import storage
from maskgan_rl.config import Config, flatten
from maskgan_rl.vocab import Vocab

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")  # what mlflow.set_tracking_uri / set_experiment write
Reopen = Literal["always", "same_config", "never"]


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{_beside_run_dir(cfg) / 'mlflow.db'}"


def _beside_run_dir(cfg: Config) -> Path:
    """The local folder that holds run_dir (or, for a URI run_dir, the driver's cache of it)."""
    return storage.local_dir(cfg.run_dir).resolve().parent


class Tracker:
    """A thin wrapper so training code logs the same way whether tracking is on or off.

    With `tracking.enabled=false` every call does nothing, which keeps quick experiments free of
    a database; everything else goes to MLflow.
    """

    def __init__(self, cfg: Config, command: str, tags: Optional[dict[str, str]] = None, reopen: Reopen = "same_config"):
        """Whether the MLflow run this command last started in run_dir is continued: `"always"` (--resume),
        `"same_config"` (a command that was interrupted and is run again; a changed config starts a new
        run, so that params always describe the run's metrics) or `"never"` (evaluations)."""
        self.cfg, self.command, self.reopen = cfg, command, reopen
        self.enabled = cfg.tracking.enabled
        self.run_id: Optional[str] = None
        self.uri: Optional[str] = None  # the store, resolved when the run starts
        self._environment: dict[str, Optional[str]] = {}  # MLflow's variables before the run, put back after it
        self._resumed = False
        self._steps: dict[str, set[int]] = {}  # metric -> steps this run holds (see log_metrics)
        self._tags = {"maskgan.command": command, "maskgan.algo": cfg.gan.algo, "maskgan.dataset": cfg.data.dataset}
        self._tags.update(tags or {})

    def __enter__(self) -> "Tracker":
        if not self.enabled:
            return self
        self.uri = tracking_uri(self.cfg)
        self._environment = {name: os.environ.get(name) for name in _MLFLOW_ENV}
        try:
            self._start_run()
        except BaseException:
            self._restore()
            raise
        return self

    def _start_run(self) -> None:
        # MLflow is imported where it is used, here and below: it is slow to import and
        # tracking.enabled=false runs never need it.
        import mlflow

        if storage.is_uri(self.cfg.run_dir) and self.uri.startswith("sqlite:"):
            log.warning(f"[tracking] run_dir is a storage URI: MLflow records this run on this machine only, in {self.uri} "
                        "(set tracking.tracking_uri=http://HOST:5000 to keep it on a server)")
        mlflow.set_tracking_uri(self.uri)
        experiment = mlflow.get_experiment_by_name(self.cfg.tracking.experiment)
        if experiment is None:
            artifacts = None
            if self.uri.startswith("sqlite:"):
                artifacts = (_beside_run_dir(self.cfg) / "mlartifacts").as_uri()
            mlflow.create_experiment(self.cfg.tracking.experiment, artifact_location=artifacts)
        mlflow.set_experiment(self.cfg.tracking.experiment)
        run_id_file = storage.join(self.cfg.run_dir, f"{RUN_ID_FILE}.{self.command}")
        previous = storage.read_bytes(run_id_file).decode().strip() if storage.exists(run_id_file) else None
        nested = self.cfg.tracking.parent_run_id is not None  # (the parent may be this process's active run)
        if previous and self._may_reopen(previous):
            run = mlflow.start_run(run_id=previous, nested=nested)
            self._resumed = True
        else:
            run = mlflow.start_run(
                run_name=self.cfg.tracking.run_name or f"{self.command}-{storage.name(storage.location(self.cfg.run_dir))}",
                parent_run_id=self.cfg.tracking.parent_run_id,
                nested=nested,
            )
            mlflow.log_params(_params(self.cfg))
            storage.write_bytes(run_id_file, run.info.run_id.encode())
        mlflow.set_tags(self._tags)
        self.run_id = run.info.run_id

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.enabled:
            import mlflow

            try:
                mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")
            finally:
                self._restore()

    def _restore(self) -> None:
        """MLflow's store setting and environment variables as they were before this run."""
        import mlflow

        mlflow.set_tracking_uri(None)  # (also clears MLFLOW_TRACKING_URI, put back below if it was set)
        for name, value in self._environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Log numbers at `step`, except those the run already holds at that step: a resumed run that
        repeats work done before its driver died (an iteration past its last checkpoint, a stage of
        pretraining) never writes a metric twice."""
        if self.enabled:
            import mlflow

            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if mlflow.active_run().info.run_id == self.run_id:  # (runs opened by `nested` are new)
                numeric = {k: v for k, v in numeric.items() if step not in self._logged_steps(k)}
                for key in numeric:
                    self._steps[key].add(step)
            if numeric:
                mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        if self.enabled:
            import mlflow

            with storage.local_copy(storage.location(path)) as local:
                mlflow.log_artifact(str(local), artifact_path=artifact_path)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_params({key: ("" if value is None else str(value)) for key, value in params.items()})

    def log_model(self, checkpoint: str | os.PathLike, vocab: Vocab) -> None:
        """The generator of `checkpoint` (trained on `vocab`) as an MLflow pyfunc model at `runs:/<run_id>/model`
        (tracking.log_model)."""
        if self.enabled and self.cfg.tracking.log_model:
            from maskgan_rl.mlflow_model import log_infill_model  # imports MLflow (see __enter__)

            with storage.local_copy(storage.location(checkpoint)) as local:
                log_infill_model(local, vocab)

    @contextmanager
    def nested(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> Iterator[None]:
        """A child run of this one: what is logged inside the block goes to it (one evaluated checkpoint...)."""
        if not self.enabled:
            yield
            return
        import mlflow

        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tags({**self._tags, **tags})
            self.log_params(params)
            yield

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags(tags)

    def _logged_steps(self, key: str) -> set[int]:
        """The steps of `key` in this run, read once per key, and only for a resumed run."""
        if key not in self._steps:
            from mlflow.tracking import MlflowClient

            history = MlflowClient(self.uri).get_metric_history(self.run_id, key) if self._resumed else []
            self._steps[key] = {m.step for m in history}
        return self._steps[key]

    def _may_reopen(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if self.reopen == "never":
            return False
        try:
            run = MlflowClient(self.uri).get_run(run_id)
        except MlflowException:  # deleted, or another tracking store
            return False
        return self.reopen == "always" or run.data.params == _params(self.cfg)


def _params(cfg: Config) -> dict[str, Any]:
    # MLflow caps a param value at 6000 characters; configs are far below, but dict values are stringified.
    return {key: ("" if value is None else str(value)) for key, value in flatten(cfg).items()}
