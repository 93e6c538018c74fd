"""A run's params hold the suite's settings without the lists of models, methods and seeds: a run logs its own
method's options (`run.method_options`), never those of the suite's other methods."""

from __future__ import annotations

from harness.tracking import config_changes, config_params


def test_params_leave_out_the_other_methods_options(make_suite):
    suite = make_suite(methods=[{"name": "joint_sft"}, {"name": "pcgrad", "options": {"reduction": "mean"}}],
                       seeds=[0, 1], models=["llama", "qwen3"])
    params = config_params(suite)
    assert params["train.steps"] == "4"
    assert not [k for k in params if k.split(".")[0] in ("methods", "models", "seeds")]
    assert not [v for v in params.values() if "reduction" in v or "pcgrad" in v]


def test_config_changes_name_old_and_new_values(make_suite):
    before = config_params(make_suite())
    after = make_suite(train={"lr": 5.0e-4}, seeds=[3])
    assert config_changes(after, before) == {"train.lr": ("0.001", "0.0005")}, "the seed is identity, not a setting"
