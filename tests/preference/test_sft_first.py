"""`sft_first`: a preference method's loop starts from a joint SFT model of the same run (the self-rewarding recipe's
M1). The stage is exactly a joint SFT run; the loop then trains on from its weights; a resumed run starts over."""

from __future__ import annotations

import pytest

from tests.methods._tiny import RecordingTracker, max_diff, train

LOOP = {"iterations": 1, "prompts_per_language": 2, "responses_per_prompt": 3, "max_new_tokens": 6,
        "judge": "reference", "dpo_batch_size": 6, "win_rate_prompts_per_language": 0, "eval_each_iteration": False}
SFT_FIRST = {**LOOP, "sft_first": True, "dpo_lr": 1.0e-4}


def _stop_before_the_loop(monkeypatch):
    """The loop returns the model it was handed, untouched: what the SFT stage produced."""
    from harness.method import TrainOutcome
    from harness.preference.loop import SelfRewardingLoop

    monkeypatch.setattr(SelfRewardingLoop, "execute", lambda self: TrainOutcome(model=self.model, metrics={}))


def test_the_sft_stage_is_a_joint_sft_run_of_the_same_seed(tmp_path, monkeypatch):
    _stop_before_the_loop(monkeypatch)
    staged = train("self_rewarding", SFT_FIRST, tmp_path=tmp_path / "a", seed=1)
    joint = train("joint_sft", tmp_path=tmp_path / "b", seed=1)
    assert staged.changed()
    assert max_diff(staged.params(), joint.params()) == 0.0
    assert staged.metrics["train/final_loss"] == joint.metrics["train/final_loss"]
    assert staged.tracker.series("train/loss") == joint.tracker.series("train/loss")


def test_without_sft_first_the_loop_starts_from_the_base(tmp_path, monkeypatch):
    _stop_before_the_loop(monkeypatch)
    plain = train("self_rewarding", LOOP, tmp_path=tmp_path)
    assert not plain.changed() and "train/final_loss" not in plain.metrics


@pytest.mark.slow
def test_the_loop_trains_on_from_the_sft_model(tmp_path, monkeypatch):
    from harness.preference import loop as loop_module

    started_from = {}
    real_init = loop_module.SelfRewardingLoop.__init__

    def spy(self, run, options, pair_filter):
        started_from.update({n: p.detach().clone() for n, p in run.model.named_parameters()})
        real_init(self, run, options, pair_filter)

    monkeypatch.setattr(loop_module.SelfRewardingLoop, "__init__", spy)
    full = train("self_rewarding", SFT_FIRST, tmp_path=tmp_path / "a")
    joint = train("joint_sft", tmp_path=tmp_path / "b")
    assert max_diff(started_from, joint.params()) == 0.0  # the loop began where joint SFT ended
    assert full.metrics["dpo/steps"] >= 1 and "train/final_loss" in full.metrics
    assert max_diff(full.params(), joint.params()) > 0  # and DPO moved it on
    assert full.tracker.series("train/loss") and full.tracker.series("dpo/loss")


def test_sft_first_needs_its_own_dpo_learning_rate():
    from harness.registry import parse_options

    with pytest.raises(ValueError, match="dpo_lr: sft_first needs an explicit DPO learning rate"):
        parse_options("congrad", {"sft_first": True})
    assert parse_options("congrad", {"sft_first": True, "dpo_lr": 1e-4}).sft_first


class _ResumeTracker(RecordingTracker):
    def __init__(self) -> None:
        super().__init__()
        self.restarts: list[int] = []

    def restart_from_step(self, step: int) -> None:
        self.restarts.append(step)


def test_a_resumed_run_starts_over_from_the_base(tmp_path, monkeypatch):
    from dataclasses import replace

    from harness import executor
    from harness.config import MethodSpec
    from harness.method import RunContext
    from harness.models.loading import load_model
    from tests.methods._tiny import _data, make_suite

    seen_resume = []
    monkeypatch.setattr(executor, "train_gradient",
                        lambda run, combiner: (seen_resume.append(run.resume) or run.model, {"train/final_loss": 1.0}))
    suite = make_suite(method={"name": "self_rewarding", "options": SFT_FIRST})
    model, tok = load_model("llama", "tiny")
    tracker = _ResumeTracker()
    run = RunContext(suite=suite, method=MethodSpec(name="self_rewarding"), model_name="llama", seed=0, model=model,
                     tokenizer=tok, data=_data(suite.data, suite.languages.all), tracker=tracker,
                     run_dir=tmp_path, resume=True)
    stale = run.checkpoint_dir / "checkpoint-3"
    stale.mkdir(parents=True)
    after, metrics = executor.sft_stage(run)
    assert tracker.restarts == [0] and not stale.exists()  # the interrupted attempt's points and weights are gone
    assert seen_resume == [False] and not after.resume  # the stage and the loop run from the start
    assert metrics == {"train/final_loss": 1.0} and after == replace(run, resume=False)
