"""GPU smoke test: one real 8B configuration with random weights on one device; step time and peak memory of the
single-process methods beside the planner's prediction (issue 11, item 11).

    python -m harness.distributed.gpu_smoke --out results/bench/gpu_smoke.json          # what scripts/gpu_smoke.sh runs
    python -m harness.distributed.gpu_smoke --tiny --out /tmp/smoke.json                # the same path on CPU, seconds

Nothing is downloaded: the model is Llama-3.1-8B's public config (``harness/models/configs/llama3.1-8b.json``, via
the planner's ``load_config``) built with random weights on the device (``--tiny``: the same architecture and code with
hidden 128, 2 layers, vocabulary 2048). For joint SFT, global MGDA and Bucket-Level MOO (25 MB DDP buckets), with LoRA
(r = 16 on every projection) and with full fine-tuning, it runs warm-up + timed steps of the training path's pieces:
``harness.train.sft.language_losses`` (joint) or ``harness.train.grad_engine``'s ``loop`` rows combined per block
(``harness.train.bench.step_function``, the combiner's maths), gradient clipping, torch's AdamW, ``zero_grad(None)``.
Precision is the suite's full-scale default (``train.dtype: bfloat16``, master weights: float32 weights and AdamW
state, each forward autocast to bf16 as accelerate does under the HF Trainer); ``--no-master-weights`` is pure bf16.

Memory: ``torch.cuda.max_memory_allocated`` from before the model is built (weights included); on CPU the peak of live
tensor storages (:class:`harness.distributed.storage_peak.StoragePeak`), deterministic. A case that runs out of memory
is recorded as ``"fits": false`` with the error; every case carries the planner's prediction
(:func:`harness.distributed.planner.predict_single_process`) and the measured/predicted ratio. The JSON names the
device and the environment.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.perf import cpu_model

MODEL = "llama3.1-8b"
TINY = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048, "max_position_embeddings": 512}
METHODS = {"joint": ("joint", "joint"), "mgda": ("loop", "global"), "bkmoo": ("loop_buckets", "bucket")}
"""method -> (harness.train.bench route, the planner's single-process method)."""
LORA = {"rank": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"]}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class SmokeSettings:
    tiny: bool = False
    languages: int = 2
    rows_per_language: int = 1
    seq: int = 512
    steps: int = 2  # timed steps after one warm-up step
    dtype: str = "bfloat16"
    master_weights: bool = True
    bucket_cap_mb: float = 25.0
    methods: tuple[str, ...] = ("joint", "mgda", "bkmoo")
    finetunes: tuple[str, ...] = ("lora", "full")
    seed: int = 0


def model_config(tiny: bool) -> Any:
    """Llama-3.1-8B's config (catalog key ``llama3.1-8b``), or the same with the tiny shapes."""
    from harness.distributed.planner import load_config

    cfg = load_config(MODEL)
    for key, value in (TINY.items() if tiny else ()):
        setattr(cfg, key, value)
    cfg.use_cache = False
    return cfg


def _autocast_forward(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Each forward call under autocast with float32 outputs: what accelerate does to the model under the HF Trainer
    (``Accelerator.prepare_model``: ``convert_outputs_to_fp32(autocast(forward))``)."""
    from accelerate.utils import convert_outputs_to_fp32

    model.forward = convert_outputs_to_fp32(torch.autocast(device.type, dtype=dtype)(model.forward))


def build_model(s: SmokeSettings, finetune: str, device: torch.device) -> torch.nn.Module:
    """Random weights on ``device`` in the weights' dtype (float32 under master weights), LoRA adapters if asked."""
    from transformers import AutoModelForCausalLM

    mixed = s.master_weights and s.dtype != "float32"
    # as TrainConfig.weights_dtype: float32 master weights, except LoRA's frozen base (peft keeps adapters float32)
    weights = torch.float32 if mixed and finetune != "lora" else DTYPES[s.dtype]
    torch.manual_seed(s.seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(s.tiny), dtype=weights)
    if finetune == "lora":
        from harness.config import LoraConfig
        from harness.models.loading import apply_lora

        model = apply_lora(model, LoraConfig(rank=LORA["rank"], alpha=LORA["alpha"],
                                             target_modules=tuple(LORA["target_modules"])))
    if mixed:
        _autocast_forward(model, device, DTYPES[s.dtype])
    model.train()
    return model


def predicted(s: SmokeSettings, method: str, finetune: str, device: torch.device) -> dict[str, float]:
    """The planner's single-process prediction for this case (meta device, the same config)."""
    from harness.distributed.planner import Workload, facts, meta_model, predict_single_process

    f = facts(meta_model(model_config(s.tiny), lora=LORA if finetune == "lora" else None), MODEL, s.bucket_cap_mb)
    wl = Workload(batch=s.rows_per_language, seq=s.seq, dtype=s.dtype, master_weights=s.master_weights,
                  checkpointing=False, foreach=device.type == "cuda")
    return predict_single_process(f, METHODS[method][1], s.languages, wl)


class _Peak:
    """The device's peak memory since `start`: CUDA's allocator, or live tensor storages on CPU."""

    def __init__(self, device: torch.device):
        from harness.distributed.storage_peak import StoragePeak

        self.device = device
        self.storages = StoragePeak() if device.type == "cpu" else None

    def start(self) -> None:
        if self.storages is not None:
            self.storages.__enter__()
        else:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> int:
        if self.storages is not None:
            self.storages.__exit__(None, None, None)
            return self.storages.peak
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())

    @property
    def measure(self) -> str:
        return ("peak of live tensor storages (StoragePeak), weights included" if self.storages is not None else
                "torch.cuda.max_memory_allocated from before the model was built")


def _step_fn(s: SmokeSettings, method: str, model: torch.nn.Module, device: torch.device) -> Callable[[], None]:
    from harness.train.bench import random_batch, step_function

    inputs = {k: v.to(device) for k, v in random_batch(model.config.vocab_size, s.languages, s.rows_per_language,
                                                       s.seq, s.seed).items()}
    step = step_function(METHODS[method][0], model, inputs, s.languages, s.bucket_cap_mb)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def train_step() -> None:
        step()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_case(s: SmokeSettings, method: str, finetune: str, device: torch.device) -> dict[str, Any]:
    """Build, warm up, time; the peak over all steps (weights included). Out of memory -> ``fits: false``."""
    peak = _Peak(device)
    row: dict[str, Any] = {"method": method, "finetune": finetune, "memory_measure": peak.measure}
    peak.start()
    try:
        model = build_model(s, finetune, device)
        train_step = _step_fn(s, method, model, device)
        times = []
        for i in range(s.steps + 1):
            _sync(device)
            t0 = time.perf_counter()
            train_step()
            _sync(device)
            if i:  # the first step creates the optimizer state and pays for lazy initialisation
                times.append(time.perf_counter() - t0)
        row |= {"fits": True, "step_time_s": statistics.median(times), "trainable_params":
                sum(p.numel() for p in model.parameters() if p.requires_grad)}
    except torch.OutOfMemoryError as err:
        row |= {"fits": False, "step_time_s": None, "error": str(err).splitlines()[0]}
    finally:
        row["peak_mem_bytes"] = peak.stop()
        model = train_step = None  # noqa: F841 - free the case before the next one
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row | _beside_prediction(row, predicted(s, method, finetune, device))


def _beside_prediction(row: dict[str, Any], pred: dict[str, float]) -> dict[str, Any]:
    total = pred["total"]
    return {"peak_mem_gb": row["peak_mem_bytes"] / 1e9, "predicted_peak_bytes": total, "predicted_peak_gb": total / 1e9,
            "predicted_phases_gb": {k: v / 1e9 for k, v in pred.items() if k != "total"},
            "measured_over_predicted": row["peak_mem_bytes"] / total if row["fits"] and total else None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return "cpu"


def environment(device: torch.device) -> dict[str, Any]:
    from harness.tracking import package_versions

    env = {"machine": platform.machine(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "versions": package_versions(),
           "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        env |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "gpu_count": torch.cuda.device_count()}
    return env


def run(s: SmokeSettings, device: torch.device) -> dict[str, Any]:
    cfg = model_config(s.tiny)
    cases = [measure_case(s, method, finetune, device) for finetune in s.finetunes for method in s.methods]
    return {"device": device_name(device), "device_type": device.type, "environment": environment(device),
            "model": {"config": MODEL, "tiny": s.tiny, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                      "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "weights": "random"},
            "settings": asdict(s), "cases": cases}


def parse(argv: list[str] | None) -> tuple[SmokeSettings, torch.device, Path]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", "--dry-run", dest="tiny", action="store_true",
                   help="the tiny shapes on CPU (the test's path; seconds)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--languages", type=int, default=2)
    p.add_argument("--rows-per-language", type=int, default=1)
    p.add_argument("--seq", type=int, default=None, help="tokens per row (default 512; --tiny 64)")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    p.add_argument("--no-master-weights", action="store_true", help="pure low-precision weights and AdamW state")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--finetunes", nargs="+", choices=["lora", "full"], default=["lora", "full"])
    a = p.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not a.tiny else "cpu"))
    s = SmokeSettings(tiny=a.tiny, languages=a.languages, rows_per_language=a.rows_per_language,
                      seq=a.seq or (64 if a.tiny else 512), steps=a.steps, dtype=a.dtype,
                      master_weights=not a.no_master_weights, methods=tuple(a.methods), finetunes=tuple(a.finetunes))
    return s, device, a.out


def main(argv: list[str] | None = None) -> int:
    s, device, out = parse(argv)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device; run with --tiny for the CPU path")
        return 2
    record = run(s, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for c in record["cases"]:
        measured = f"{c['peak_mem_gb']:.2f} GB, {c['step_time_s']:.3f} s/step" if c["fits"] else "does not fit"
        print(f"{c['finetune']:>4} {c['method']:>5}: {measured} (planner {c['predicted_peak_gb']:.2f} GB)")
    print(f"written: {out} ({record['device']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
