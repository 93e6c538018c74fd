"""The single-process memory guard: K float32 per-language gradient rows that do not fit the device are refused before
any model loads, with the planner's numbers and the alternatives (LoRA, the distributed engines); the device's
capacity is injected (--gpu-mem, a fake CUDA or host RAM), so the refusal is deterministic on any machine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.check import check_single_process
from harness.cli import main
from harness.memory_guard import GB, Capacity, device_capacity
from harness.suite import load_suite

pytestmark = pytest.mark.slow  # 7B configs built on the meta device, transformers and peft imported: ~20 s

MISTRAL_MGDA = ["models=[mistral-7b]", "methods=[{name: mgda}]"]


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt to train (hence to load a model) fails the test."""
    import harness.runner

    def refuse(*args, **kwargs):
        raise AssertionError("the guard must refuse before any model loads")

    monkeypatch.setattr(harness.runner, "run_suite", refuse)


def test_capacity_is_stated_or_measured_on_the_device_the_run_uses(monkeypatch):
    import psutil
    import torch

    assert device_capacity(80) == Capacity(80e9, "--gpu-mem 80")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=12e9))
    assert device_capacity(None) == Capacity(12e9, "host RAM available (a CPU run)", host=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (70e9, 80e9))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cap = device_capacity(None)
    assert cap.bytes == 70e9 and cap.source.startswith("free on cuda:0 (of 80.0 GB")


def test_refusal_gives_the_planners_numbers_and_the_alternatives():
    from harness.distributed.planner import Workload, facts, meta_model, predict_single_process

    suite = load_suite("suites/bkmoo_paper.yaml", MISTRAL_MGDA)
    [finding] = check_single_process(suite, Capacity(80e9, "stated"))
    need = predict_single_process(facts(meta_model("mistral-7b"), "mistral-7b"), "global", 6,
                                  Workload.from_train(suite.train))
    assert need["language_rows"] == 6 * need["gradients"]  # six float32 rows (mixed precision: .grad is float32 too)
    msg = finding.message
    assert finding.status == "fail" and f"{need['total'] / GB:.1f} GB predicted peak by the planner" in msg
    assert f"6 float32 per-language gradient rows {need['language_rows'] / GB:.1f} GB" in msg
    assert "of 80.0 GB (stated): does not fit" in msg
    assert "LoRA (--set 'train.lora={rank: 16" in msg and "GB in one process" in msg
    assert "polymoo run SUITE --nproc 8, DDP hook full:" in msg and "GB per rank" in msg
    [fits] = check_single_process(suite, Capacity(need["total"] + 1, "stated"))
    assert fits.status == "ok"


def test_lora_fits_where_full_fine_tuning_does_not():
    lora = "train.lora={rank: 16, alpha: 32, target_modules: [q_proj, k_proj, v_proj, o_proj]}"
    [finding] = check_single_process(load_suite("suites/bkmoo_paper.yaml", [*MISTRAL_MGDA, lora]),
                                     Capacity(80e9, "stated"))
    assert finding.status == "ok", finding.message


def test_nothing_to_guard_at_tiny_scale_or_without_gradient_methods():
    [tiny] = check_single_process(load_suite("suites/quickstart.yaml"), Capacity(1.0, "one byte"))
    assert tiny.status == "skip" and "tiny scale" in tiny.message
    [congrad] = check_single_process(load_suite("suites/congrad_paper.yaml"), Capacity(1.0, "one byte"))
    assert congrad.status == "skip" and "no gradient method" in congrad.message


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["run", "suites/bkmoo_paper.yaml", "--nproc", "1", "--set", MISTRAL_MGDA[0], "--set",
                 MISTRAL_MGDA[1], "--set", "data.path=tests/fixtures/chatterbot_slice.jsonl", "--set",
                 "eval.lm_eval_tasks={}", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_polymoo_run_refuses_before_loading_with_a_stated_card(capsys, no_training):
    code, text = _run(capsys, "--gpu-mem", "80")
    assert code == 2 and "Traceback" not in text
    assert "polymoo run: memory: mistral-7b / mgda (one process)" in text and "of 80.0 GB (--gpu-mem 80)" in text
    assert "nothing was loaded" in text


def test_polymoo_run_on_cpu_checks_host_ram(capsys, no_training, monkeypatch):
    import psutil
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=64e9))
    code, text = _run(capsys)
    assert code == 2 and "of 64.0 GB (host RAM available (a CPU run)): does not fit" in text


def test_a_cpu_run_is_planned_with_two_languages_in_flight():
    """On the host the loop runs two languages' passes at a time (harness.train.language_workers): the planner's
    single-process peak holds two passes beside the K rows; on a GPU one."""
    from harness.distributed.planner import Workload, predict_single_process
    from harness.memory_guard import _FactsCache

    facts = _FactsCache().get("llama3.1-8b", None)
    one = predict_single_process(facts, "bucket", 4, Workload(parallel_languages=1))
    two = predict_single_process(facts, "bucket", 4, Workload(parallel_languages=2))
    pass_bytes = one["peak_forward"] - (one["weights"] + one["optimizer"] + one["language_rows"])
    assert pass_bytes >= one["activations"] > 0
    assert two["peak_forward"] - one["peak_forward"] == pytest.approx(pass_bytes)
    assert two["language_rows"] == one["language_rows"]
