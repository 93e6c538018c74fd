"""Stops asked for by a signal (SIGTERM from a scheduler or `kill`, Ctrl-C) that never cut a tracking write in half.

A single-process run turns SIGTERM into :class:`Terminated` and Ctrl-C into ``KeyboardInterrupt`` so that it ends
KILLED in MLflow with what it logged kept. Raised at an arbitrary bytecode, the exception can land inside an MLflow
write: the sqlite transaction is left open, holding the database's write lock, and the ``set_terminated`` that
should record KILLED then fails with "database is locked" (a stop that leaves a RUNNING record: a false one). So the
handler raises at once, except while a write is in flight (:func:`uninterrupted`): then it notes the stop, and the
stop is raised the moment the outermost write returns. A write takes milliseconds, so the stop is not delayed in
any way a scheduler's grace period would notice.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM reached a single-process run (a scheduler's stop): it ends KILLED in MLflow, with what it logged kept."""


class _Writes:
    """How many writes are in flight (nested calls count once each) and the stop that waits for them, if any."""

    depth = 0
    pending: BaseException | None = None


def _stop_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"signal {signum} (SIGTERM)")


def _handler(signum: int, frame: Any) -> None:
    stop = _stop_for(signum)
    if _Writes.depth:
        _Writes.pending = _Writes.pending or stop  # the first stop asked for is the one reported
        return
    raise stop


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the body whole: a stop signalled meanwhile is raised when the outermost such body returns normally.

    If the body raises, its exception goes on and the noted stop stays pending for the next write's end (the run
    is failing anyway; the caller ends it FAILED, which is true)."""
    _Writes.depth += 1
    try:
        yield
    finally:
        _Writes.depth -= 1
    if _Writes.depth == 0 and _Writes.pending is not None:
        stop, _Writes.pending = _Writes.pending, None
        raise stop


def writes_uninterrupted(cls: type[T]) -> type[T]:
    """Class decorator: every public method defined on `cls` runs :func:`uninterrupted` (a tracker's writes)."""
    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, _wrapped(member))
    return cls


def _wrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run_whole(*args: Any, **kwargs: Any) -> Any:
        with uninterrupted():
            return method(*args, **kwargs)

    return run_whole


@contextmanager
def stops_raised(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """While the body runs, `signals` raise :class:`Terminated` (SIGTERM) or ``KeyboardInterrupt`` (SIGINT), held
    back while a write is in flight. Outside the main thread (where Python delivers no signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _Writes.pending = None  # a stop noted after the body ended has nothing left to stop
