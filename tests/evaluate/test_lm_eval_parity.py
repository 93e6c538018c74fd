"""The harness's lm-eval path gives the numbers `lm_eval` gives on its own, on the same checkpoint and task files.

Harness: the checkpoint loaded by `harness.evaluate.checkpoint.load_checkpoint`, evaluated in memory through
`HFLM` (what the runner does after training). Direct: `lm_eval.simple_evaluate(model="hf",
model_args="pretrained=<checkpoint>")` with a TaskManager on the same generated task folder.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

LANGS = ["en", "fr"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny twin, perturbed so that it is not the cached init (a 'trained' checkpoint)."""
    import torch

    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("ckpt") / "final"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_harness_equals_lm_eval_cli_path(checkpoint, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.evaluate.checkpoint import load_checkpoint
    from harness.evaluate.mc import accuracies, run_lm_eval, write_tasks

    task_dir = tmp_path / "tasks"
    mapping = write_tasks(LANGS, task_dir, n_items=12)
    model, tok, _ = load_checkpoint(checkpoint)
    ours = run_lm_eval(model, tok, list(mapping), task_dir, batch_size=8)
    direct = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={checkpoint},dtype=float32",
                                     tasks=list(mapping), batch_size=8, device="cpu", bootstrap_iters=100,
                                     task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    for task in mapping:
        for key in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
            assert ours["results"][task][key] == pytest.approx(direct["results"][task][key], abs=1e-12), (task, key)
    # the group file aggregates the same per-language tasks; each score carries lm-eval's stderr and the chance level
    scores = accuracies(ours, mapping)
    assert set(scores) == {f"eval/acc/{lang}{part}" for lang in LANGS for part in ("", "/stderr", "/chance")}
    for task, lang in mapping.items():
        assert scores[f"eval/acc/{lang}/stderr"] == direct["results"][task]["acc_stderr,none"] > 0
        assert scores[f"eval/acc/{lang}/chance"] == pytest.approx(0.25)  # the CLDR items have 4 choices
    assert (task_dir / "_polymoo_babel_mc.yaml").exists()
