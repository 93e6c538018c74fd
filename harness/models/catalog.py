"""The base LLMs polymoo knows by name, each with its hub id (full scale) and its tiny twin (tiny scale).

A suite names models by catalog key (`llama3.1-8b`) or by architecture alias (`llama`). At `scale: tiny`
every name maps to the random-init twin of the same architecture; at `scale: full` to the hub id.
A local directory or an `org/name` hub id is also accepted at full scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.validate import suggest

ARCHITECTURES = ("llama", "qwen3", "gemma2", "mistral")


@dataclass(frozen=True)
class BaseModel:
    key: str
    hub_id: str
    arch: str
    paper: str  # which paper names it


CATALOG: dict[str, BaseModel] = {m.key: m for m in [
    BaseModel("llama3.1-8b", "meta-llama/Llama-3.1-8B", "llama", "bkmoo"),
    BaseModel("qwen3-8b", "Qwen/Qwen3-8B-Base", "qwen3", "bkmoo"),
    BaseModel("gemma2-9b", "google/gemma-2-9b", "gemma2", "bkmoo"),
    BaseModel("mistral-7b", "mistralai/Mistral-7B-v0.3", "mistral", "bkmoo"),
    BaseModel("llama3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", "llama", "congrad"),
    BaseModel("gemma2-2b", "google/gemma-2-2b-it", "gemma2", "congrad"),
]}

ALIASES: dict[str, str] = {"llama": "llama3.1-8b", "qwen3": "qwen3-8b", "gemma2": "gemma2-9b", "mistral": "mistral-7b"}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as written in the suite
    source: str  # "tiny:<arch>" or a hub id / path
    arch: str | None

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith("tiny:")


def _lookup(name: str) -> BaseModel | None:
    return CATALOG.get(ALIASES.get(name, name)) or CATALOG.get(name.removeprefix("tiny-"))


def resolve_model(name: str, scale: str) -> ResolvedModel:
    if name.startswith("tiny-") and name.removeprefix("tiny-") in ARCHITECTURES:
        return ResolvedModel(name, f"tiny:{name.removeprefix('tiny-')}", name.removeprefix("tiny-"))
    base = _lookup(name)
    if base is not None:
        return ResolvedModel(name, f"tiny:{base.arch}" if scale == "tiny" else base.hub_id, base.arch)
    if scale == "full" and (Path(name).exists() or "/" in name):
        return ResolvedModel(name, name, None)
    raise KeyError(name)


def check_model_name(name: str, scale: str) -> str | None:
    try:
        resolve_model(name, scale)
    except KeyError:
        known = [*CATALOG, *ALIASES, *(f"tiny-{a}" for a in ARCHITECTURES)]
        extra = "" if scale == "full" else " (hub ids and paths need scale: full)"
        return f"unknown model {name!r}{suggest(name, known)}; known: {', '.join(known)}{extra}"
    return None
