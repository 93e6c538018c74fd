"""A stateful weighting's state is checkpointed beside the HF Trainer checkpoint and restored on resume: 4 steps
straight == 2 steps, a crash, a resume from checkpoint-2 and 2 more steps (same final weights), single process."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _final_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.parametrize("method", [{"name": "gradvac", "options": {"beta": 0.5}},
                                    {"name": "famo", "options": {"lr": 0.5}}], ids=["gradvac", "famo"])
def test_resume_restores_the_weighting_state(tmp_store, make_suite, monkeypatch, method):
    import torch

    from harness.faults import FAIL_ENV
    from harness.runner import run_dir_for, run_one
    from harness.train.sft import WEIGHTING_STATE_FILE

    straight = make_suite(train={"steps": 4, "save_every": 2, "save_model": True}, methods=[method],
                          eval={"heldout_loss": False, "tasks": []})
    run_one(straight, "llama", straight.methods[0], 0)
    crashed = make_suite(train={"steps": 4, "save_every": 2, "save_model": True}, methods=[method],
                          eval={"heldout_loss": False, "tasks": []}, suite={"name": "other"})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "2")
        with pytest.raises(RuntimeError):
            run_one(crashed, "llama", crashed.methods[0], 0)
    run_dir = run_dir_for(crashed, "llama", crashed.methods[0], 0)
    saved = torch.load(run_dir / "checkpoints" / "checkpoint-2" / WEIGHTING_STATE_FILE, weights_only=True)
    assert saved["weighting"] == method["name"] and set(saved["blocks"]) == {"0"}
    assert any(bool(v.abs().sum() > 0) for v in saved["blocks"]["0"].values()), "the state moved in 2 steps"
    run_one(crashed, "llama", crashed.methods[0], 0, resume=True)
    a = _final_weights(run_dir_for(straight, "llama", straight.methods[0], 0))
    b = _final_weights(run_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)


def test_resume_without_the_state_file_is_refused(tmp_path):
    from harness.moo.blocks import Block
    from harness.moo.combiners import CombinerSpec, GramCombiner
    from harness.train.sft import load_weighting_state

    (tmp_path / "checkpoint-2").mkdir()
    comb = GramCombiner([Block(0, ((0, 4),))], CombinerSpec("gradvac"))
    with pytest.raises(FileNotFoundError, match="polymoo_weighting_state.pt"):
        load_weighting_state(comb, str(tmp_path / "checkpoint-2"))
    load_weighting_state(GramCombiner([Block(0, ((0, 4),))], CombinerSpec("mgda")), str(tmp_path / "checkpoint-2"))
