"""`polymoo check`: the paper suites' world, lm-eval task names, data and memory, checked before any model loads;
each failure is one line naming the key and the fix, exit 2, no traceback."""

from __future__ import annotations

import pytest

from harness.cli import main

pytestmark = pytest.mark.slow  # lm-eval's task index takes seconds


def _check(capsys, *argv: str) -> tuple[int, str]:
    code = main(["check", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_paper_suite_checks_world_and_task_names(capsys):
    code, text = _check(capsys, "suites/bkmoo_paper.yaml", "--nproc", "8",
                        "--set", "data.path=tests/fixtures/chatterbot_slice.jsonl")
    assert code == 0, text
    assert "N=8 ranks, K=6 seen languages: groups en:2, fr:2, de:1, es:1, ru:1, zh:1" in text
    assert "eval.lm_eval_tasks.paws_en: an lm-eval task" in text and "ready to launch" in text
    code, text = _check(capsys, "suites/bkmoo_paper.yaml", "--nproc", "8",
                        "--set", "data.path=tests/fixtures/chatterbot_slice.jsonl",
                        "--set", "eval.lm_eval_tasks.pawsx_en=en")
    assert code == 2 and "Traceback" not in text
    assert "eval.lm_eval_tasks.pawsx_en: no such lm-eval task (did you mean 'paws_en'?)" in text


def test_missing_data_and_bad_rows_are_named(capsys, tmp_path):
    code, text = _check(capsys, "suites/congrad_paper.yaml", "--nproc", "8")
    assert code == 2 and "data.path data/congrad_prompts.jsonl: no such file" in text
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"language": "en", "prompt": "hi"}\n')
    code, text = _check(capsys, "suites/congrad_paper.yaml", "--set", f"data.path={bad}")
    assert code == 2 and "rows without field(s) response" in text


def test_stateful_weighting_on_too_few_ranks_fails(capsys):
    code, text = _check(capsys, "suites/distributed.yaml", "--nproc", "1", "--set", "methods=[{name: famo}]")
    assert code == 0, text  # one process: nothing to refuse
    code, text = _check(capsys, "suites/quickstart.yaml", "--nproc", "2", "--set", "methods=[{name: gradvac}]")
    assert code == 2 and "gradvac: stateful weighting 'gradvac' cannot run on 2 ranks" in text
    assert "use N >= 6 ranks" in text


def test_memory_fit_from_the_planner(capsys):
    args = ("suites/bkmoo_paper.yaml", "--set", "models=[mistral-7b]", "--set", "methods=[{name: joint_sft}, "
            "{name: mgda}]", "--set", "data.path=tests/fixtures/chatterbot_slice.jsonl")
    code, text = _check(capsys, *args, "--nproc", "8", "--gpu-mem", "80")
    assert code == 2 and "mistral-7b / mgda (DDP hook full)" in text and "alternatives: train.lora" in text
    code, text = _check(capsys, *args, "--nproc", "1", "--gpu-mem", "80")
    assert "mistral-7b / mgda (one process): " in text and "6 float32 per-language gradient rows" in text
    code, text = _check(capsys, *args, "--nproc", "8", "--gpu-mem", "400")
    assert code == 0 and "of 400 GB" in text


def test_fsdp2_refuses_ddp_only_methods_before_launch(capsys):
    """Under distributed.engine fsdp2 a DDP-only hook is a check failure naming the method and the fix, so a suite
    run does not end with FAILED runs; the methods FSDP2 runs pass."""
    code, text = _check(capsys, "suites/distributed.yaml", "--nproc", "2", "--set", "distributed.engine=fsdp2")
    assert code == 2 and "Traceback" not in text
    assert "bkmoo-mgda-allgather: distributed.engine fsdp2 runs hooks" in text and "'allgather' is a DDP-only" in text
    assert "bkmoo-mgda: fsdp2 runs it (hook sharded)" in text and "mgda: fsdp2 runs it (hook full)" in text
    code, text = _check(capsys, "suites/distributed.yaml", "--nproc", "2", "--set", "distributed.engine=fsdp2",
                        "--set", "train.lora={rank: 4}")
    assert code == 2 and "train.lora is set" in text
    code, text = _check(capsys, "suites/distributed.yaml", "--nproc", "2")
    assert code == 0 and "fsdp2" not in text  # the DDP engine runs every hook
