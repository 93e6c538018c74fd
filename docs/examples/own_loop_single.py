"""Polymoo's combiner in your own single-process loop (docs/api.md).

An existing model and optimizer; every step computes one loss per language and hands them to
`harness.api.PerLanguageStep`, which writes the combined direction into `.grad`; the optimizer steps as usual.

    python docs/examples/own_loop_single.py --steps 20 --weighting mgda --granularity tensor
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from harness.api import PerLanguageStep

LANGUAGES = ("en", "fr", "sw")


def build_model(seed: int = 0) -> nn.Module:
    """A tiny regressor standing in for your model."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def batch(language: int, step: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy per-language data: a shared target plus a conflicting per-language part (rotated weights); a new batch
    every step, from a pool of 4 per language."""
    g = torch.Generator().manual_seed(1000 * language + step % 4)
    x = torch.randn(size, 8, generator=g)
    shared = torch.linspace(-1.0, 1.0, 8)
    w = shared + 0.5 * torch.roll(shared, shifts=3 * language)
    return x, (x @ w).unsqueeze(1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--weighting", default="mgda")
    p.add_argument("--granularity", default="whole", choices=("whole", "ddp_bucket", "module", "tensor"))
    args = p.parse_args(argv)

    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    combiner = PerLanguageStep(model, args.weighting, granularity=args.granularity)  # the only polymoo line ...
    loss_fn = nn.MSELoss()
    metrics: dict[str, float] = {}
    for step in range(args.steps):
        losses = {}
        for k, lang in enumerate(LANGUAGES):
            x, y = batch(k, step)
            losses[lang] = loss_fn(model(x), y)
        optimizer.zero_grad()
        result = combiner(losses)  # ... and this one: K backwards, weighting per block, direction into .grad
        optimizer.step()
        metrics = result.metrics
        if step % 5 == 0 or step == args.steps - 1:
            print(step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("loss/")))
    return metrics


if __name__ == "__main__":
    main()
