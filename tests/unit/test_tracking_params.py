"""A run's params hold the suite's settings without the lists of models, methods and seeds: a run logs its own
method's options (`run.method_options`), never those of the suite's other methods."""

from __future__ import annotations

import pytest

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


class _RacingClient:
    """An MLflow client whose first `log_inputs` loses the race for the dataset row (another run inserted it)."""

    def __init__(self, failures: int, message: str = "UNIQUE constraint failed: datasets.experiment_id"):
        self.failures, self.message, self.logged = failures, message, []

    def log_inputs(self, run_id, inputs):
        if self.failures:
            self.failures -= 1
            raise RuntimeError(f"(sqlite3.IntegrityError) {self.message}")
        self.logged.append((run_id, inputs))


def test_a_dataset_row_inserted_by_a_concurrent_run_is_linked_not_fatal():
    from harness.tracking import Tracker

    racing = _RacingClient(failures=1)
    Tracker(racing, "run-1").log_dataset("train", "abc123", {"source": "x"}, {"rows": 3}, "training")
    assert len(racing.logged) == 1 and racing.logged[0][0] == "run-1"


def test_other_dataset_errors_and_repeated_losses_are_raised():
    from harness.tracking import Tracker

    with pytest.raises(RuntimeError, match="disk I/O"):
        Tracker(_RacingClient(1, "disk I/O error"), "r").log_dataset("t", "d", {}, {}, "training")
    with pytest.raises(RuntimeError, match="UNIQUE"):
        Tracker(_RacingClient(3), "r").log_dataset("t", "d", {}, {}, "training")
