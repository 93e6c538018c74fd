"""nox sessions. They all share the project's one environment (.venv, made by `make env` or on first use),
instead of building a 2 GB virtualenv each.

    nox -s tests [-- pytest args]      nox -s lint         nox -s quickstart
    nox -s "train(pcgrad)"             nox -s leaderboard  nox -s bench
    nox -s distributed                 nox -s record_golden -- "reason"
    nox -s lock [-- --upgrade | --upgrade-package NAME]   (re-compile requirements/lock-*.txt, deliberately)
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


def _methods() -> list[str]:
    """Method names = module stems of baselines/ and methods/, read without importing torch."""
    return sorted(p.stem for pkg in ("baselines", "methods") for p in (ROOT / pkg).glob("*.py") if not p.stem.startswith("_"))


def _suite_for(method: str) -> str:
    """The first suite that lists `method` (quickstart first)."""
    suites = sorted((ROOT / "suites").glob("*.yaml"), key=lambda p: (p.stem != "quickstart", p.stem))
    for path in suites:
        if re.search(rf"name:\s*{re.escape(method)}\b", path.read_text()):
            return str(path.relative_to(ROOT))
    return "suites/quickstart.yaml"


def env(session: nox.Session) -> str:
    """The shared environment's python, installed from the lock (a no-op of about a second when nothing changed)."""
    session.run(str(ROOT / "scripts" / "install_env.sh"), external=True,
                env={"VENV": str(VENV), "LOCK": os.environ.get("LOCK", str(ROOT / "requirements" / "lock-cpu.txt"))})
    session.env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(PY)


@nox.session
def tests(session: nox.Session) -> None:
    py = env(session)
    session.run(py, "-m", "pytest", "-q", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    py = env(session)
    session.run(py, "-m", "ruff", "check", "harness", "baselines", "methods", "tests", "noxfile.py", external=True)


@nox.session
def quickstart(session: nox.Session) -> None:
    """The main job: every quickstart method on the tiny twins, then the leaderboard from MLflow; then the
    interference lab's short version (joint SFT vs Bucket-Level MOO (MGDA), 5 seeds) and its leaderboard on the
    answer words, where the lab's languages conflict (docs/interference_lab.md): the methods differ there."""
    py = env(session)
    session.run(py, "-m", "harness", "run", "suites/quickstart.yaml", *session.posargs, external=True)
    session.run(py, "-m", "harness", "run", "suites/quickstart_lab.yaml", "--no-leaderboard", external=True)
    session.run(py, "-m", "harness", "leaderboard", "suites/quickstart_lab.yaml", "--metric", "answer_loss",
                external=True)


@nox.session
@nox.parametrize("method", [nox.param(m, id=m) for m in _methods()])
def train(session: nox.Session, method: str) -> None:
    """One method of the suite that lists it, e.g. nox -s "train(pcgrad)"."""
    py = env(session)
    session.run(py, "-m", "harness", "run", _suite_for(method), "--method", method, *session.posargs, external=True)


@nox.session
def leaderboard(session: nox.Session) -> None:
    py = env(session)
    suite = session.posargs[0] if session.posargs else "suites/quickstart.yaml"
    session.run(py, "-m", "harness", "leaderboard", suite, *session.posargs[1:], external=True)


@nox.session
def distributed(session: nox.Session) -> None:
    """The distributed suite on CPU (gloo) with 2 and 4 processes."""
    py = env(session)
    for n in ("2", "4"):
        session.run(py, "-m", "harness", "run", "suites/distributed.yaml", "--nproc", n, "--no-leaderboard",
                    *session.posargs, external=True)
    session.run(py, "-m", "harness", "leaderboard", "suites/distributed.yaml", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark); records land under results/bench/.

    Each bench file rewrites its own records: name one to refresh only those, e.g.
    nox -s bench -- tests/bench/test_moo_bench.py"""
    py = env(session)
    (ROOT / "results" / "bench").mkdir(parents=True, exist_ok=True)
    targets = session.posargs or ["tests/bench"]
    stem = "_".join(Path(t).stem for t in targets)
    session.run(py, "-m", "pytest", "-q", *targets, "-m", "bench",
                "--benchmark-json", str(ROOT / "results" / "bench" / f"pytest_benchmark_{stem}.json"), external=True)


@nox.session
def lock(session: nox.Session) -> None:
    """Re-compile requirements/lock-cpu.txt and lock-cuda.txt (uv pip compile); commit them with the reason."""
    env(session)
    session.run(str(ROOT / "scripts" / "lock.sh"), *session.posargs, external=True, env={"UV": str(VENV / "bin" / "uv")})


@nox.session
def record_golden(session: nox.Session) -> None:
    """Re-record the golden loss trajectories (deliberately: give the reason, it goes in the commit message)."""
    if not session.posargs:
        session.error('give the reason: nox -s record_golden -- "why the numbers changed"')
    py = env(session)
    session.run(py, "-m", "tests.golden.record", *session.posargs, external=True)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    session.log(f"recorded against {sha}; commit results/golden/ with the reason: {' '.join(session.posargs)}")
