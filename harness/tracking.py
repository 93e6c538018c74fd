"""MLflow tracking: a sqlite store under results/ by default, one experiment per suite, one run per
(model, method, seed). Rank 0 logs; other ranks get a tracker that logs nothing.

A run that raises is ended FAILED with everything logged so far kept; its run id is written to the run
folder so a rerun with --resume continues the same MLflow run. What a resume does to the record (docs/tracking.md):
- the points the interrupted attempt logged after the step the new attempt resumes from are removed from the metric
  histories (kept as the artifact ``resume/superseded-<ms>.json``), so every step has one value: the resumed one;
- a changed resolved config is refused, or with ``--resume-changed`` the params take the new values and the tag
  ``polymoo.resume.config_changes`` plus the artifact ``resume/config-changes-<ms>.json`` keep old -> new.
The store is portable: experiments polymoo creates carry their artifact folder relative to the database
(``polymoo.artifact_root``), and opening a copied or moved store points them (and their runs) at the new place.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.interrupts import writes_uninterrupted
from harness.validate import flatten

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACKED_PACKAGES = ("torch", "transformers", "peft", "trl", "lm_eval", "mlflow", "datasets", "accelerate", "polymoo")
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 5000  # MLflow allows 8000


def results_root() -> Path:
    return Path(os.environ.get("POLYMOO_RESULTS", REPO_ROOT / "results"))


def default_store() -> Path:
    return results_root() / "mlflow"


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


_OPENED: set[str] = set()  # stores this process has already re-pointed (relocate_artifacts)


def client(uri: str | None = None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(tracking_uri=uri)
    if uri not in _OPENED:
        _OPENED.add(uri)
        relocate_artifacts(c)
    return c


def search_runs(experiment: str, uri: str | None = None, filter_string: str = "") -> Any:
    """The runs of `experiment` as a pandas DataFrame (`mlflow.search_runs`: columns `run_id`, `start_time`,
    `tags.*`, `metrics.*`, `params.*`); ValueError when the store has no such experiment."""
    import mlflow

    c = client(uri)
    if c.get_experiment_by_name(experiment) is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {c.tracking_uri}; run the suite first")
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string, output_format="pandas")


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # else MLflow 3's UI opens the GenAI view
ARTIFACT_ROOT_TAG = "polymoo.artifact_root"  # experiment tag: its artifact folder, relative to the sqlite file's folder


def _artifact_root(uri: str) -> Path | None:
    """`<folder of the sqlite file>/artifacts` for a sqlite store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts" if uri.startswith("sqlite:///") else None


