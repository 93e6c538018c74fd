"""The environment lock: read ``requirements/lock-*.txt`` and compare it with what is installed.

Stdlib only, so it runs before anything else is importable. ``python -m harness.lockfile LOCK`` prints the installed
versions and exits 1, naming every package that differs, when the environment is not the lock's.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Installed beside the lock by the virtual environment or the install itself, never pinned by it.
NOT_LOCKED = frozenset({"pip", "polymoo"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, str]:
    """``{normalized name: version}`` of every ``name==version`` line of a pip/uv requirements lock."""
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"line {number}: {line!r} is not an exact pin (name==version)")
        pins[normalize(match.group(1))] = match.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """``{normalized name: version}`` of every distribution importable by this interpreter."""
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


@dataclass(frozen=True)
class LockDiff:
    changed: dict[str, tuple[str, str]]  # name -> (locked, installed)
    missing: dict[str, str]              # locked, not installed
    extra: dict[str, str]                # installed, not locked

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def lines(self) -> list[str]:
        return ([f"{n}: locked {a}, installed {b}" for n, (a, b) in sorted(self.changed.items())]
                + [f"{n}: locked {v}, not installed" for n, v in sorted(self.missing.items())]
                + [f"{n}: installed {v}, not in the lock" for n, v in sorted(self.extra.items())])


def compare(locked: dict[str, str], installed: dict[str, str]) -> LockDiff:
    return LockDiff(
        changed={n: (v, installed[n]) for n, v in locked.items() if n in installed and installed[n] != v},
        missing={n: v for n, v in locked.items() if n not in installed},
        extra={n: v for n, v in installed.items() if n not in locked and n not in NOT_LOCKED},
    )


def main(argv: list[str]) -> int:
    quiet = "--quiet" in argv
    paths = [a for a in argv if not a.startswith("-")]
    if len(paths) != 1:
        print("usage: python -m harness.lockfile requirements/lock-cpu.txt [--quiet]", file=sys.stderr)
        return 2
    lock = Path(paths[0])
    locked, installed = read_lock(lock.read_text(encoding="utf-8")), installed_versions()
    if not quiet:
        print(f"installed ({sys.executable}, Python {sys.version.split()[0]}):")
        pins = [f"{n}=={installed[n]}" for n in sorted(installed)]
        width = max(map(len, pins)) + 2
        per_row = max(1, 118 // width)
        for i in range(0, len(pins), per_row):
            print("  " + "".join(p.ljust(width) for p in pins[i:i + per_row]).rstrip())
    diff = compare(locked, installed)
    if diff.ok:
        print(f"environment equals {lock}: {len(locked)} packages")
        return 0
    print(f"environment differs from {lock}:", *("  " + line for line in diff.lines()), sep="\n", file=sys.stderr)
    print("  reinstall from the lock: rm -rf .venv && make env   (or re-lock deliberately: nox -s lock)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
