"""The public own-loop API (`harness.api`, docs/api.md): the single-process combiner equals the weightings applied by
hand, at every granularity it is the per-block solve, stateful weightings keep and checkpoint their state, and the
single-process example runs."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from harness import api
from harness.api import PerLanguageStep, combine, combine_step, gram, model_blocks, weighting
from harness.seeding import generator
from tests.conftest import REPO

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # DESIGN.md's golden Jacobian


class Linear3(nn.Module):
    """Parameters a (1,) and b (2,): loss_k = J_k · (a, b), so the per-language gradients are exactly J's rows."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))
        self.b = nn.Parameter(torch.zeros(2))

    def losses(self, jac: torch.Tensor) -> dict[str, torch.Tensor]:
        theta = torch.cat([self.a, self.b])
        return {lang: jac[k] @ theta for k, lang in enumerate(("en", "fr", "sw")[: len(jac)])}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _mlp_losses(model: nn.Module, step: int = 0) -> list[torch.Tensor]:
    """Three languages, each its own batch and forward (the combiner also works when they share one)."""
    out = []
    for k in range(3):
        g = torch.Generator().manual_seed(10 * k + step)
        x, y = torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g)
        out.append(nn.functional.mse_loss(model(x), y))
    return out


def _rows_by_hand(model: nn.Module, step: int = 0) -> torch.Tensor:
    params = list(model.parameters())
    rows = []
    for loss in _mlp_losses(model, step):
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_whole_mgda_is_the_golden_value():
    model = Linear3()
    result = combine_step(model, model.losses(J), "mgda", granularity="whole")
    assert torch.allclose(result.coefficients[0], torch.tensor([0.6, 0.4], dtype=torch.float64), atol=1e-12)
    by_hand = combine(J, weighting("mgda")(gram(J)))
    assert torch.allclose(_flat_grad(model), by_hand, atol=1e-6)
    assert torch.allclose(_flat_grad(model), torch.tensor([0.0, 1.0, 1.0]), atol=1e-6)
    assert result.languages == ["en", "fr"]
    assert result.metrics["grad_norm/en"] == pytest.approx(18**0.5)


@pytest.mark.parametrize("name", ["mean", "mgda", "pcgrad", "cagrad", "upgrad"])
def test_whole_equals_the_weighting_by_hand(name):
    model = _mlp()
    rows = _rows_by_hand(model, step=3)
    combiner = PerLanguageStep(model, name, granularity="whole", seed=7)
    combiner.step = 3
    combiner(_mlp_losses(model, step=3))
    c = weighting(name)(gram(rows), generator=generator(7, "pcgrad", 3, 0))  # PCGrad's order: (seed, step, block 0)
    assert torch.allclose(_flat_grad(model), combine(rows, c), atol=1e-6)
    assert combiner.step == 4


def test_tensor_granularity_is_one_solve_per_parameter():
    model = _mlp()
    rows = _rows_by_hand(model)
    result = combine_step(model, _mlp_losses(model), "mgda", granularity="tensor")
    fn, offset, expected = weighting("mgda"), 0, []
    for p in model.parameters():
        piece = rows[:, offset: offset + p.numel()]
        expected.append(combine(piece, fn(gram(piece))))
        offset += p.numel()
    assert len(result.blocks) == len(list(model.parameters()))
    assert torch.allclose(_flat_grad(model), torch.cat(expected), atol=1e-6)
    assert not torch.allclose(_flat_grad(model), combine(rows, fn(gram(rows))), atol=1e-4)  # not the whole solve


@pytest.mark.parametrize("granularity", ["whole", "ddp_bucket", "module", "tensor"])
def test_layout_is_harness_moo_blocks(granularity):
    model = _mlp()
    combiner = PerLanguageStep(model, granularity=granularity, bucket_cap_mb=0.0001)
    assert combiner.blocks == model_blocks(model, granularity, 0.0001)


def test_grad_is_overwritten_not_accumulated():
    model = Linear3()
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    combine_step(model, model.losses(J), "mean")
    assert torch.allclose(_flat_grad(model), torch.tensor([1.0, 1.0, 1.0]))


def test_stateful_weightings_keep_and_restore_their_state():
    model = _mlp()
    famo = PerLanguageStep(model, "famo", granularity="module")  # FAMO needs the losses: the combiner passes them
    for step in range(3):
        famo(_mlp_losses(model, step))
    saved = famo.state_dict()
    assert saved["step"] == 3 and saved["weighting"]["blocks"]
    twin = PerLanguageStep(_mlp(), "famo", granularity="module")
    twin.load_state_dict(saved)
    a, b = famo(_mlp_losses(model, 3)), twin(_mlp_losses(model, 3))
    for ca, cb in zip(a.coefficients, b.coefficients, strict=True):
        assert torch.allclose(ca, cb)


def test_bad_options_fail_early():
    with pytest.raises(ValueError, match="normalize"):
        PerLanguageStep(_mlp(), normalize="l1")
    with pytest.raises(ValueError, match="unknown weighting"):
        PerLanguageStep(_mlp(), "nope")
    with pytest.raises(ValueError, match="exactly one"):
        api._rank_languages(2, [0, 1], 2)
    with pytest.raises(ValueError, match="entries for 2 ranks"):
        api._rank_languages(2, [0, 1, 2], None)
    with pytest.raises(ValueError, match="at least one rank"):
        api._rank_languages(0, None, 2)
    assert api._rank_languages(3, None, 2) == (None, 2)  # uneven groups (2 + 1 ranks) are fine
    assert api._rank_languages(4, [0, 0, 1, 1], None) == ((0, 0, 1, 1), 2)


@pytest.mark.parametrize("granularity", ["whole", "tensor"])
def test_single_process_example_runs(granularity):
    spec = importlib.util.spec_from_file_location("own_loop_single", REPO / "docs" / "examples" / "own_loop_single.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(["--steps", "3", "--granularity", granularity])
    assert {f"loss/{lang}" for lang in example.LANGUAGES} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
