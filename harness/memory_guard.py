"""Memory guard of the single-process path: refuse, before any model loads, a run whose K float32 per-language
gradient rows (plus weights, optimizer state and activations) do not fit the device it would train on.

One process trains a gradient method by keeping one float32 gradient row per language (``harness.train.grad_engine``):
K·P·4 bytes, 193 GB for an 8B model at K = 6, on top of the weights and AdamW's state. The capacity planner
(:func:`harness.distributed.planner.predict_single_process`, phase by phase, from the model's config on the meta device)
predicts the peak; this module compares it with the device:

* ``--gpu-mem GB`` when given (a stated capacity: a dry run for another machine, or a deterministic test);
* else CUDA's free memory on the current device (``torch.cuda.mem_get_info``), where a GPU is visible: what the
  Trainer would use;
* else the host's available RAM (``psutil``): a CPU run holds everything in RAM.

Tiny twins (a few MB) are not checked; a model the planner has no config for is reported as unchecked, not passed.
A refusal gives the planner's numbers and the alternatives with their own predictions: LoRA (``train.lora``) in one
process, and the distributed engines (``--nproc N``, the suite's hook) per rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GB = 1e9
DEFAULT_LORA = {"rank": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


@dataclass(frozen=True)
class Capacity:
    bytes: float
    source: str  # what was measured or stated, for the message
    host: bool = False  # the host's RAM: a CPU run, whose loop runs two languages' passes at a time


@dataclass(frozen=True)
class GuardedMethod:
    """A gradient method as the guard sees it: its label, the planner's single-process method (joint | global |
    bucket) and the DDP hook it would use under torchrun (for the distributed alternative)."""

    label: str
    planner_method: str
    hook: str


@dataclass(frozen=True)
class Verdict:
    model: str
    method: str
    status: str  # ok | fail | skip
    message: str


def device_capacity(gpu_mem_gb: float | None = None) -> Capacity:
    """The memory a single-process run can use: stated, else CUDA's free memory, else the host's available RAM."""
    if gpu_mem_gb is not None:
        return Capacity(gpu_mem_gb * GB, f"--gpu-mem {gpu_mem_gb:g}")
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return Capacity(float(free), f"free on cuda:{torch.cuda.current_device()} "
                                     f"(of {total / GB:.1f} GB, torch.cuda.mem_get_info)")
    import psutil

    return Capacity(float(psutil.virtual_memory().available), "host RAM available (a CPU run)", host=True)


def lora_dict(lora: Any) -> dict[str, Any] | None:
    if lora is None:
        return None
    return {"rank": lora.rank, "alpha": lora.alpha, "target_modules": list(lora.target_modules)}


class _FactsCache:
    """ModelFacts per (model, LoRA) for one guard call: each is a meta-device build of ~1 s, needed up to three times
    per model (the run, the LoRA alternative, the distributed alternative)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], Any] = {}

    def get(self, model: str, lora: dict[str, Any] | None) -> Any:
        from harness.distributed.planner import facts, meta_model

        key = (model, repr(lora))
        if key not in self.cache:
            self.cache[key] = facts(meta_model(model, lora=lora), model)
        return self.cache[key]


def _breakdown(need: dict[str, float], k: int, params: int) -> str:
    rows = need.get("language_rows", 0.0)
    parts = ([f"{k} float32 per-language gradient rows {rows / GB:.1f} GB ({k} × {params / 1e9:.2f} B trainable "
              "× 4 bytes)"] if rows else [])
    parts += [f"{key} {need[key] / GB:.1f} GB" for key in ("weights", "optimizer", "gradients", "activations")
              if need.get(key)]
    return ", ".join(parts)


def _alternatives(model: str, m: GuardedMethod, k: int, wl: Any, suite_lora: dict[str, Any] | None,
                  nproc: int, cache: _FactsCache) -> str:
    from harness.distributed.planner import predict_memory, predict_single_process

    out = []
    if suite_lora is None:
        lora_need = predict_single_process(cache.get(model, DEFAULT_LORA), m.planner_method, k, wl)["total"]
        out.append(f"LoRA (--set 'train.lora={{rank: {DEFAULT_LORA['rank']}, target_modules: "
                   f"[{', '.join(DEFAULT_LORA['target_modules'])}]}}': {lora_need / GB:.1f} GB in one process)")
    dist = predict_memory(cache.get(model, suite_lora), m.hook, nproc, k, "ddp", wl)["total"]
    out.append(f"the distributed engines (polymoo run SUITE --nproc {nproc}, DDP hook {m.hook}: {dist / GB:.1f} GB "
               "per rank; `polymoo plan SUITE` shows every N and ZeRO-3)")
    return "; ".join(out)


def judge(model: str, m: GuardedMethod, k: int, train: Any, capacity: Capacity, nproc_alternative: int,
          cache: _FactsCache | None = None) -> Verdict:
    """One (model, method) in one process against the capacity, with the planner's numbers."""
    from harness.distributed.planner import Workload, predict_single_process
    from harness.train.language_workers import MAX_WORKERS

    cache = cache or _FactsCache()
    wl = Workload.from_train(train, parallel_languages=MAX_WORKERS if capacity.host else 1)
    suite_lora = lora_dict(train.lora)
    try:
        f = cache.get(model, suite_lora)
    except KeyError as err:  # no config.json for the planner (a hub id, a catalog model without one)
        return Verdict(model, m.label, "skip", f"{model} / {m.label}: not checked, the planner has no config "
                                               f"({str(err).strip(chr(34))})")
    need = predict_single_process(f, m.planner_method, k, wl)
    head = (f"{model} / {m.label} (one process): {need['total'] / GB:.1f} GB predicted peak by the planner "
            f"[{_breakdown(need, k, f.params_trainable)}] of {capacity.bytes / GB:.1f} GB ({capacity.source})")
    if need["total"] <= capacity.bytes:
        return Verdict(model, m.label, "ok", head)
    alternatives = _alternatives(model, m, k, wl, suite_lora, nproc_alternative, cache)
    return Verdict(model, m.label, "fail", f"{head}: does not fit. Alternatives: {alternatives}; or --gpu-mem GB "
                                           "to state another capacity")


def guard_single_process(models: Sequence[str], methods: Sequence[GuardedMethod], k: int, train: Any,
                         capacity: Capacity, nproc_alternative: int) -> list[Verdict]:
    """Every (model, method) of a single-process run against `capacity` (full-scale models only)."""
    cache = _FactsCache()
    return [judge(model, m, k, train, capacity, nproc_alternative, cache) for model in models for m in methods]


__all__ = ["Capacity", "GuardedMethod", "Verdict", "device_capacity", "guard_single_process", "judge", "lora_dict"]
