"""Capacity planner: bytes communicated and memory per rank and step, for runs these machines cannot make.

Each base LLM is built on the meta device from its config (`harness/models/configs/<catalog key>.json`, the public
config.json values), its DDP bucket plan is computed (`harness.buckets`), and for every method/hook, every N, DDP or
ZeRO-3/FSDP-style sharding, full fine-tuning or LoRA, the planner predicts per rank and per optimizer step:

bytes sent (the accounting convention of `harness.distributed.accounting`; G_b = bytes of bucket b's gradient,
c_b = ceil(numel_b / N), e = gradient element size, K = languages per step = min(N, K)):
  mean         Σ_b 2(N−1)/N·G_b                          (DDP all-reduce; under ZeRO a reduce-scatter: (N−1)/N·G_b)
  sharded      Σ_b [2(N−1)·c_b·e + 2(N−1)/N·8K²]          (all-to-all + all-gather of slices + K×K float64 Gram)
               under ZeRO the combined slice IS the rank's shard: no all-gather, (N−1)·c_b·e + Gram — reduce-scatter cost
  allgather    Σ_b (N−1)·G_b
  full         Σ_b 2(N−1)·c_b·e + 2(N−1)/N·8K²            (one global Gram; ZeRO: no final all-gather)
  full_gather  Σ_b (N−1)·G_b
  ZeRO-3 also all-gathers the (sharded) weights twice per step (forward and backward): 2(N−1)/N·P·w, listed apart.

memory (bytes per rank), w = weight bytes, e = gradient bytes, P = trainable, P_all = all parameters:
  weights      DDP P_all·w; ZeRO P_all·w/N + the largest unit gathered (U_max·w)
  gradients    DDP P·e (.grad) + P·e (DDP's bucket buffers; gradient_as_bucket_view=False, as DistEngine);
               ZeRO P·e/N + U_max·e (the unit being reduced)
  optimizer    AdamW: 2 states per trainable parameter in the state dtype, plus a float32 master copy when the
               weights are 16-bit: P·(2·s + m), s = 4, m = 4 if w = 2 else 0; ZeRO divides by N
  hook extra   mean 0; sharded B_max·(2 + 1) + K·c_max·4 + c_max·4 (padded copy, received slices, language rows,
               combined slice, gathered bucket); allgather N·B_max + K·numel_max·4 + B_max; full K·(P/N)·4 kept rows
               + 2·B_max; full_gather K·P·4 kept rows + N·B_max (language rows are float32, as the hooks keep them)
  activations  Korthikanti et al. 2022 per layer b·s·(34h + 5as) bytes at 16 bits (×2 at 32 bits; the 5as term
               dropped with flash attention), only the layer inputs 2·b·s·h (×L) with activation checkpointing plus one
               layer's working set; logits b·s·V·(w + 4 + 4) (output, float32 copy, gradient)
The same formulas predict the CPU runs (tests/unit/test_planner.py compares them with results/bench/comm_*.json).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.distributed.accounting import allgather_bytes, allreduce_bytes

CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "configs"
GB = 1e9
METHODS = {  # table row -> (hook, description)
    "joint_sft": ("mean", "joint SFT, language-balanced ranks (all-reduce / reduce-scatter)"),
    "bkmoo (sharded)": ("sharded", "Bucket-Level MOO, sharded hook: all-to-all + K×K Grams + all-gather"),
    "bkmoo (allgather)": ("allgather", "Bucket-Level MOO, all-gather hook"),
    "global MOO (full)": ("full", "full-gradient MOO on the global Gram, sharded slices kept until backward ends"),
    "global MOO (full_gather)": ("full_gather", "full-gradient MOO, naive: every rank gathers every language's "
                                                "full gradient"),
}
PAPER_CLAIM = {"bkmoo_gb": 72.0, "global_gb": 123.0,
               "source": "arXiv 2606.05613 (public summary): 72 GB Bucket-Level MOO vs 123 GB global MOO"}


@dataclass(frozen=True)
class ModelFacts:
    name: str
    arch: str
    params_total: int
    params_trainable: int
    hidden: int
    layers: int
    heads: int
    vocab: int
    bucket_numel: tuple[int, ...]  # trainable elements per DDP bucket (also the ZeRO/FSDP units of the planner)
    weight_bytes: int  # bytes per weight element
    grad_bytes: int  # bytes per gradient element
    lora: bool = False

    @property
    def n_buckets(self) -> int:
        return len(self.bucket_numel)


@dataclass(frozen=True)
class Workload:
    """Per-rank micro-batch and training choices that set activations and optimizer state."""

    batch: int = 1
    seq: int = 1024
    checkpointing: bool = True
    flash_attention: bool = True
    optimizer_state_bytes: int = 4  # AdamW m and v
    master_weights: bool | None = None  # None: when weights are 16-bit
    ddp_bucket_copy: bool = True  # DDP bucket buffers beside .grad (gradient_as_bucket_view=False)


# -- models -------------------------------------------------------------------------------------------------------


def config_path(name: str) -> Path:
    from harness.models.catalog import ALIASES

    key = ALIASES.get(name, name)
    path = CONFIG_DIR / f"{key}.json"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise KeyError(f"no config for model {name!r} under {CONFIG_DIR}; known: {', '.join(known)}")
    return path


def load_config(name: str):
    from transformers import AutoConfig

    data = json.loads(config_path(name).read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")}
    return AutoConfig.for_model(data.pop("model_type"), **data)


def meta_model(name_or_config: Any, dtype: torch.dtype = torch.bfloat16, lora: Any = None) -> torch.nn.Module:
    """The real architecture on the meta device (no memory, < 1 s), optionally with LoRA adapters (peft)."""
    from transformers import AutoModelForCausalLM

    cfg = load_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora.get("alpha", 2 * lora["rank"]),
                                                 target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"))
    return model


def facts(model: torch.nn.Module, name: str, bucket_cap_mb: float = 25.0, ready_order: Any = None,
          bucket_numel: list[int] | None = None) -> ModelFacts:
    """ModelFacts of a (meta or real) model; DDP's buckets from `harness.buckets` unless `bucket_numel` is given
    (e.g. the buckets a run's hook recorded). On meta models the ready order is the reverse parameter order
    (HF decoders' real order differs in where the norms fall: bucket sizes move by a few norm vectors)."""
    from harness.buckets import bucket_plan

    cfg = getattr(model, "config", None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if bucket_numel is None:
        bucket_numel = [b.numel for b in bucket_plan(model, bucket_cap_mb, ready_order=ready_order)]
    w = next(model.parameters()).element_size()
    el = trainable[0].element_size() if trainable else w
    return ModelFacts(name=name, arch=getattr(cfg, "model_type", "?"),
                      params_total=sum(p.numel() for p in model.parameters()),
                      params_trainable=sum(p.numel() for p in trainable),
                      hidden=getattr(cfg, "hidden_size", 0), layers=getattr(cfg, "num_hidden_layers", 0),
                      heads=getattr(cfg, "num_attention_heads", 0), vocab=getattr(cfg, "vocab_size", 0),
                      bucket_numel=tuple(int(n) for n in bucket_numel), weight_bytes=w, grad_bytes=el,
                      lora=len(trainable) < sum(1 for _ in model.parameters()))


# -- bytes --------------------------------------------------------------------------------------------------------


def predict_bytes(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp") -> dict[str, float]:
    """Bytes sent per rank per optimizer step (after warm-up), by collective; key 'total' = gradient sync."""
    n, e, k = world, f.grad_bytes, min(world, languages)
    gram = allreduce_bytes(8 * k * k, n)
    out: dict[str, float] = {}
    zero = sharding == "zero3"
    if hook == "mean":
        out["all_reduce" if not zero else "reduce_scatter"] = sum(
            (allreduce_bytes(b * e, n) if not zero else (n - 1) / n * b * e) for b in f.bucket_numel)
    elif hook in ("sharded", "full"):
        out["all_to_all.slices"] = sum((n - 1) * math.ceil(b / n) * e for b in f.bucket_numel)
        if not zero:
            out["all_gather.slices"] = out["all_to_all.slices"]
        out["all_reduce.gram"] = gram * (f.n_buckets if hook == "sharded" else 1)
    elif hook in ("allgather", "full_gather"):
        out["all_gather.bucket"] = sum(allgather_bytes(b * e, n) for b in f.bucket_numel)
    else:
        raise ValueError(f"unknown hook {hook!r}")
    out["total"] = sum(out.values())
    out["allreduce_equivalent"] = sum(allreduce_bytes(b * e, n) for b in f.bucket_numel)
    out["ratio_allreduce"] = out["total"] / out["allreduce_equivalent"] if out["allreduce_equivalent"] else float("nan")
    if zero:
        out["weights_all_gather"] = 2 * (n - 1) / n * f.params_total * f.weight_bytes
    return out


# -- memory -------------------------------------------------------------------------------------------------------


def activation_bytes(f: ModelFacts, wl: Workload, elem: int) -> float:
    b, s, h, a = wl.batch, wl.seq, f.hidden, f.heads
    per_layer = b * s * (34 * h + (0 if wl.flash_attention else 5 * a * s)) * elem / 2
    layers = (f.layers * 2 * b * s * h * elem / 2 + per_layer) if wl.checkpointing else f.layers * per_layer
    logits = b * s * f.vocab * (elem + 4 + 4)
    return layers + logits


def hook_extra_bytes(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp") -> float:
    n, e, k = world, f.grad_bytes, min(world, languages)
    numel_max = max(f.bucket_numel) if f.bucket_numel else 0
    b_max = numel_max * e
    c_max = math.ceil(numel_max / n)
    rows = max(e, 4)  # language rows are kept in at least float32
    p = f.params_trainable
    if hook == "mean":
        return 0.0
    if hook == "sharded":
        return 2 * b_max + k * c_max * rows + c_max * rows + (0 if sharding == "zero3" else b_max)
    if hook == "allgather":
        return n * b_max + k * numel_max * rows + b_max
    if hook == "full":
        return k * math.ceil(p / n) * rows + 2 * b_max
    if hook == "full_gather":
        return k * p * rows + n * b_max
    raise ValueError(f"unknown hook {hook!r}")


def predict_memory(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp",
                   wl: Workload = Workload()) -> dict[str, float]:
    """Peak bytes per rank by component; 'total' is their sum (all live at the end of the backward / the step)."""
    n, w, e = world, f.weight_bytes, f.grad_bytes
    p, p_all = f.params_trainable, f.params_total
    unit = max(f.bucket_numel) if f.bucket_numel else 0
    master = (w == 2) if wl.master_weights is None else wl.master_weights
    opt = p * (2 * wl.optimizer_state_bytes + (4 if master else 0))
    if sharding == "zero3":
        out = {"weights": p_all * w / n + unit * w, "gradients": p * e / n + unit * e, "optimizer": opt / n}
    else:
        out = {"weights": p_all * w, "gradients": p * e * (2 if wl.ddp_bucket_copy else 1), "optimizer": opt}
    out["hook_extra"] = hook_extra_bytes(f, hook, world, languages, sharding)
    out["activations"] = activation_bytes(f, wl, w)
    out["total"] = sum(out.values())
    return out


# -- tables -------------------------------------------------------------------------------------------------------


@dataclass
class PlanRow:
    model: str
    params_b: float
    trainable_b: float
    buckets: int
    finetune: str
    sharding: str
    world: int
    languages: int
    method: str
    hook: str
    bytes_gb: float
    ratio_allreduce: float
    weights_allgather_gb: float
    extra_grad_mem_gb: float
    total_mem_gb: float
    runnable: str = "yes"
    notes: list[str] = field(default_factory=list)


def plan_rows(models: list[str], worlds: list[int], languages: int, bucket_cap_mb: float = 25.0,
              lora: dict | None = None, wl: Workload = Workload(), methods: dict | None = None) -> list[PlanRow]:
    lora = lora or {"rank": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                 "up_proj", "down_proj"]}
    rows = []
    for name in models:
        for finetune in ("full", "lora"):
            model = meta_model(name, lora=lora if finetune == "lora" else None)
            f = facts(model, name, bucket_cap_mb)
            for sharding in ("ddp", "zero3"):
                for n in worlds:
                    for method, (hook, _) in (methods or METHODS).items():
                        b = predict_bytes(f, hook, n, languages, sharding)
                        m = predict_memory(f, hook, n, languages, sharding, wl)
                        runnable = "yes"
                        rows.append(PlanRow(name, f.params_total / 1e9, f.params_trainable / 1e9, f.n_buckets,
                                            finetune, sharding, n, languages, method, hook, b["total"] / GB,
                                            b["ratio_allreduce"], b.get("weights_all_gather", 0.0) / GB,
                                            m["hook_extra"] / GB, m["total"] / GB, runnable))
    return rows


PAPER_MODELS = ("llama3.1-8b", "qwen3-8b")  # the base models the Bucket-Level MOO paper names


def closest_to_claim(rows: list[PlanRow]) -> dict[str, Any]:
    """The setting whose (bkmoo sharded, global MOO) pair of predicted totals is closest to the paper's 72 / 123 GB,
    among the paper's models when the table has them, and among runnable settings."""
    if any(r.model in PAPER_MODELS for r in rows):
        rows = [r for r in rows if r.model in PAPER_MODELS]
    rows = [r for r in rows if r.runnable == "yes"] or rows
    best = None
    index = {(r.model, r.finetune, r.sharding, r.world, r.hook): r for r in rows}
    for r in rows:
        if r.hook != "sharded":
            continue
        for global_hook in ("full_gather", "full"):
            g = index.get((r.model, r.finetune, r.sharding, r.world, global_hook))
            if g is None:
                continue
            err = abs(r.total_mem_gb - PAPER_CLAIM["bkmoo_gb"]) / PAPER_CLAIM["bkmoo_gb"] + \
                abs(g.total_mem_gb - PAPER_CLAIM["global_gb"]) / PAPER_CLAIM["global_gb"]
            if best is None or err < best[0]:
                best = (err, r, g)
    if best is None:
        return {}
    err, r, g = best
    return {"claim": PAPER_CLAIM, "model": r.model, "finetune": r.finetune, "sharding": r.sharding, "world": r.world,
            "languages": r.languages, "bkmoo_sharded_gb": round(r.total_mem_gb, 1), "global_hook": g.hook,
            "global_gb": round(g.total_mem_gb, 1), "relative_error_sum": round(err, 3)}


COLUMNS = ["model", "params_b", "trainable_b", "buckets", "finetune", "sharding", "world", "languages", "method",
           "hook", "bytes_gb", "ratio_allreduce", "weights_allgather_gb", "extra_grad_mem_gb", "total_mem_gb",
           "runnable"]


def to_csv(rows: list[PlanRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for r in rows:
        d = asdict(r)
        writer.writerow([round(d[c], 4) if isinstance(d[c], float) else d[c] for c in COLUMNS])
    return buf.getvalue()


def to_markdown(rows: list[PlanRow], claim: dict[str, Any], wl: Workload, bucket_cap_mb: float) -> str:
    lines = [
        "# Capacity plan — bytes and memory per rank and optimizer step",
        "",
        f"Generated by `polymoo plan` (harness/distributed/planner.py). Models built on the meta device from "
        f"harness/models/configs/*.json; DDP buckets at bucket_cap_mb={bucket_cap_mb} (ZeRO/FSDP units = the same "
        f"buckets); bf16 weights and gradients, AdamW with float32 states and master weights; per-rank micro-batch "
        f"{wl.batch}×{wl.seq} tokens, activation checkpointing {'on' if wl.checkpointing else 'off'}, flash attention "
        f"{'on' if wl.flash_attention else 'off'}; LoRA r=16 on all attention and MLP projections. K = "
        f"{rows[0].languages if rows else '?'} languages (each step every rank holds one language).",
        "",
        "Columns: `bytes GB` gradient-synchronisation bytes sent per rank per step (ZeRO rows exclude the weight "
        "all-gathers, shown apart); `× AR` ratio to a plain all-reduce of the same gradients; `extra GB` the hook's "
        "extra gradient memory; `total GB` weights + gradients + optimizer + hook extra + activations per rank.",
        "",
    ]
    if claim:
        lines += [
            "## The paper's public claim beside the closest predicted setting",
            "",
            "| | paper (public) | predicted |",
            "|---|---|---|",
            f"| Bucket-Level MOO | {claim['claim']['bkmoo_gb']:.0f} GB | {claim['bkmoo_sharded_gb']:.1f} GB (sharded hook) |",
            f"| global MOO | {claim['claim']['global_gb']:.0f} GB | {claim['global_gb']:.1f} GB ({claim['global_hook']}) |",
            "",
            f"Closest setting: {claim['model']}, {claim['finetune']} fine-tuning, {claim['sharding']}, N = "
            f"{claim['world']}, K = {claim['languages']}. The paper's bucket size, batch, sequence length and "
            "sharding are not public, so this is a plausibility check, not a reproduction.",
            "",
        ]
    models = list(dict.fromkeys(r.model for r in rows))
    for name in models:
        sub = [r for r in rows if r.model == name]
        r0 = sub[0]
        lines += [f"## {name} — {r0.params_b:.2f} B parameters, {r0.buckets} buckets (full FT)", ""]
        lines += ["| FT | sharding | N | method | bytes GB | × AR | extra GB | total GB | runnable |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sub:
            lines.append(f"| {r.finetune} | {r.sharding} | {r.world} | {r.method} | {r.bytes_gb:.2f} | "
                         f"{r.ratio_allreduce:.2f} | {r.extra_grad_mem_gb:.2f} | {r.total_mem_gb:.1f} | {r.runnable} |")
        lines.append("")
    return "\n".join(lines)


def write_plan(out_dir: Path, name: str, rows: list[PlanRow], wl: Workload, bucket_cap_mb: float) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    claim = closest_to_claim(rows)
    paths = {"md": out_dir / f"{name}.md", "csv": out_dir / f"{name}.csv", "json": out_dir / f"{name}_claim.json"}
    paths["md"].write_text(to_markdown(rows, claim, wl, bucket_cap_mb))
    paths["csv"].write_text(to_csv(rows))
    paths["json"].write_text(json.dumps(claim, indent=2))
    return paths
