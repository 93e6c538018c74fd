"""Capacity planner, FSDP2 mode: bytes and memory per rank of `harness.distributed.fsdp2`'s engine, phase by phase.

It models the code, not ZeRO in general: the units are those of `fsdp2.fsdp_units` (each decoder block, then the
root: embeddings, final norm, LM head), every parameter padded on dim 0 to a multiple of N as FSDP2 pads it, float32
master weights and AdamW state sharded 1/N, float32 gradient reduction (the MixedPrecisionPolicy of a bf16 run), and
the comms of `harness.distributed.fsdp2_comm`. Per rank and optimizer step, with U_u = padded elements of unit u,
w = compute bytes (2 for bf16, 4 for fp32), e = 4 (reduce dtype), K = languages per step:

bytes   gradient reduction  mean Σ_u (N−1)/N·U_u·e (reduce-scatter); per-unit MOO the same (all-to-all) + per unit
                            2(N−1)/N·8K² (K×K float64 Gram); global MOO the same + one Gram all-reduce per step
        parameter gathers   forward every unit, backward every unit but the root (FSDP2 keeps the root gathered):
                            (N−1)·U_u/N·w each
memory  persistent          Σ_u U_u/N·(4 master + 8 AdamW)
        backward of unit u  (units in backward order: last block first, root last) sharded gradients of the units
                            already reduced (U_v/N·4) + the root gathered and its gradient (U_root·2w: the LM head's
                            gradient arrives first and the root reduces last) + unit u gathered and its gradient
                            (U_u·2w) + activations still held + the comm's buffers: input U_u·e, then mean: output
                            U_u/N·e; MOO: all-to-all output U_u·e + language rows K·U_u/N·4; global MOO also keeps
                            the rows of every unit already reduced (K·U_v/N·4)
        optimizer step      persistent + every sharded gradient + one float32 temporary of the shard (AdamW foreach)
        peak                the largest phase
activations: Korthikanti et al. 2022 per layer b·s·(34h + 5as)·w/2 (5as dropped with flash attention); with
activation checkpointing each layer keeps its input b·s·h·w and one layer's working set is live; logits b·s·V·(w+8).
`tests/distributed/test_fsdp2_planner.py` checks bytes (within 5 %) and peak memory (within 20 %) against a CPU run of
the engine under torch's FSDPMemTracker (:func:`measure_peak`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from harness.distributed.accounting import allgather_bytes, allreduce_bytes, alltoall_bytes

MODES = ("mean", "sharded", "full")  # joint SFT, per-unit (Bucket-Level) MOO, global MOO: fsdp2.FSDP2_MODES
MODE_LABELS = {"mean": "joint SFT", "sharded": "Bucket-Level MOO (per unit)", "full": "global MOO"}
PAPER_GB = {"sharded": 72.0, "full": 123.0}  # arXiv 2606.05613, public summary (harness.distributed.planner)
GB = 1e9


@dataclass(frozen=True)
class UnitShapes:
    """Every unit's trainable tensors as (dim 0, elements per dim-0 row); the root last."""

    units: tuple[tuple[tuple[int, int], ...], ...]
    hidden: int
    layers: int
    heads: int
    vocab: int

    def padded(self, world: int) -> list[int]:
        """Elements of each unit with FSDP2's dim-0 padding to a multiple of N."""
        return [sum(math.ceil(d0 / world) * world * rest for d0, rest in unit) for unit in self.units]


@dataclass(frozen=True)
class Fsdp2Workload:
    batch: int = 1
    seq: int = 1024
    compute_bytes: int = 2  # bf16 compute under MixedPrecisionPolicy; 4 for a float32 run
    checkpointing: bool = True
    flash: bool = True  # attention without the s×s scores (SDPA / flash); False: eager attention (the CPU runs)


