"""Per-run plots for the runner: drawn from the run's own MLflow history, logged, and never raising."""

from __future__ import annotations

from harness.evaluate.run_plots import log_run_plots
from harness.tracking import NullTracker, Tracker, client, ensure_experiment


def test_run_plots_logged(make_suite, tmp_path):
    from tests._store import copy_store

    c = client(copy_store(tmp_path / "store"))
    tracker = Tracker(c, c.create_run(ensure_experiment(c, "polymoo/t")).info.run_id)
    for step in (1, 2, 3):
        tracker.log_metrics({"train/loss/en": 3.0 / step, "train/loss/fr": 3.5 / step, "moo/cos/en-fr": 0.1 - 0.1 * step},
                            step=step)
    metrics = {"eval/acc/en": 0.3, "eval/acc/fr": 0.2, "eval/acc/nl": 0.25, "eval/acc/seen_mean": 0.25,
               "eval/loss/en": 2.0}
    paths = log_run_plots(tracker, make_suite(), metrics, tmp_path / "plots")
    assert {p.name for p in paths} == {"eval_acc.png", "eval_loss.png", "training_curves.png", "conflict_heatmap.png"}
    assert {a.path for a in c.list_artifacts(tracker.run_id, "plots")} == {f"plots/{p.name}" for p in paths}


def test_run_plots_never_raise(make_suite, tmp_path):
    assert [p.name for p in log_run_plots(NullTracker(), make_suite(), {}, tmp_path)] == []

    class Broken(NullTracker):
        @property
        def client(self):
            raise RuntimeError("store down")

        @client.setter
        def client(self, value):
            pass

    assert log_run_plots(Broken(), make_suite(), {"eval/acc/en": 0.1}, tmp_path) == []
