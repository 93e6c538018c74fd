"""MLflow tracking: a sqlite store under results/ by default, one experiment per suite, one run per
(model, method, seed). Rank 0 logs; other ranks get a tracker that logs nothing.

A run that raises is ended FAILED with everything logged so far kept; its run id is written to the run
folder so a rerun with --resume continues the same MLflow run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.validate import flatten

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACKED_PACKAGES = ("torch", "transformers", "peft", "trl", "lm_eval", "mlflow", "datasets", "accelerate", "polymoo")
MAX_PARAM_LEN = 6000


def default_store() -> Path:
    return Path(os.environ.get("POLYMOO_RESULTS", REPO_ROOT / "results")) / "mlflow"


def tracking_uri(configured: str | None = None) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = default_store()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def experiment_name(suite: Suite) -> str:
    return suite.tracking.experiment or f"polymoo/{suite.suite.name}"


def client(uri: str | None = None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def search_runs(experiment: str, uri: str | None = None, filter_string: str = "") -> Any:
    """The runs of `experiment` as a pandas DataFrame (`mlflow.search_runs`: columns `run_id`, `start_time`,
    `tags.*`, `metrics.*`, `params.*`); ValueError when the store has no such experiment."""
    import mlflow

    c = client(uri)
    if c.get_experiment_by_name(experiment) is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {c.tracking_uri}; run the suite first")
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string, output_format="pandas")


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # else MLflow 3's UI opens the GenAI view


def ensure_experiment(c: Any, name: str, description: str = "") -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if c.tracking_uri.startswith("sqlite:///"):
        artifacts = (Path(c.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    tags = {**EXPERIMENT_KIND, **({"mlflow.note.content": description} if description else {})}
    return c.create_experiment(name, artifact_location=artifacts, tags=tags)


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in TRACKED_PACKAGES:
        try:
            out[pkg] = version(pkg.replace("_", "-"))
        except PackageNotFoundError:
            out[pkg] = "not-installed"
    out["python"] = platform.python_version()
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Logging into one MLflow run (rank 0)."""

    def __init__(self, c: Any, run_id: str):
        self.client, self.run_id = c, run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(rows), 500):
            self.client.log_batch(self.run_id, metrics=rows[i: i + 500])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        rows = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items() if k not in existing]
        for i in range(0, len(rows), 90):
            self.client.log_batch(self.run_id, params=rows[i: i + 90])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            parent = str(Path(artifact_file).parent)
            self.log_artifact(path, None if parent == "." else parent)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class NullTracker(Tracker):
    """Non-zero ranks: log nothing, so nothing is logged twice."""

    def __init__(self) -> None:
        self.client, self.run_id = None, ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_dict(self, data: Any, artifact_file: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def finish(self, status: str) -> None: ...


def open_run(suite: Suite, run_name: str, tags: dict[str, Any], run_dir: Path, resume: bool) -> Tracker:
    """Start a new MLflow run, or reopen the one recorded in `run_dir` when resuming."""
    c = client(suite.tracking.uri)
    exp_id = ensure_experiment(c, experiment_name(suite), suite.suite.description or f"polymoo suite {suite.suite.name}")
    id_file = run_dir / "mlflow_run_id"
    if resume and id_file.exists():
        run_id = id_file.read_text().strip()
        _refuse_changed_config(suite, c.get_run(run_id).data.params, run_id)
        c.update_run(run_id, status="RUNNING")
        tracker = Tracker(c, run_id)
        tracker.set_tags({"polymoo.resumed": "true"})
        return tracker
    run_dir.mkdir(parents=True, exist_ok=True)  # before the run exists: a folder error must not leave it RUNNING
    run = c.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
    try:
        id_file.write_text(run.info.run_id)
    except OSError:
        c.set_terminated(run.info.run_id, status="FAILED")
        raise
    return Tracker(c, run.info.run_id)


# A run's identity (which model, method and seed) is not part of the settings a resume must keep: --model, --method
# and --seed filter these lists, and each run logs its own as run.model / run.method / run.seed.
IDENTITY_KEYS = ("models", "methods", "seeds")


def config_params(suite: Suite) -> dict[str, str]:
    """The suite's settings as MLflow params: the resolved config flattened, without the identity lists."""
    return {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten(suite.resolved()).items()
            if k.split(".")[0] not in IDENTITY_KEYS}


def _refuse_changed_config(suite: Suite, recorded: dict[str, str], run_id: str) -> None:
    """A resumed run must continue the settings it started with: its params would keep the old values otherwise."""
    changed = [f"{k}: {recorded[k]} -> {v}" for k, v in config_params(suite).items() if k in recorded and recorded[k] != v]
    if changed:
        raise ValueError(f"--resume: the suite changed since MLflow run {run_id} started ({'; '.join(changed)}); "
                         "resume with the settings it started with, or drop --resume for a fresh run "
                         "(the earlier run's folder is kept)")


def log_run_config(tracker: Tracker, suite: Suite, extra: dict[str, Any]) -> None:
    """Params: the suite's settings (`config_params`; a run logs its own method as `run.method*` in `extra`, not
    every method of the suite), package versions and `extra`; artifacts: the whole resolved suite and versions."""
    resolved = suite.resolved()
    tracker.log_params({**config_params(suite), **{f"version.{k}": v for k, v in package_versions().items()}, **extra})
    tracker.log_dict(resolved, "config.yaml")
    tracker.log_text(json.dumps(package_versions(), indent=2), "versions.json")
