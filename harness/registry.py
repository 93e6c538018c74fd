"""The method registry: every baseline and method registers under one name and one interface.

A method is one module in `baselines/` or `methods/` whose stem is its registry name; it calls
`register_method(...)` at import. Third-party packages add methods through the entry-point group
`polymoo.methods` (value: an importable module). Discovery is lazy: nothing is imported until a name
is looked up or the list is asked for, so `polymoo --help` and the noxfile stay cheap.

The interface is :class:`harness.method.Method`: ``train(run, options) -> TrainOutcome``. Evaluation and recording
happen in the harness after `train` returns, so no method can evaluate differently. Two factories of
:mod:`harness.method` build the built-in kinds: `gradient_method(...)` (per-language gradients combined by a
weighting: PCGrad, MGDA, Bucket-Level MOO) and `preference_method(...)` (the self-rewarding DPO loop with a pair
filter: CONGRAD and its baselines).
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from harness.method import Family, Method, TrainOutcome
from harness.validate import field_docs, from_dict, suggest

__all__ = ["Family", "Method", "TrainOutcome", "available_methods", "get_method", "parse_options", "register_method"]

ENTRY_POINT_GROUP = "polymoo.methods"
BUILTIN_PACKAGES = ("baselines", "methods")


_REGISTRY: dict[str, Method] = {}
_DISCOVERED = False


def register_method(method: Method) -> Method:
    """Register `method` under `method.name`; a second registration of the same name is an error."""
    for attr in ("name", "summary", "family", "kind", "version", "Options", "train"):
        if not hasattr(method, attr):
            raise TypeError(f"method {method!r} lacks attribute {attr!r} required by harness.registry.Method")
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method and type(existing).__module__ != type(method).__module__:
        raise ValueError(f"method {method.name!r} is registered twice ({existing!r} and {method!r})")
    _REGISTRY[method.name] = method
    return method


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for package in BUILTIN_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def available_methods() -> dict[str, Method]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    methods = available_methods()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}{suggest(name, methods)}; registered: {', '.join(methods)}")
    return methods[name]


def parse_options(name: str, options: dict[str, Any]) -> Any:
    """Validated Options instance for method `name` (raises ConfigError-style ValueError on problems)."""
    problems: list[str] = []
    method = get_method(name)
    out = from_dict(method.Options, options, "options", problems)
    if problems:
        raise ValueError("; ".join(problems))
    return out


def check_method_options(name: str, options: dict[str, Any]) -> list[str]:
    """Problems with a suite's method entry, as 'key: message' strings relative to the entry."""
    methods = available_methods()
    if name not in methods:
        return [f"name: unknown method {name!r}{suggest(name, methods)}; registered: {', '.join(methods)}"]
    problems: list[str] = []
    from_dict(methods[name].Options, options, "options", problems)
    return problems


def describe(method: Method, long: bool = False) -> str:
    line = f"{method.name:<16} {method.family:<9} {method.summary}"
    if not long:
        return line
    rows = [f"    {r['name']}: {r['type']} = {r['default']!r}  [{r['source']}] {r['doc']}" for r in field_docs(method.Options)]
    return "\n".join([line, *rows])
