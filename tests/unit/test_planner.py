"""Capacity planner: the base LLMs' configs on the meta device, and the planner's formulas against what the CPU runs
measured (results/bench/comm_*.json, written by tests/bench/test_comm_bench.py): bytes within 5 %, peak memory
within 20 %."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from harness.distributed.planner import (
    METHODS,
    Workload,
    bucket_numel_at,
    closest_to_claim,
    facts,
    meta_model,
    plan_rows,
    predict_bytes,
    predict_memory,
    predict_single_process,
    to_csv,
)

BENCH = Path(__file__).resolve().parents[2] / "results" / "bench"
RECORDS = sorted(BENCH.glob("comm_*_n*.json"))

# public parameter counts (model cards): Llama-3.1-8B 8.03 B, Qwen3-8B-Base 8.19 B, Gemma-2-9B 9.24 B, Mistral-7B 7.25 B
EXPECTED_PARAMS = {"llama3.1-8b": 8.03e9, "qwen3-8b": 8.19e9, "gemma2-9b": 9.24e9, "mistral-7b": 7.25e9}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_base_llm_configs_on_meta(name):
    model = meta_model(name)
    f = facts(model, name, 25.0)
    assert f.params_total == pytest.approx(EXPECTED_PARAMS[name], rel=0.01)
    assert next(model.parameters()).is_meta
    assert sum(f.bucket_numel) == f.params_trainable
    assert f.n_buckets > 100  # 25 MiB buckets of bf16 gradients over ~8 B parameters


@lru_cache(maxsize=4)
def _bench_model(vocab: int, hidden: int, layers: int, intermediate: int):
    from harness.distributed.workers import micro_llama

    return micro_llama(vocab=vocab, hidden=hidden, layers=layers, intermediate=intermediate)


@pytest.mark.skipif(not RECORDS, reason="no benchmark records under results/bench (run pytest -m bench)")
@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_planner_predicts_measured_bytes_and_memory(path):
    r = json.loads(path.read_text())
    m = r["model"]
    model = _bench_model(m["vocab"], m["hidden"], m["layers"], m["intermediate"])
    f = facts(model, "bench", r["bucket_cap_mb"])  # the planner's own bucket plan, not the recorded one
    elem = r["model"]["grad_bytes"] // r["model"]["params"]
    if r["bucket_numel"]:  # the buckets at the run's gradient dtype (a 25 MB cap holds twice the bf16 elements)
        planned = bucket_numel_at(f, elem)
        assert sorted(planned) == sorted(r["bucket_numel"]) or len(planned) == len(r["bucket_numel"])
    master = elem == 4  # float32 gradients: float32 or mixed precision
    wl = Workload(batch=r["batch"]["per_rank"], seq=r["batch"]["seq_len"], checkpointing=False,
                  dtype=r.get("dtype", "float32"), master_weights=master, foreach=False)  # AdamW on CPU: per tensor
    b = predict_bytes(f, r["hook"], r["world_size"], r["languages"], wl=wl)
    assert abs(b["total"] - r["bytes_per_step"]) <= 0.05 * r["bytes_per_step"]
    mem = predict_memory(f, r["hook"], r["world_size"], r["languages"], wl=wl)["total"] / 2**20
    assert abs(mem - r["peak_mem_delta_mb"]) <= 0.20 * r["peak_mem_delta_mb"], (mem, r["peak_mem_delta_mb"])


def test_byte_formulas_ratios():
    model = _bench_model(512, 64, 2, 128)
    f = facts(model, "small", 0.05)
    for n in (2, 4, 8):
        assert predict_bytes(f, "mean", n, 2)["ratio_allreduce"] == pytest.approx(1.0)
        assert predict_bytes(f, "allgather", n, 2)["ratio_allreduce"] == pytest.approx(n / 2)
        assert predict_bytes(f, "full_gather", n, 2)["ratio_allreduce"] == pytest.approx(n / 2)
        sharded = predict_bytes(f, "sharded", n, 2)
        assert sharded["ratio_allreduce"] == pytest.approx(1.0, rel=0.05)
        zero = predict_bytes(f, "sharded", n, 2, "zero3")  # the combined slice is the shard: reduce-scatter cost
        assert zero["total"] < sharded["total"] and "weights_all_gather" in zero
    mems = {h: predict_memory(f, h, 4, 2)["peak_backward"] for h in ("mean", "sharded", "full", "full_gather")}
    assert mems["mean"] < mems["sharded"] < mems["full_gather"] and mems["full"] < mems["full_gather"]


def test_plan_rows_table_and_claim():
    rows = plan_rows(["mistral-7b"], [8], 8, 25.0, wl=Workload(seq=1024))
    assert len(rows) == 2 * 2 * len(METHODS)  # full/LoRA × DDP/ZeRO × methods
    assert {r.finetune for r in rows} == {"full", "lora"}
    lora = [r for r in rows if r.finetune == "lora"]
    assert all(r.trainable_b < 0.1 for r in lora)
    claim = closest_to_claim(rows)
    assert claim["claim"]["bkmoo_gb"] == 72 and claim["claim"]["global_gb"] == 123
    assert to_csv(rows).splitlines()[0].startswith("model,params_b")


def test_precision_sets_bytes_per_parameter_and_the_communicated_dtype():
    """train.dtype bfloat16 with master weights: float32 weights, .grad, DDP buckets and two AdamW states (20 bytes
    per parameter, float32 on the wire); pure bf16: half of each."""
    f = facts(meta_model("llama3.1-8b"), "llama3.1-8b")  # built in bf16, as the planner does
    held = ("weights", "gradients", "ddp_buckets", "optimizer")
    for master, per_param in ((True, 20), (False, 10)):
        wl = Workload(dtype="bfloat16", master_weights=master)
        mem = predict_memory(f, "mean", 8, 6, wl=wl)
        assert sum(mem[k] for k in held) / f.params_total == pytest.approx(per_param, rel=1e-3)
        assert mem["autocast_copies"] == (f.cast_numel * 2 if master else 0)
    mixed = predict_bytes(f, "mean", 8, 6, wl=Workload(dtype="bfloat16", master_weights=True))["total"]
    pure = predict_bytes(f, "mean", 8, 6, wl=Workload(dtype="bfloat16", master_weights=False))["total"]
    assert mixed == pytest.approx(2 * pure, rel=0.01)


def test_buckets_follow_the_gradient_dtype():
    """DDP's cap is in bytes: the planner re-splits its buckets for the run's gradient dtype, as DDP would."""
    from harness.buckets import bucket_plan
    from harness.distributed.workers import micro_llama

    bf16 = micro_llama(vocab=512, hidden=64, layers=2, intermediate=128, dtype=torch.bfloat16)
    f = facts(_bench_model(512, 64, 2, 128), "small", 0.05)
    assert bucket_numel_at(f, 2) == tuple(b.numel for b in bucket_plan(bf16, 0.05))
    assert bucket_numel_at(f, 4) == f.bucket_numel


def test_single_process_gradient_methods_hold_k_rows_the_direction_and_grad():
    """The loop route fills its K float32 rows in place (no stacked copy): K·P·4, then the direction and ``.grad``
    (float32 here) at the combination, above weights and AdamW state."""
    f = facts(meta_model("mistral-7b"), "mistral-7b")
    wl = Workload(dtype="float32", checkpointing=True, seq=128)
    joint, mgda = predict_single_process(f, "joint", 6, wl), predict_single_process(f, "global", 6, wl)
    assert mgda["total"] - (mgda["weights"] + mgda["optimizer"]) == pytest.approx((6 + 2) * f.params_trainable * 4)
    assert joint["total"] < mgda["total"]
