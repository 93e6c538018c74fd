"""The planner's DDP measurement worker: the DDP engine (`DistEngine`) with a polymoo hook on gloo ranks, a tiny
Llama built from Llama-3.1-8B's config (`harness.distributed.gpu_smoke.model_config(tiny=True)`); per run rank 0
writes the bytes the accounting counted on the last step and each rank's peak of live tensor storages
(`harness.distributed.storage_peak.StoragePeak`, entered before the model is built, so weights, DDP's bucket buffers,
optimizer state, activations, autocast copies and the hook's buffers are all in it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _model(dtype: str, master_weights: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from harness.distributed.gpu_smoke import model_config

    weights = torch.float32 if (master_weights or dtype == "float32") else getattr(torch, dtype)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(model_config(tiny=True), dtype=weights)


def planner_worker(rank: int, world: int, out_dir: str, runs: list[dict[str, Any]]) -> None:
    from harness.config import TrainConfig
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import DistEngine, EngineConfig, token_mean_loss
    from harness.distributed.storage_peak import StoragePeak

    for run in runs:
        train = TrainConfig(steps=run["steps"], lr=1e-4, schedule="constant", dtype=run["dtype"],
                            master_weights=run["master_weights"], optimizer="adamw_torch", weight_decay=0.0)
        cfg = EngineConfig(hook=run["hook"], weighting="mgda", bucket_cap_mb=run["bucket_cap_mb"], warmup_steps=1)
        with StoragePeak(follow_callbacks=True) as peak:
            model = _model(run["dtype"], run["master_weights"])
            batch_fn = synthetic_batch_fn(model.config.vocab_size, run["seq"], run["per_rank"], 0, run["languages"])
            engine = DistEngine(model, cfg, train, run["languages"], batch_fn, token_mean_loss)
            rows = [engine.step(s) for s in range(run["steps"])]
        peaks: list[Any] = [None] * world
        dist.all_gather_object(peaks, peak.peak)
        if rank == 0:
            buckets = [sum(dict(model.named_parameters())[n].numel() for n in names)
                       for _, names in sorted(engine.state.buckets.items())]
            record = {"bytes_per_step": rows[-1]["dist/bytes_per_step"], "peaks": peaks, "bucket_numel": buckets,
                      "bytes": {k: v for k, v in rows[-1].items() if k.startswith("dist/bytes/")}}
            (Path(out_dir) / f"{run['name']}.json").write_text(json.dumps(record))
        del engine, model
