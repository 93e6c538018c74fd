"""CONGRAD's full-scale suite resolves to LoRA with the JVP scorer (issue 11): no per-sample gradient over 8B
parameters, a trainable vector of ~0.5 % of the model; every method of the suite shares the LoRA (a fair comparison)."""

from __future__ import annotations

from harness.reproduce.run import load_paper_suite


def _congrad(suite):
    [spec] = [m for m in suite.methods if m.name == "congrad"]
    return spec.parsed_options


def test_full_scale_congrad_is_lora_with_the_jvp_scorer():
    suite = load_paper_suite("congrad", "full")
    options = _congrad(suite)
    assert (options.scorer, options.score) == ("jvp", "dot")
    lora = suite.train.lora
    assert lora is not None and lora.rank == 16
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert suite.train.lr == 5.0e-6  # LoRA's learning rate, not full fine-tuning's 5e-7
    assert {m.name for m in suite.methods} == {"self_rewarding", "random_filter", "congrad"}


def test_the_filter_built_from_the_suite_scores_by_jvp():
    from methods.congrad import make_filter

    congrad_filter = make_filter(_congrad(load_paper_suite("congrad", "full")), run=None)
    assert congrad_filter.scorer == "jvp" and congrad_filter.jvp_batch_size == 16


def test_lora_makes_the_trainable_vector_small_on_the_paper_models():
    """The adapters' size on the real Llama-3 8B shape (meta device, no weights): ~0.5 % of the parameters."""
    from harness.distributed.planner import facts, load_config, meta_model
    from harness.memory_guard import lora_dict

    lora = lora_dict(load_paper_suite("congrad", "full").train.lora)
    f = facts(meta_model(load_config("llama3.1-8b"), lora=lora), "llama3.1-8b")  # Llama-3(.1)-8B: the same shapes
    assert f.lora and 0.003 < f.params_trainable / f.params_total < 0.007
