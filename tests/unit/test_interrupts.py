"""A stop signalled during a tracking write is raised when the write returns, never inside it; outside a write at
once (harness.interrupts). Signals are sent to this process itself: Python runs the handler in the main thread at
the next bytecode, so each case is deterministic."""

from __future__ import annotations

import os
import signal

import pytest

from harness.interrupts import Terminated, stops_raised, uninterrupted, writes_uninterrupted
from harness.tracking import Tracker


def _signal_self(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)


def test_a_stop_outside_a_write_is_raised_at_once():
    reached = []
    with pytest.raises(Terminated, match="SIGTERM"), stops_raised():
        _signal_self()
        reached.append("after")
    assert reached == []


def test_a_stop_inside_a_write_waits_for_the_outermost_write_to_return():
    steps = []
    with pytest.raises(Terminated), stops_raised():
        with uninterrupted():
            with uninterrupted():
                _signal_self()
                steps.append("inner write finished")
            steps.append("outer write finished")
        steps.append("never: the stop is raised as the outer write returns")
    assert steps == ["inner write finished", "outer write finished"]


def test_ctrl_c_is_held_back_the_same_way_and_stays_a_keyboard_interrupt():
    steps = []
    with pytest.raises(KeyboardInterrupt), stops_raised():
        with uninterrupted():
            _signal_self(signal.SIGINT)
            steps.append("write finished")
    assert steps == ["write finished"]


def test_the_first_stop_is_the_one_reported():
    with pytest.raises(Terminated), stops_raised():
        with uninterrupted():
            _signal_self(signal.SIGTERM)
            _signal_self(signal.SIGINT)


def test_a_failing_write_keeps_its_own_error_and_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(ValueError), stops_raised():
        with uninterrupted():
            _signal_self()
            raise ValueError("the write failed")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with uninterrupted():  # nothing left pending: a later write outside the guard raises nothing
        pass


class _Client:
    """Stands in for MlflowClient: the stop arrives while log_batch is writing."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def log_batch(self, run_id: str, metrics: list) -> None:
        _signal_self()
        self.written.append(len(metrics))

    def set_terminated(self, run_id: str, status: str) -> None:
        self.written.append(status)


def test_a_trackers_write_completes_before_the_stop_and_the_run_can_then_be_ended_killed():
    client = _Client()
    tracker = Tracker(client, "run")
    with pytest.raises(Terminated), stops_raised():
        tracker.log_metrics({"train/loss": 1.0, "train/lr": 0.1}, step=3)
    tracker.finish("KILLED")
    assert client.written == [2, "KILLED"]


def test_every_public_tracker_method_is_wrapped():
    public = [n for n, m in vars(Tracker).items() if callable(m) and not n.startswith("_")]
    assert "log_metrics" in public and "finish" in public
    assert all(getattr(Tracker, n).__wrapped__ for n in public)


def test_the_decorator_leaves_private_methods_alone():
    @writes_uninterrupted
    class Writer:
        def write(self) -> str:
            return "w"

        def _helper(self) -> str:
            return "h"

    assert hasattr(Writer.write, "__wrapped__") and not hasattr(Writer._helper, "__wrapped__")
    assert Writer().write() == "w"
