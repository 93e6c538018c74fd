"""Golden values (DESIGN.md, Idea 1), the registry's validation, and the gram/combine helpers."""

from __future__ import annotations

import pytest
import torch

from harness.moo import WEIGHTINGS, available_weightings, combine, gram, min_norm_residual, weighting

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)

# name, options, weights (None: not listed), direction
GOLDEN = [
    ("mean", {}, (0.5, 0.5), (1.0, 1.0, 1.0)),
    ("mgda", {}, (0.6, 0.4), (0.0, 1.0, 1.0)),
    ("pcgrad", {}, (2.2222, 1.5789), (0.5848, 3.8012, 3.8012)),
    ("cagrad", {"c": 0.5, "rescale": 0}, (0.7041, 0.5), (0.1835, 1.2041, 1.2041)),
    ("cagrad", {"c": 0.5, "rescale": 1}, None, (0.1468, 0.9633, 0.9633)),
    ("imtl_g", {}, (0.5923, 0.4077), (0.0767, 1.0, 1.0)),
    ("upgrad", {}, (1.1109, 0.7894), (0.2929, 1.9004, 1.9004)),
]


@pytest.mark.parametrize(("name", "options", "weights", "direction"), GOLDEN, ids=lambda v: str(v))
def test_golden(name, options, weights, direction):
    g = gram(J)
    assert torch.equal(g, torch.tensor([[18.0, -22.0], [-22.0, 38.0]], dtype=torch.float64))
    c = weighting(name, **options)(g)
    assert c.dtype == torch.float64 and c.shape == (2,)
    if weights is not None:
        torch.testing.assert_close(c, torch.tensor(weights, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(combine(J, c), torch.tensor(direction, dtype=torch.float64), atol=1e-4, rtol=0)


def test_golden_mgda_is_exact():
    c = weighting("mgda")(gram(J))
    assert torch.equal(c, torch.tensor([0.6, 0.4], dtype=torch.float64)) or torch.allclose(
        c, c.new_tensor([0.6, 0.4]), atol=1e-15
    )
    assert min_norm_residual(gram(J)) == pytest.approx(2**0.5, abs=1e-12)


def test_cagrad_rescale2_and_pcgrad_mean():
    g = gram(J)
    c0 = weighting("cagrad", c=0.5, rescale=0)(g)
    torch.testing.assert_close(weighting("cagrad", c=0.5, rescale=2)(g), c0 / 1.5)
    torch.testing.assert_close(weighting("pcgrad", reduction="mean")(g), weighting("pcgrad")(g) / 2)


def test_registry():
    assert available_weightings() == sorted(WEIGHTINGS) == [
        "aligned_mtl", "cagrad", "imtl_g", "mean", "mgda", "pcgrad", "upgrad"
    ]


@pytest.mark.parametrize(
    ("name", "options", "fragment"),
    [
        ("nope", {}, "allowed"),
        ("mgda", {"normalise": "l2"}, "normalise"),
        ("mgda", {"normalize": "l1"}, "normalize"),
        ("pcgrad", {"reduction": "max"}, "reduction"),
        ("cagrad", {"rescale": 3}, "rescale"),
        ("cagrad", {"c": -1.0}, "'c'"),
        ("upgrad", {"reg_eps": -1.0}, "reg_eps"),
        ("mean", {"c": 1}, "'c'"),
    ],
)
def test_bad_name_or_option(name, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        weighting(name, **options)


def test_bad_option_lists_allowed_values():
    with pytest.raises(ValueError, match=r"\['sum', 'mean'\]"):
        weighting("pcgrad", reduction="max")


def test_gram_accumulates_in_float64_and_chunks():
    """bf16 / float32 rows: float32 partial Grams summed in float64 (float32 rounding, whatever the chunking);
    float64 rows: float64 throughout (exact to float64 rounding)."""
    torch.manual_seed(0)
    x = torch.randn(3, 1000, dtype=torch.bfloat16)
    ref = x.double() @ x.double().T
    for chunk in (64, 1 << 22):
        g = gram(x, chunk=chunk)
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-6)
    wide = x.double()
    torch.testing.assert_close(gram(wide, chunk=64), ref, rtol=1e-12, atol=1e-9)


def test_combine_keeps_grad_dtype():
    x = torch.randn(2, 7, dtype=torch.bfloat16)
    d = combine(x, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert d.dtype == torch.bfloat16 and d.shape == (7,)
    torch.testing.assert_close(d.float(), 0.25 * x[0].float() + 0.75 * x[1].float(), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_float32_input_gives_float64_output(name):
    c = weighting(name)(gram(J).float())
    assert c.dtype == torch.float64 and c.device == J.device


@pytest.mark.parametrize("bad", [torch.zeros(2, 3), torch.zeros(0, 0), torch.zeros(3)])
def test_non_square_gram_rejected(bad):
    with pytest.raises(ValueError):
        weighting("mean")(bad)
