"""The FSDP2 engine's static parts, without processes: its units (the buckets of the simulation), what it refuses,
and the config key that selects it (config hashes unchanged at the default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import LoraConfig, TrainConfig
from harness.distributed.engine import EngineConfig
from harness.distributed.fsdp2 import check_fsdp2, fsdp_units, unit_plan
from harness.distributed.workers import micro_llama


def test_fsdp_units_are_the_decoder_blocks_then_the_root():
    model = micro_llama(layers=3)
    units = fsdp_units(model)
    assert [u.path for u in units] == ["model.layers.0", "model.layers.1", "model.layers.2", ""]
    assert all(n.startswith(f"model.layers.{i}.") for i in range(3) for n in units[i].names)
    assert set(units[-1].names) == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    plan = unit_plan(model)
    assert [b.index for b in plan] == [0, 1, 2, 3]
    assert sum(b.numel for b in plan) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("cfg", "train", "needle"), [
    (EngineConfig(hook="allgather"), TrainConfig(), "'allgather' is a DDP-only hook"),
    (EngineConfig(hook="full_gather"), TrainConfig(), "'full_gather' is a DDP-only hook"),
    (EngineConfig(hook="sharded", granularity="module"), TrainConfig(), "granularity 'module'"),
    (EngineConfig(hook="sharded"), TrainConfig(lora=LoraConfig()), "train.lora is set"),
    (EngineConfig(hook="sharded"), TrainConfig(dtype="bfloat16", master_weights=False), "master_weights: false"),
], ids=["allgather", "full_gather", "module", "lora", "pure_bf16"])
def test_fsdp2_refuses_what_it_does_not_run_naming_the_fix(cfg, train, needle):
    with pytest.raises(ValueError, match="distributed.engine") as err:
        check_fsdp2(cfg, train)
    assert needle in str(err.value)


def test_fsdp2_accepts_its_three_modes():
    for cfg in (EngineConfig(hook="mean"), EngineConfig(hook="sharded"), EngineConfig(hook="full", granularity="whole")):
        check_fsdp2(cfg, TrainConfig(dtype="bfloat16"))


def test_engine_key_keeps_the_default_config_hash():
    from harness.suite import load_suite

    suite = str(Path(__file__).resolve().parents[2] / "suites" / "distributed.yaml")
    default = load_suite(suite, [])
    explicit = load_suite(suite, ["distributed.engine=ddp"])
    fsdp2 = load_suite(suite, ["distributed.engine=fsdp2"])
    assert "engine" not in default.resolved()["distributed"]
    assert default.config_hash() == explicit.config_hash() != fsdp2.config_hash()
    assert fsdp2.distributed.engine == "fsdp2"
