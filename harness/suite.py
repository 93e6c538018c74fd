"""Loading a suite: the YAML file, `include`, `--set` overrides, validation against the schema and the registries.

`load_suite(path, overrides)` reads the YAML, merges an `include`d base, applies `--set a.b=c` overrides, validates
everything into the frozen dataclasses of :mod:`harness.config`, checks models, methods and evaluation tasks against
their registries, and parses each method's options once into its typed Options (``MethodSpec.parsed_options``).
Every problem is reported at once, as ``file: key.path: message``, in one `ConfigError`, before any model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.config import MethodSpec, Suite
from harness.validate import ConfigError, from_dict, suggest


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last one, silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges; an explicit key after it overrides
            continue
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.steps=20' -> (['train', 'steps'], 20); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected key.path=value"])
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0]
        raise ConfigError([f"--set {text}: the value is not valid YAML ({reason}); quote it or fix it"]) from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for i, key in enumerate(keys):
            where = ".".join(keys[: i + 1])
            last = i == len(keys) - 1
            if isinstance(node, list):
                if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                    raise ConfigError([f"--set {text}: {where}: no item {key!r} in a list of {len(node)}"])
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    if node.get(key) is None:
                        node[key] = {}
                    node = node[key]
            else:
                parent = ".".join(keys[:i]) or "<top>"
                raise ConfigError([f"--set {text}: {parent} is {node!r}, not a mapping or a list, so it has no {key!r}"])
    return data


def read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's mapping, with its `include`d base merged under it (an include chain may not loop)."""
    if not path.exists():
        raise ConfigError([f"{path}: file not found"])
    if path.resolve() in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError([f"{path}: include: the suite includes itself ({loop})"])
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: malformed YAML: {err}"]) from err
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    include = data.pop("include", None)
    if include:
        base = read_yaml((path.parent / include).resolve(), (*_chain, path.resolve()))
        data = _deep_merge(base, data)
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def suite_from_data(data: dict[str, Any], source: str = "<memory>") -> Suite:
    """Validate suite data (models, methods and tasks against their registries); raise ConfigError naming `source`.

    Registry checks run on the raw data too, so one pass reports every problem of the file."""
    problems: list[str] = []
    suite = from_dict(Suite, {**data, "source": source}, "", problems)
    problems += _check_registries(data)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in dict.fromkeys(problems)])
    _parse_method_options(suite)
    return suite


def _check_registries(data: dict[str, Any]) -> list[str]:
    from harness.models.catalog import check_model_name
    from harness.registry import check_method_options

    problems = []
    scale = data.get("scale", "tiny")
    models = data.get("models")
    for i, name in enumerate(models if isinstance(models, list) else []):
        message = check_model_name(str(name), scale) if isinstance(name, str) else None
        if message:
            problems.append(f"models[{i}]: {message}")
    methods = data.get("methods")
    labels = []
    for i, spec in enumerate(methods if isinstance(methods, list) else []):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue
        options = spec.get("options") or {}
        if isinstance(options, dict):
            problems += [f"methods[{i}].{p}" for p in check_method_options(spec["name"], options)]
        labels.append(spec.get("label") or spec["name"])
    if len(set(labels)) != len(labels):
        problems.append("methods: two entries share a name; give them distinct `label`s")
    return problems + _check_tasks(data.get("eval"))


def _check_tasks(section: Any) -> list[str]:
    from harness.evaluate.mc import LOCAL_TASKS

    tasks = section.get("tasks") if isinstance(section, dict) else None
    problems = []
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        if task not in LOCAL_TASKS:
            problems.append(f"eval.tasks[{i}]: unknown task {task!r}{suggest(str(task), LOCAL_TASKS)}; local tasks: "
                            f"{', '.join(LOCAL_TASKS)} (hub tasks go in lm_eval_tasks: {{task: language}})")
    return problems


def _parse_method_options(suite: Suite) -> None:
    """Each method's typed Options, parsed once and kept on its MethodSpec (the checks above already passed)."""
    from harness.registry import parse_options

    for spec in suite.methods:
        object.__setattr__(spec, "parsed_options", parse_options(spec.name, spec.options))  # derived, see MethodSpec


def method_options(spec: MethodSpec) -> Any:
    """The typed Options of a method entry: parsed with the suite, or now for an entry built in code."""
    if spec.parsed_options is None:
        from harness.registry import parse_options

        object.__setattr__(spec, "parsed_options", parse_options(spec.name, spec.options))
    return spec.parsed_options


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    path = Path(path)
    data = read_yaml(path)
    try:
        data = apply_overrides(data, overrides or [])
    except ConfigError as err:
        raise ConfigError([f"{path}: {p}" for p in err.problems]) from err
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError([f"{path}: --set: cannot apply override ({err})"]) from err
    return suite_from_data(data, str(path))