def ensure_experiment(c: Any, name: str, description: str = "") -> str:
    """The experiment's id, created if needed: tagged as model development (MLflow's UI), with a description and
    (sqlite stores) its artifact folder beside the database. An existing experiment gets the tags it lacks; a
    description or kind someone set is kept."""
    root = _artifact_root(c.tracking_uri)
    tags = {**EXPERIMENT_KIND, **({"mlflow.note.content": description} if description else {})}
    exp = c.get_experiment_by_name(name)
    if exp is None:
        tags |= {ARTIFACT_ROOT_TAG: root.name} if root else {}
        return c.create_experiment(name, artifact_location=root.as_uri() if root else None, tags=tags)
    if root and exp.artifact_location == root.as_uri():  # made before the tag existed, still in place
        tags[ARTIFACT_ROOT_TAG] = root.name
    for key, value in tags.items():
        if key not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _sql_store(c: Any) -> Any:
    """The SQLAlchemy store behind client `c` (sqlite, postgres, ...), or None (a tracking server over HTTP)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = c._tracking_client.store  # MLflow's client API cannot move artifact roots or delete metric points
    return store if isinstance(store, SqlAlchemyStore) else None


def relocate_artifacts(c: Any) -> list[str]:
    """Point the experiments polymoo made in a copied or moved sqlite store (and their runs) at the artifact folder
    beside the database now. MLflow stores absolute locations (it resolves a relative one against the working
    directory), so this happens when polymoo opens the store. Returns the names of the experiments it moved."""
    root, store = _artifact_root(c.tracking_uri), _sql_store(c)
    if root is None or store is None:
        return []
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlExperimentTag, SqlRun

    moved = []
    with store.ManagedSessionMaker(read_only=False) as s:
        rows = (s.query(SqlExperiment, SqlExperimentTag.value)
                .join(SqlExperimentTag, SqlExperimentTag.experiment_id == SqlExperiment.experiment_id)
                .filter(SqlExperimentTag.key == ARTIFACT_ROOT_TAG).all())
        for exp, relative in rows:
            old, new = exp.artifact_location, (root.parent / relative).as_uri()
            if old == new:
                continue
            exp.artifact_location = new
            for run in s.query(SqlRun).filter(SqlRun.experiment_id == exp.experiment_id).all():
                if run.artifact_uri and run.artifact_uri.startswith(old + "/"):
                    run.artifact_uri = new + run.artifact_uri[len(old):]
            moved.append(exp.name)
    return moved


def _delete_points(c: Any, run_id: str, *, after: int | None = None, at: int | None = None,
                   keys: set[str] | None = None) -> list[dict[str, Any]] | None:
    """Delete a run's metric points at steps > `after` (or == `at`, only `keys`) and recompute each touched key's
    latest value; returns the deleted points, or None when the store cannot (not a SQL store)."""
    store = _sql_store(c)
    if store is None:
        return None
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker(read_only=False) as s:
        query = s.query(SqlMetric).filter(SqlMetric.run_uuid == run_id)
        query = query.filter(SqlMetric.step > after) if after is not None else query.filter(SqlMetric.step == at)
        rows = [r for r in query.all() if keys is None or r.key in keys]
        gone = [{"key": r.key, "step": r.step, "value": r.value, "timestamp": r.timestamp} for r in rows]
        for r in rows:
            s.delete(r)
        s.flush()
        for key in sorted({p["key"] for p in gone}):
            s.query(SqlLatestMetric).filter_by(run_uuid=run_id, key=key).delete()
            best = (s.query(SqlMetric).filter_by(run_uuid=run_id, key=key)
                    .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc()).first())
            if best is not None:
                s.add(SqlLatestMetric(run_uuid=run_id, key=key, value=best.value, timestamp=best.timestamp,
                                      step=best.step, is_nan=best.is_nan))
    return gone


def _update_params(c: Any, run_id: str, values: dict[str, str]) -> bool:
    """Overwrite logged params (MLflow's API refuses a new value for a logged param); False if the store cannot."""
    store = _sql_store(c)
    if store is None:
        return False
    from mlflow.store.tracking.dbmodels.models import SqlParam

    with store.ManagedSessionMaker(read_only=False) as s:
        for key, value in values.items():
            s.query(SqlParam).filter_by(run_uuid=run_id, key=key).update({"value": value[:MAX_PARAM_LEN]})
    return True


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


@writes_uninterrupted  # a stop (SIGTERM, Ctrl-C) never cuts a write in half: harness.interrupts
class Tracker:
    """Logging into one MLflow run (rank 0)."""

    def __init__(self, c: Any, run_id: str, resuming: bool = False):
        self.client, self.run_id = c, run_id
        self._resume_pending = resuming  # a resumed run whose training path has not said where it continues

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        rows_in = {k: v for k, v in metrics.items() if v is not None}
        if self._resume_pending and rows_in:  # the first step this attempt logs supersedes the interrupted one's
            self._supersede_after((step or 0) - 1)
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step or 0) for k, v in rows_in.items()]
        for i in range(0, len(rows), 500):
            self.client.log_batch(self.run_id, metrics=rows[i: i + 500])

    def log_final_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Run-level results at `step`: they replace points of the same keys at that step (a resumed run
        evaluates again; the per-step logger already logged some of these keys at the last step)."""
        _delete_points(self.client, self.run_id, at=step, keys=set(metrics))
        self.log_metrics(metrics, step=step)

    def restart_from_step(self, step: int) -> None:
        """A resumed run continues from `step` (its checkpoint; 0: from scratch): the points the interrupted attempt
        logged after `step` are removed from the histories, so each step keeps the value of the attempt that the
        final weights come from; the removed points are kept as an artifact."""
        self.set_tags({"polymoo.resumed_from_step": step})
        self._supersede_after(step)

    def _supersede_after(self, step: int) -> None:
        self._resume_pending = False
        gone = _delete_points(self.client, self.run_id, after=step)
        if gone is None:
            self.set_tags({"polymoo.resume.superseded": f"kept: this store cannot delete metric points; steps > {step} "
                                                        "may have two values, the later one is the resumed run's"})
        elif gone:
            steps = sorted({p["step"] for p in gone})
            self.set_tags({"polymoo.resume.superseded_steps": f"{steps[0]}-{steps[-1]} ({len(gone)} points)"})
            self.log_dict({"resumed_after_step": step, "points": gone},
                          f"resume/superseded-{int(time.time() * 1000)}.json")

    def record_config_change(self, changes: dict[str, tuple[str, str]], config_hash: str) -> None:
        """`--resume-changed`: the params take the values the run continues with; the tag and an artifact keep
        old -> new (the step it took effect is the tag polymoo.resumed_from_step)."""
        old_hash = self.client.get_run(self.run_id).data.tags.get("polymoo.config_hash", "")
        text = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changes.items())
        self.set_tags({"polymoo.resume.config_changes": text[:MAX_TAG_LEN], "polymoo.config_hash": config_hash,
                       "polymoo.resume.previous_config_hash": old_hash})
        self.log_dict({"changes": {k: {"old": old, "new": new} for k, (old, new) in changes.items()},
                       "previous_config_hash": old_hash, "config_hash": config_hash},
                      f"resume/config-changes-{int(time.time() * 1000)}.json")
        if not _update_params(self.client, self.run_id, {k: new for k, (_, new) in changes.items()}):
            self.set_tags({"polymoo.resume.params": "not updated (this store cannot): see config_changes"})

    def log_dataset(self, name: str, digest: str, source: dict[str, Any], profile: dict[str, Any],
                    context: str) -> None:
        """An MLflow dataset input (the run page's Datasets): `digest` is the harness's data fingerprint."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="polymoo", source=json.dumps(source, sort_keys=True),
                          profile=json.dumps(profile, sort_keys=True))
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, inputs)
                return
            except Exception as err:
                # Two runs of one experiment starting together both find the dataset missing and both insert it;
                # the loser's retry finds the winner's row and only links it to its run.
                if "UNIQUE constraint failed" not in str(err) or attempt == 2:
                    raise

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
        self.client, self.run_id, self._resume_pending = None, "", False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_final_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def restart_from_step(self, step: int) -> None: ...
    def record_config_change(self, changes: dict[str, tuple[str, str]], config_hash: str) -> None: ...
    def log_dataset(self, name: str, digest: str, source: dict[str, Any], profile: dict[str, Any],
                    context: str) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_dict(self, data: Any, artifact_file: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def finish(self, status: str) -> None: ...


def open_run(suite: Suite, run_name: str, tags: dict[str, Any], run_dir: Path, resume: bool,
             accept_changes: bool = False) -> Tracker:
    """Start a new MLflow run, or reopen the one recorded in `run_dir` when resuming (a changed config is refused
    unless `accept_changes`, `--resume-changed`, which records the change)."""
    c = client(suite.tracking.uri)
    exp_id = ensure_experiment(c, experiment_name(suite), suite.suite.description or f"polymoo suite {suite.suite.name}")
    id_file = run_dir / "mlflow_run_id"
    if resume and id_file.exists():
        run_id = id_file.read_text().strip()
        changes = config_changes(suite, c.get_run(run_id).data.params)
        if changes and not accept_changes:
            _refuse_changed_config(changes, run_id)
        c.update_run(run_id, status="RUNNING")
        tracker = Tracker(c, run_id, resuming=True)
        tracker.set_tags({"polymoo.resumed": "true"})
        if changes:
            tracker.record_config_change(changes, str(tags.get("polymoo.config_hash", suite.config_hash())))
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


# Settings that decide only where a run is tracked and written and which files it leaves, not what it trains or
# measures (prefixes of flattened keys).
NOT_RESULT_SETTINGS = ("suite.description", "tracking.", "output_dir", "train.save_model", "train.save_every")


def resolved_params(resolved: dict[str, Any]) -> dict[str, str]:
    """A resolved suite's settings as MLflow params: flattened, without the identity lists."""
    return {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten(resolved).items() if k.split(".")[0] not in IDENTITY_KEYS}


def config_params(suite: Suite) -> dict[str, str]:
    """The suite's settings as MLflow params: the resolved config flattened, without the identity lists."""
    return resolved_params(suite.resolved())


def config_changes(suite: Suite, recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{key: (recorded, now)} for every setting whose value differs from the one the run logged."""
    return {k: (recorded[k], v) for k, v in config_params(suite).items() if k in recorded and recorded[k] != v}


def _refuse_changed_config(changes: dict[str, tuple[str, str]], run_id: str) -> None:
    """A resumed run must continue the settings it started with: its params would keep the old values otherwise."""
    listed = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changes.items())
    raise ValueError(f"--resume: the suite changed since MLflow run {run_id} started ({listed}); resume with the "
                     "settings it started with, accept the change with --resume-changed (the run records it), or "
                     "drop --resume for a fresh run (the earlier run's folder is kept)")


def log_run_config(tracker: Tracker, suite: Suite, extra: dict[str, Any]) -> None:
    """Params: the suite's settings (`config_params`; a run logs its own method as `run.method*` in `extra`, not
    every method of the suite), package versions and `extra`; artifacts: the whole resolved suite and versions."""
    resolved = suite.resolved()
    tracker.log_params({**config_params(suite), **{f"version.{k}": v for k, v in package_versions().items()}, **extra})
    tracker.log_dict(resolved, "config.yaml")
    tracker.log_text(json.dumps(package_versions(), indent=2), "versions.json")
