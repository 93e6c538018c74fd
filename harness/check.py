"""`polymoo check SUITE`: everything that can be checked before a model loads, each finding with its fix.

Loading the suite already checks the schema, the registries (models against the catalog, methods and their options,
local task names) and every value (:mod:`harness.suite`). On top of that:

* ``world``: N ranks over K seen languages (groups, uneven groups or rotation), and for each gradient method whether
  its weighting can run on that world (stateful weightings need N ≥ K and a granularity other than ``module``);
* ``lm_eval``: the names under ``eval.lm_eval_tasks`` against lm-eval's own task registry, with a did-you-mean;
* ``data``: a local file the suite names exists and its rows carry the language / prompt / response fields (the first
  rows are read); a missing file names the command that builds it (``polymoo data prepare NAME``,
  :mod:`harness.data.hub_sources`); a hub dataset is named, not fetched (the check is offline);
* ``memory`` (``--gpu-mem GB``, full scale): the planner's per-rank prediction (:mod:`harness.distributed.planner`)
  for every model and method at N; for one process the memory guard (:mod:`harness.memory_guard`: K float32
  per-language gradient rows), which `polymoo run` also applies, without --gpu-mem, against the device it will use.

A check that cannot run says so (``skip``) instead of passing silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.validate import suggest

GB = 1e9


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | fail | skip
    message: str


def _method_scope(spec: Any) -> tuple[str, str, str, str | None]:
    """(scope, weighting, granularity, own hook) of a gradient method from its parsed options, without a model."""
    options = spec.parsed_options
    if spec.name == "joint_sft":
        return "mean", "mean", "ddp_bucket", None
    granularity = getattr(options, "granularity", "whole" if spec.name != "bkmoo" else "ddp_bucket")
    scope = "global" if granularity == "whole" else "bucket"
    return scope, str(getattr(options, "solver", spec.name)), granularity, getattr(options, "hook", None)


def _gradient_methods(suite: Suite) -> list[Any]:
    """Joint SFT and the methods with a gradient combiner (their options carry `diagnostics`); not the preference
    methods, which run single-process."""
    return [spec for spec in suite.methods if spec.name == "joint_sft" or hasattr(spec.parsed_options, "diagnostics")]


def check_world(suite: Suite, nproc: int) -> list[Finding]:
    from harness.distributed.assignment import describe
    from harness.moo.weightings import STATEFUL_WEIGHTINGS

    k = len(suite.languages.seen)
    info = describe(nproc, k, list(suite.languages.seen), suite.train.steps)
    groups = info["ranks_per_language"]
    shape = (f"groups {', '.join(f'{lang}:{n}' for lang, n in groups.items())}" if groups
             else "languages rotate over steps")
    out = [Finding("world", "ok", f"N={nproc} ranks, K={k} seen languages: {shape}")]
    if nproc < 2:
        return out
    rotation = nproc < k
    for spec in _gradient_methods(suite):
        scope, weighting, granularity, _ = _method_scope(spec)
        if weighting not in STATEFUL_WEIGHTINGS:
            continue
        why = ("languages rotate (N < K) and its state is per language" if rotation else
               "a module split over two DDP buckets would update its state twice" if granularity == "module" else "")
        out.append(Finding("world", "fail" if why else "ok",
                           f"{spec.display}: stateful weighting {weighting!r} " +
                           (f"cannot run on {nproc} ranks: {why}; use N >= {k} ranks" +
                            (" and granularity ddp_bucket or tensor" if granularity == "module" else "")
                            if why else f"runs on {nproc} ranks")))
    return out


def check_engine(suite: Suite, nproc: int) -> list[Finding]:
    """``distributed.engine: fsdp2``: every gradient method on the FSDP2 engine (its hook and granularity), so a
    method it cannot run is refused before launch instead of ending as a FAILED run."""
    if suite.distributed.engine != "fsdp2" or nproc < 2:
        return []
    from harness.distributed.fsdp2 import fsdp2_refusal
    from harness.executor import resolve_hook
    from harness.moo.options import GradientPlan

    out = []
    for spec in _gradient_methods(suite):
        scope, _, granularity, hook = _method_scope(spec)
        resolved = resolve_hook(GradientPlan(scope=scope, hook=hook), suite.distributed.hook)
        why = fsdp2_refusal(resolved, "ddp_bucket" if scope == "mean" else granularity, suite.train)
        out.append(Finding("engine", "fail" if why else "ok",
                           f"{spec.display}: {why}" if why else f"{spec.display}: fsdp2 runs it (hook {resolved})"))
    return out


def check_lm_eval_tasks(suite: Suite) -> list[Finding]:
    tasks = suite.eval.lm_eval_tasks
    if not tasks:
        return [Finding("lm_eval", "skip", "no lm_eval_tasks in the suite")]
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    out = []
    for name in tasks:
        if name in known:
            out.append(Finding("lm_eval", "ok", f"eval.lm_eval_tasks.{name}: an lm-eval task"))
        else:
            out.append(Finding("lm_eval", "fail", f"eval.lm_eval_tasks.{name}: no such lm-eval task"
                                                  f"{suggest(name, known)}; `lm_eval --tasks list` lists them"))
    return out


def _first_rows(path: Path, n: int = 20) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) >= n:
                break
    return rows


def _how_to_build(d: Any) -> str:
    """The command that builds a missing data file (harness.data.hub_sources), or what to put there."""
    from harness.data.hub_sources import SOURCES, recipe_for_path

    recipe = recipe_for_path(d.path or "")
    if recipe is not None:
        source = SOURCES[recipe.source]
        return (f"build it with `polymoo data prepare {recipe.name}` (from {source.dataset_id}, {source.licence}; "
                "needs the hub or --from a local copy; docs/data.md), or point data.path at another JSONL file "
                "(--set data.path=...)")
    return (f"export the suite's data there as JSONL rows with fields {d.language_field}, {d.prompt_field}, "
            f"{d.response_field} (the suite file's comment says what it holds), or point data.path at such a file "
            "(--set data.path=...); `polymoo data list` shows the files polymoo can build")


def check_data(suite: Suite, root: Path) -> list[Finding]:
    d = suite.data
    if d.source in ("chatterbot", "interference"):
        return [Finding("data", "ok", f"data.source {d.source}: offline, built in")]
    path = Path(d.path or "")
    local = path if path.is_absolute() else root / path
    if d.source == "hub" and not local.exists():
        return [Finding("data", "skip", f"data.path {d.path}: a hub dataset, named and not fetched (offline check); "
                                        "it is read when the run starts")]
    if not local.exists():
        return [Finding("data", "fail", f"data.path {d.path}: no such file ({local}); {_how_to_build(d)}")]
    try:
        rows = _first_rows(local)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return [Finding("data", "fail", f"data.path {d.path}: unreadable JSONL ({err})")]
    fields = (d.language_field, d.prompt_field, d.response_field)
    missing = sorted({f for r in rows for f in fields if f not in r})
    if not rows or missing:
        return [Finding("data", "fail", f"data.path {d.path}: " + ("empty" if not rows else
                                                                    f"rows without field(s) {', '.join(missing)}"))]
    return [Finding("data", "ok", f"data.path {d.path}: {', '.join(fields)} present in the first {len(rows)} rows")]


def guarded_methods(suite: Suite) -> list[Any]:
    """The suite's gradient methods as the memory guard sees them: label, the planner's single-process method and
    the DDP hook each would use under torchrun."""
    from harness.executor import resolve_hook
    from harness.memory_guard import GuardedMethod
    from harness.moo.options import GradientPlan

    out = []
    for spec in _gradient_methods(suite):
        scope, _, _, hook = _method_scope(spec)
        out.append(GuardedMethod(spec.display, {"mean": "joint"}.get(scope, scope),
                                 resolve_hook(GradientPlan(scope=scope, hook=hook), suite.distributed.hook)))
    return out


def check_single_process(suite: Suite, capacity: Any) -> list[Finding]:
    """The memory guard (:mod:`harness.memory_guard`): one process, K float32 per-language gradient rows, against
    `capacity` (stated by --gpu-mem or measured on the device the run would use)."""
    if suite.scale != "full":
        return [Finding("memory", "skip", "tiny scale: the twins fit any device")]
    methods = guarded_methods(suite)
    if not methods:
        return [Finding("memory", "skip", "no gradient method in one process (preference methods are not planned)")]
    from harness.memory_guard import guard_single_process

    k = len(suite.languages.seen)
    verdicts = guard_single_process(suite.models, methods, k, suite.train, capacity,
                                    nproc_alternative=max(suite.distributed.nproc, k))
    return [Finding("memory", v.status, v.message) for v in verdicts]


def check_memory(suite: Suite, nproc: int, gpu_mem_gb: float | None) -> list[Finding]:
    if gpu_mem_gb is None:
        return [Finding("memory", "skip", "no --gpu-mem given")]
    if nproc == 1:
        from harness.memory_guard import device_capacity

        return check_single_process(suite, device_capacity(gpu_mem_gb))
    if suite.scale != "full":
        return [Finding("memory", "skip", "tiny scale: the twins fit any device")]
    from harness.distributed.planner import Workload, facts, meta_model, predict_memory
    from harness.memory_guard import lora_dict

    k, wl = len(suite.languages.seen), Workload.from_train(suite.train)  # the run's precision, optimizer, batch
    methods = guarded_methods(suite)
    if not methods:
        return [Finding("memory", "skip", "no gradient method (preference methods are not planned)")]
    out = []
    for model in suite.models:
        try:
            f = facts(meta_model(model, lora=lora_dict(suite.train.lora)), model)
        except KeyError as err:  # a hub id or a catalog model without a config.json for the planner
            out.append(Finding("memory", "skip", f"{model}: not checked, the planner has no config ({err})"))
            continue
        for m in methods:
            total = predict_memory(f, m.hook, nproc, k, "ddp", wl)["total"]
            fits = total <= gpu_mem_gb * GB
            advice = "" if fits else ("; alternatives: train.lora, more ranks with a bucket hook (sharded), or a "
                                      "larger card (`polymoo plan SUITE` shows every setting)")
            out.append(Finding("memory", "ok" if fits else "fail", f"{f.name} / {m.label} (DDP hook {m.hook}): "
                               f"{total / GB:.1f} GB predicted per rank of {gpu_mem_gb:g} GB{advice}"))
    return out


def run_checks(suite: Suite, nproc: int, gpu_mem_gb: float | None, root: Path,
               measure_device: bool = False) -> list[Finding]:
    """Every check; `measure_device` (polymoo run's pre-flight): without --gpu-mem, a single-process run is checked
    against the memory of the device it is about to use."""
    if measure_device and nproc == 1 and gpu_mem_gb is None:
        from harness.memory_guard import device_capacity

        memory = check_single_process(suite, device_capacity(None))
    else:
        memory = check_memory(suite, nproc, gpu_mem_gb)
    return [*check_world(suite, nproc), *check_engine(suite, nproc), *check_lm_eval_tasks(suite),
            *check_data(suite, root), *memory]
