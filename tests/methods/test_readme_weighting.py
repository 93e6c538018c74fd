"""The README's "Adding a method" example stays true: the one-file stateful weighting `methods/loss_ema.py` shown
there registers, trains through the single-process path, receives the per-language losses, and its state is saved
beside the checkpoint."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from tests.conftest import REPO


def _example_source() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(# methods/loss_ema\.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "README: exactly one ```python block starting with '# methods/loss_ema.py'"
    return blocks[0]


@pytest.fixture
def loss_ema(tmp_path, monkeypatch):
    """The README example imported as a method module, registered in copies of the registries (undone after)."""
    import harness.registry as registry
    from harness.moo.weightings import STATEFUL_WEIGHTINGS

    registry.available_methods()  # discover the built-in methods before copying the registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    path = tmp_path / "loss_ema.py"
    path.write_text(_example_source())
    spec = importlib.util.spec_from_file_location("loss_ema_readme_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    STATEFUL_WEIGHTINGS.pop("loss_ema", None)


def test_the_weighting_follows_the_stateful_protocol(loss_ema):
    from harness.moo.weightings import StatefulWeighting

    w = loss_ema.LossEMA(beta=0.5)
    assert isinstance(w, StatefulWeighting) and w.needs_losses
    state = w.init_state(2)
    c, state = w(torch.eye(2), [1.0, 3.0], state)
    torch.testing.assert_close(c, torch.tensor([0.75, 0.25], dtype=torch.float64))
    c, new = w(torch.eye(2), [3.0, 3.0], state)
    torch.testing.assert_close(new["ema"], torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert state["ema"].tolist() == [1.0, 3.0], "the call must not mutate its input state"


@pytest.mark.slow
def test_the_example_trains_and_checkpoints_its_state(loss_ema, tmp_path):
    from harness.registry import get_method
    from harness.train.sft import WEIGHTING_STATE_FILE
    from tests.methods._tiny import train

    assert get_method("loss_ema").family == "baseline"
    out = train("loss_ema", {"beta": 0.5}, tmp_path=tmp_path, overrides={"train": {"steps": 2, "save_every": 2}})
    assert out.changed()
    saved = torch.load(tmp_path / "loss_ema-0" / "checkpoints" / "checkpoint-2" / WEIGHTING_STATE_FILE,
                       weights_only=True)
    assert saved["weighting"] == "loss_ema"
    ema = saved["blocks"]["0"]["ema"]
    assert ema.shape == (3,) and bool((ema > 0).all()), "the trainer handed the per-language losses to the state"
