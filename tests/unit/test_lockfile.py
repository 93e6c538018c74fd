"""The environment lock: exact pins, a comparison that names each package that moved, and locks that cover
pyproject.toml (a dependency added without re-locking fails here)."""

from __future__ import annotations

import pytest
import tomllib
from packaging.requirements import Requirement

from harness.lockfile import compare, normalize, read_lock
from tests.conftest import REPO

LOCKS = {name: REPO / "requirements" / f"lock-{name}.txt" for name in ("cpu", "cuda")}


def test_read_lock_takes_exact_pins_and_skips_comments():
    text = "# header\nTorch==2.13.0+cpu\n    # via peft\nlm_eval[hf]==0.4.13 ; python_version >= '3.10'\n\n"
    assert read_lock(text) == {"torch": "2.13.0+cpu", "lm-eval": "0.4.13"}


def test_read_lock_refuses_a_range_naming_the_line():
    with pytest.raises(ValueError, match=r"line 2: 'transformers>=5' is not an exact pin"):
        read_lock("torch==2.13.0\ntransformers>=5\n")


def test_compare_names_changed_missing_and_extra_packages():
    diff = compare({"torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2"},
                   {"torch": "2.13.0+cpu", "transformers": "5.25.0", "rich": "14.0", "pip": "23.2", "polymoo": "0.1"})
    assert not diff.ok
    assert diff.lines() == ["transformers: locked 5.24.0, installed 5.25.0", "peft: locked 0.21.2, not installed",
                            "rich: installed 14.0, not in the lock"]
    assert compare({"a": "1"}, {"a": "1", "pip": "9"}).ok


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_declared_dependency_is_locked_within_its_range(lock):
    pins = read_lock(LOCKS[lock].read_text())
    for req in _declared():
        name = normalize(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not in {LOCKS[lock].name}: run nox -s lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCKS[lock].name} pins {name}=={pins[name]}, outside pyproject.toml's {req}: run nox -s lock")


def test_cpu_and_cuda_locks_agree_on_everything_but_the_torch_build():
    cpu, cuda = (read_lock(LOCKS[name].read_text()) for name in ("cpu", "cuda"))
    assert cpu["torch"] == "2.13.0+cpu" and cuda["torch"] == "2.13.0"
    gpu_only = {n for n in cuda if n.startswith(("nvidia-", "cuda-")) or n == "triton"}
    shared = {n: v for n, v in cpu.items() if n != "torch"}
    assert {n: v for n, v in cuda.items() if n != "torch" and n not in gpu_only} == shared
