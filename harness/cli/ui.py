"""`polymoo ui`: the MLflow UI on the store, after pointing a copied or moved store at its new place.

    polymoo ui [--uri URI] [--host 127.0.0.1] [--port 5000] [--dry-run]

MLflow records absolute artifact locations; opening the store through polymoo re-points the experiments it made (and
their runs) at the `artifacts/` folder beside the database (`harness.tracking.relocate_artifacts`), so the server
started here shows the artifacts of a `results/` folder that was copied or moved. A plain `mlflow server` sees the
same once any polymoo command has opened the moved store.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="serve the MLflow UI on the store (a copied or moved results/ folder too)")
    p.add_argument("--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI, else results/mlflow/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--dry-run", action="store_true", help="re-point the store and print the server command only")


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.tracking import client

    c = client(args.uri)  # re-points a moved sqlite store
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", c.tracking_uri, "--host", args.host,
           "--port", str(args.port)]
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    print(f"polymoo: MLflow UI on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    return subprocess.call(cmd)
