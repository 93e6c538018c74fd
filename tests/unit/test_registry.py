"""The registry: built-in discovery, entry points, descriptions, duplicate names."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from harness import registry
from harness.registry import TrainOutcome
from tests.conftest import REPO


def test_builtin_methods_discovered_and_described():
    methods = registry.available_methods()
    assert "joint_sft" in methods
    stems = {p.stem for pkg in registry.BUILTIN_PACKAGES for p in (REPO / pkg).glob("*.py") if not p.stem.startswith("_")}
    assert stems <= set(methods), "every module stem registers its own name"
    line = registry.describe(methods["joint_sft"])
    assert line.startswith("joint_sft") and "baseline" in line


@dataclass(frozen=True, kw_only=True)
class _Opts:
    alpha: float = 0.5


class _Dummy:
    name, summary, family, kind, version, Options = "dummy_ep", "a test method", "proposed", "custom", 1, _Opts

    def train(self, run, options):
        return TrainOutcome(model=None)


def test_entry_point_methods_are_discovered(monkeypatch, tmp_path):
    module = tmp_path / "polymoo_ext_dummy.py"
    module.write_text("from harness.registry import register_method\nfrom tests.unit.test_registry import _Dummy\n"
                      "register_method(_Dummy())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [SimpleNamespace(value="polymoo_ext_dummy")] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "dummy_ep" in registry.available_methods()
    assert registry.check_method_options("dummy_ep", {"alpha": "x"}) == ["options.alpha: expected float, got 'x'"]
    assert "alpha: float = 0.5" in registry.describe(registry.get_method("dummy_ep"), long=True)


def test_incomplete_or_duplicate_method_rejected(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(TypeError, match="lacks attribute 'train'"):
        registry.register_method(SimpleNamespace(name="x", summary="", family="baseline", kind="", version=1, Options=_Opts))
    registry.register_method(_Dummy())

    class Other(_Dummy):
        pass

    Other.__module__ = "elsewhere"
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_method(Other())


def test_unknown_method_suggests():
    with pytest.raises(KeyError, match="did you mean 'joint_sft'"):
        registry.get_method("joint_stf")
