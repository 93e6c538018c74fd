"""The command line's error contract: a user error prints its message and exits 2; an unexpected exception prints
one line naming it and a log file that holds the full traceback, and exits 1; `--debug` (before or after the
sub-command) lets the exception through with its traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import harness.cli as cli
from harness.cli import main


def _explode(args) -> int:
    raise RuntimeError("disk on fire\nsecond line of the message")


@pytest.fixture
def exploding(monkeypatch, tmp_path):
    """`polymoo methods` raises an unexpected RuntimeError; logs go under tmp_path/results/logs."""
    monkeypatch.setenv("POLYMOO_RESULTS", str(tmp_path / "results"))
    add_parser, _ = cli.SUBCOMMANDS["methods"]
    monkeypatch.setitem(cli.SUBCOMMANDS, "methods", (add_parser, _explode))
    return tmp_path / "results" / "logs"


def test_an_unexpected_error_is_one_line_and_a_log_with_the_traceback(exploding, capsys):
    assert main(["methods"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    (line,) = err.strip().splitlines()
    assert line.startswith("polymoo: unexpected error: RuntimeError: disk on fire (full log: ")
    assert "--debug" in line
    log = Path(re.search(r"full log: (\S+);", line).group(1))
    assert log.parent == exploding and log.name.startswith("polymoo-") and log.suffix == ".log"
    text = log.read_text()
    assert "command: polymoo methods" in text
    assert "Traceback (most recent call last)" in text and "in _explode" in text and "second line" in text


@pytest.mark.parametrize("argv", [["--debug", "methods"], ["methods", "--debug"]], ids=["before", "after"])
def test_debug_lets_the_traceback_through(exploding, argv):
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(argv)
    assert not exploding.exists(), "--debug writes no log file: the traceback is on the terminal"


def test_a_user_error_still_exits_2_without_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLYMOO_RESULTS", str(tmp_path / "results"))
    assert main(["leaderboard", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml: file not found" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "logs").exists()
    with pytest.raises(Exception, match="file not found"):
        main(["leaderboard", str(tmp_path / "missing.yaml"), "--debug"])