def unit_shapes(model: torch.nn.Module) -> UnitShapes:
    """The FSDP2 units of a (meta, plain or sharded) model, as `fsdp2.fsdp_units` forms them."""
    from harness.distributed.fsdp2 import fsdp_units

    params = dict(model.named_parameters())
    units = tuple(tuple((int(params[n].shape[0]), int(params[n].numel() // max(params[n].shape[0], 1)))
                        for n in u.names) for u in fsdp_units(model))
    cfg = getattr(model, "config", None)
    return UnitShapes(units, getattr(cfg, "hidden_size", 0), getattr(cfg, "num_hidden_layers", 0),
                      getattr(cfg, "num_attention_heads", 0), getattr(cfg, "vocab_size", 0))


def predict_bytes(shapes: UnitShapes, mode: str, world: int, languages: int, compute_bytes: int = 2,
                  reduce_bytes: int = 4) -> dict[str, float]:
    """Bytes a rank sends per step: the gradient reduction (``grad``), its reduce-scatter baseline, parameter gathers."""
    sizes, k = shapes.padded(world), min(world, languages)
    reduce_scatter = sum(alltoall_bytes(u * reduce_bytes, world) for u in sizes)
    grams = {"mean": 0, "sharded": len(sizes), "full": 1}[mode] * allreduce_bytes(8 * k * k, world)
    gathers = sum(allgather_bytes(u / world * compute_bytes, world) for u in sizes)
    gathers += sum(allgather_bytes(u / world * compute_bytes, world) for u in sizes[:-1])  # backward re-gather
    return {"grad": reduce_scatter + grams, "reduce_scatter": reduce_scatter, "params": gathers,
            "ratio_reduce_scatter": (reduce_scatter + grams) / reduce_scatter if reduce_scatter else float("nan")}


def activation_bytes(shapes: UnitShapes, wl: Fsdp2Workload, layers_held: int) -> float:
    """Activations held while ``layers_held`` layers still wait for their backward, plus the logits."""
    b, s, h, w = wl.batch, wl.seq, shapes.hidden, wl.compute_bytes
    per_layer = b * s * (34 * h + (0 if wl.flash else 5 * shapes.heads * s)) * w / 2
    held = layers_held * b * s * h * w + per_layer if wl.checkpointing else layers_held * per_layer
    return held + b * s * shapes.vocab * (w + 8)


def _comm_bytes(mode: str, unit: int, world: int, k: int) -> float:
    if mode == "mean":
        return unit * 4 + unit / world * 4
    return unit * 4 * 2 + k * unit / world * 4


def predict_memory(shapes: UnitShapes, mode: str, world: int, languages: int, wl: Fsdp2Workload) -> dict[str, float]:
    """Per-rank bytes of every phase of a step (after the first: AdamW state exists) and the peak."""
    sizes, k, w = shapes.padded(world), min(world, languages), wl.compute_bytes
    root, blocks = sizes[-1], sizes[:-1]
    shard = sum(sizes) / world
    persistent = shard * (4 + 8)
    phases: dict[str, float] = {}
    done = 0.0
    order = [*reversed(range(len(blocks))), len(blocks)]  # backward: last block first, the root last
    for i in order:
        unit, is_root = sizes[i], i == len(blocks)
        gathered = root * 2 * w + (0 if is_root else unit * 2 * w)
        kept = k * done * 4 if mode == "full" else 0.0
        acts = activation_bytes(shapes, wl, 0 if is_root else i + 1)
        phases[f"backward unit {i}"] = (persistent + done * 4 + kept + gathered + acts
                                        + _comm_bytes(mode, unit, world, k))
        done += unit / world
    phases["optimizer step"] = persistent + shard * 4 * 2
    peak_phase = max(phases, key=phases.get)
    return {"persistent": persistent, "peak": phases[peak_phase], "peak_phase": peak_phase, "phases": phases,
            "blocks_max": max(blocks, default=0), "root": root}


def plan_table(models: list[str], world: int = 8, languages: int = 8, wl: Fsdp2Workload | None = None) -> list[dict]:
    """Rows (model, mode, GB per rank, bytes) for the base LLMs on the meta device."""
    from harness.distributed.planner import meta_model

    wl = wl or Fsdp2Workload()
    rows = []
    for name in models:
        shapes = unit_shapes(meta_model(name, dtype=torch.float32))
        for mode in MODES:
            mem = predict_memory(shapes, mode, world, languages, wl)
            comm = predict_bytes(shapes, mode, world, languages, wl.compute_bytes)
            rows.append({"model": name, "mode": mode, "method": MODE_LABELS[mode], "world": world,
                         "languages": min(world, languages), "peak_gb": mem["peak"] / GB,
                         "persistent_gb": mem["persistent"] / GB, "peak_phase": mem["peak_phase"],
                         "grad_gb_per_step": comm["grad"] / GB, "ratio_reduce_scatter": comm["ratio_reduce_scatter"],
                         "param_gather_gb_per_step": comm["params"] / GB, "paper_gb": PAPER_GB.get(mode)})
    return rows


def to_markdown(rows: list[dict], wl: Fsdp2Workload) -> str:
    head = (f"FSDP2 engine, per rank and step (batch {wl.batch} × seq {wl.seq} per rank, "
            f"{'bf16' if wl.compute_bytes == 2 else 'fp32'} compute, fp32 master weights / AdamW / reduction, "
            f"activation checkpointing {'on' if wl.checkpointing else 'off'})\n\n"
            "| model | method | N | K | peak GB | persistent GB | peak phase | grad GB/step | × reduce-scatter | "
            "param gathers GB/step | paper GB |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['model']} | {r['method']} | {r['world']} | {r['languages']} | {r['peak_gb']:.1f} | "
                   f"{r['persistent_gb']:.1f} | {r['peak_phase']} | {r['grad_gb_per_step']:.2f} | "
                   f"{r['ratio_reduce_scatter']:.6f} | {r['param_gather_gb_per_step']:.2f} | "
                   f"{'' if r['paper_gb'] is None else r['paper_gb']} |\n" for r in rows)
    return head + body


def measure_peak(engine: Any, step: int) -> dict[str, float]:
    """Peak tensor bytes of one `Fsdp2Engine.step` on this rank, by category, from torch's FSDPMemTracker (a
    TorchDispatchMode that sees every tensor the step allocates, CPU included; one step per tracker)."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    tracker = FSDPMemTracker(engine.model, engine.optimizer)
    with tracker:
        engine.step(step)
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    return {str(k).split(".")[-1].lower(): float(v) for k, v in peak.items()}
