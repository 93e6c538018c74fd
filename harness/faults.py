"""Fault injection for the harness's own tests. TEST-ONLY: never set these variables for a real run.

They are environment variables rather than suite keys, so the user schema (and the logged config) holds nothing but
what a researcher sets. Both training loops call these hooks before every optimizer step:

- ``POLYMOO_TEST_FAIL_AT_STEP=N``: raise a RuntimeError before optimizer step N (0-based; N steps completed), on
  every rank: a crash the run must survive (FAILED in MLflow, checkpoints kept, ``--resume`` continues);
- ``POLYMOO_TEST_KILL_RANK_AT_STEP=RANK:STEP``: that rank SIGKILLs itself before step STEP: a lost process that
  torchrun must tear down, then ``--resume`` must recover from;
- ``POLYMOO_TEST_SLOW_EVAL_S=S``: rank 0 sleeps S seconds before evaluating a run (an 8B model's lm-eval tasks): the
  other ranks must wait for it without the training group's timeout killing the job;
- ``POLYMOO_TEST_SLOW_START_S=S``: rank 0 sleeps S seconds after logging a run's config and data (a slow or remote
  tracking store): the other ranks must wait for it before the first training collective, on the same terms.
"""

from __future__ import annotations

import os
import signal

FAIL_ENV = "POLYMOO_TEST_FAIL_AT_STEP"
KILL_ENV = "POLYMOO_TEST_KILL_RANK_AT_STEP"
SLOW_EVAL_ENV = "POLYMOO_TEST_SLOW_EVAL_S"
SLOW_START_ENV = "POLYMOO_TEST_SLOW_START_S"


def maybe_fail(step: int) -> None:
    target = os.environ.get(FAIL_ENV, "")
    if target and int(target) == step:
        raise RuntimeError(f"{FAIL_ENV}={target}: simulated failure after step {step} (test-only fault injection)")


def maybe_kill(rank: int, step: int) -> None:
    if os.environ.get(KILL_ENV, "") == f"{rank}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _sleep_from(variable: str) -> None:
    seconds = os.environ.get(variable, "")
    if seconds:
        import time

        time.sleep(float(seconds))


def maybe_slow_evaluation() -> None:
    _sleep_from(SLOW_EVAL_ENV)


def maybe_slow_start() -> None:
    _sleep_from(SLOW_START_ENV)
