"""Turn plain YAML data into frozen, typed dataclasses, collecting every error with its key path.

One small converter drives suites, method options and every other typed config: each error names
the key path, what was expected and what was found, so `polymoo run` can refuse a bad suite before
any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """All problems of one config, each as 'file: key.path: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Convert `value` to type `tp`; on failure append a message to `problems` and return None."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}{suggest(value, allowed)}")
        return None
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = convert(value, arg, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path, problems)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
            return None
        item_tp = get_args(tp)[0]
        items = [convert(v, item_tp, _join(path, i), problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {value!r}")
            return None
        _, val_tp = get_args(tp)
        return {str(k): convert(v, val_tp, _join(path, str(k)), problems) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            problems.append(f"{path}: expected a finite number, got {value!r}")
            return None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return None


def from_dict(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a mapping; unknown and missing keys are reported, defaults filled."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path or '<top>'}: expected a mapping, got {data!r}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            problems.append(f"{_join(path, key)}: unknown key{suggest(key, fields)}; allowed: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], _join(path, name), problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(path, name)}: missing required key (expected {_type_name(hints[name])})")
    if len(problems) > before:
        return None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        problems.append(f"{path or '<top>'}: {err}")
        return None
    check = getattr(obj, "check", None)
    if callable(check):
        for key, message in check():
            problems.append(f"{_join(path, key)}: {message}")
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'l': [x, y]} -> {'a.b': 1, 'l.0': x, 'l.1': y} for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix] = data
    return out


def field_docs(cls: type) -> list[dict[str, Any]]:
    """Documentation rows of an Options dataclass: name, type, default, source, doc (for `polymoo methods --long`)."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        rows.append({
            "name": f.name, "type": _type_name(hints[f.name]), "default": default,
            "source": f.metadata.get("source", ""), "doc": f.metadata.get("doc", ""),
        })
    return rows


def option(default: Any, source: str, doc: str) -> Any:
    """A documented Options field; `source` is paper | reference-code | reconstruction | harness."""
    return dataclasses.field(default=default, metadata={"source": source, "doc": doc})
