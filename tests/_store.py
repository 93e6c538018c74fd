"""Fast throw-away MLflow stores for tests: creating a sqlite store runs MLflow's migrations (15-20 s on a
loaded 2-core machine), so an empty store is built once per machine (cached next to the tiny twins) and
copied for every test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.tracking import REPO_ROOT


def _template() -> Path:
    import mlflow

    cache = Path(os.environ.get("POLYMOO_CACHE", REPO_ROOT / "results" / "cache"))
    path = cache / f"mlflow-empty-{mlflow.__version__}.db"
    if not path.exists():
        from harness.tracking import client

        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        client(f"sqlite:///{tmp}").search_experiments()  # creates the tables
        tmp.replace(path)
    return path


def copy_store(folder: Path) -> str:
    """A fresh, empty sqlite store under `folder`; returns its tracking URI."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(_template(), db)
    return f"sqlite:///{db}"
