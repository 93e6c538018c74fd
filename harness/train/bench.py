"""Benchmark of one gradient step by route, on a tiny twin: time and peak memory against joint SFT in the same process.

``python -m harness.train.bench --arch llama --k 4 8 16 --out results/bench/grad_engine.json`` (``nox -s bench``
runs it through ``tests/bench/test_grad_engine_bench.py``). For each K (languages, ``b`` rows each, width ``T``) and
route, the median wall time of a step after one warm-up step, and the peak resident memory above the memory held
before the step (Linux VmHWM, reset before every step; large allocations are mmapped so a freed tensor leaves the
resident set, see ``MALLOC_MMAP_THRESHOLD_`` in the test):

* ``joint``: the mean of the K language losses, one forward/backward of K·b rows (joint SFT);
* ``loop`` / ``vmap`` / ``one_backward``: the K per-language gradients (:mod:`harness.train.grad_engine`), their
  whole-vector Gram, MGDA, the combination written into ``.grad`` (a full-MGDA step; K×P float32 rows);
* ``one_backward_wgrad``: ``one_backward`` with autograd also computing the joint weight gradients it then discards
  (what the route avoids by differentiating w.r.t. the input embeddings' output only);
* ``loop_rows`` / ``one_backward_rows``: the K per-language gradients only (no Gram, no solver): the engine's own
  cost against one joint pass; ``loop_sequential_rows``: the loop's passes one after another, each at the process's
  thread count (``loop`` runs them two at a time on one thread each where it can: ``harness.train.language_workers``);
* ``loop_buckets``: the ``loop`` rows weighted per DDP bucket of ``bucket_cap_mb`` (a Bucket-Level MOO step);
* ``autogram``: TorchJD's Gramian engine (``torchjd.autogram.Engine``, batch dim 0) for the per-example Gram of one
  forward, reduced to the K×K language Gram, MGDA, then one backward of the weighted losses: the same full-MGDA
  direction without K×P rows (the peer the issue names; whole vector only).

Routes are measured interleaved (every route at every thread count once per repeat, in turn), so each ratio to
``joint`` compares neighbours in time on a machine others share; the record keeps the median ratio over repeats and
its range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROUTES = ("joint", "loop_rows", "loop_sequential_rows", "one_backward_rows", "loop", "vmap", "one_backward", "one_backward_wgrad",
          "loop_buckets", "autogram")


def random_batch(vocab: int, k: int, b: int, width: int, seed: int = 0) -> dict[str, Tensor]:
    """K languages × b rows of random tokens, full width, loss on the last two thirds (speed only, never quality)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, vocab, (k * b, width), generator=g)
    labels = ids.clone()
    labels[:, : width // 3] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "language": torch.arange(k).repeat_interleave(b)}


def _rows(engine: str, model: nn.Module, inputs: dict[str, Tensor], params: list[nn.Parameter]) -> Tensor:
    from harness.train.grad_engine import language_gradients, loop_gradients, one_backward_language_gradients
    from harness.train.losses import token_losses

    if engine == "one_backward_wgrad":
        return one_backward_language_gradients(model, inputs, params, token_losses, keep_weight_grads=True).rows
    if engine == "loop_sequential":
        return loop_gradients(model, inputs, params, token_losses, workers=1).rows
    return language_gradients(engine, model, inputs, params, token_losses).rows


def _mgda_step(model: nn.Module, inputs: dict[str, Tensor], engine: str, blocks: Any) -> None:
    from harness.buckets import write_flat_grads
    from harness.moo.blocks import BlockRule, block_directions, block_grams
    from harness.moo.weightings import weighting

    params = [p for p in model.parameters() if p.requires_grad]
    rows = _rows(engine, model, inputs, params)
    rule = BlockRule(weighting("mgda"))
    coeffs = rule.coefficients(block_grams(rows, blocks), 0, blocks)
    write_flat_grads(params, block_directions(rows, blocks, coeffs))


def _language_weights(inputs: dict[str, Tensor], counts: Tensor, k: int) -> Tensor:
    """S (K × rows): language loss k = Σ_i S[k, i] · (sum of row i's token losses)."""
    s = torch.zeros(k, counts.shape[0], dtype=torch.float64)
    for lang in range(k):
        sel = inputs["language"] == lang
        s[lang, sel] = 1.0 / float(counts[sel].sum())
    return s


def _autogram_step(model: nn.Module, inputs: dict[str, Tensor], engine: Any, k: int) -> None:
    from harness.moo.weightings import weighting
    from harness.train.losses import token_losses

    sums, counts = token_losses(model, inputs)
    s = _language_weights(inputs, counts, k)
    per_example = engine.compute_gramian(sums).to(torch.float64)
    coeffs = weighting("mgda")(s @ per_example @ s.T)
    (sums * (coeffs @ s).to(sums.dtype)).sum().backward()


def step_function(route: str, model: nn.Module, inputs: dict[str, Tensor], k: int,
                  bucket_cap_mb: float) -> Callable[[], None]:
    """The step of ``route`` as a closure (layouts and engines built once, outside the timing)."""
    from harness.moo.blocks import model_blocks
    from harness.train.sft import language_losses

    if route == "joint":
        return lambda: torch.stack(list(language_losses(model, inputs).values())).mean().backward()
    if route.endswith("_rows"):
        params = [p for p in model.parameters() if p.requires_grad]
        return lambda: _rows(route.removesuffix("_rows"), model, inputs, params)
    if route in ("loop", "vmap", "one_backward", "one_backward_wgrad"):
        whole = model_blocks(model, "whole")
        return lambda: _mgda_step(model, inputs, route, whole)
    if route == "loop_buckets":
        buckets = model_blocks(model, "ddp_bucket", bucket_cap_mb)
        return lambda: _mgda_step(model, inputs, "loop", buckets)
    if route == "autogram":
        from torchjd.autogram import Engine

        engine = Engine(model, batch_dim=0)
        return lambda: _autogram_step(model, inputs, engine, k)
    raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")


def measure(route: str, arch: str, k: int, b: int, width: int, steps: int, bucket_cap_mb: float) -> dict[str, float]:
    """Median step time (s) and peak memory above the pre-step level (MB) of ``route``, fresh model per route."""
    from harness.distributed.accounting import current_rss_mb, peak_memory_mb, reset_peak_memory
    from harness.models.loading import load_model

    model = load_model(arch, "tiny")[0]
    model.train()
    inputs = random_batch(model.config.vocab_size, k, b, width)
    step = step_function(route, model, inputs, k, bucket_cap_mb)
    times, peaks = [], []
    for i in range(steps + 1):
        model.zero_grad(set_to_none=True)
        before = current_rss_mb()
        reset_peak_memory()
        t0 = time.perf_counter()
        step()
        elapsed = time.perf_counter() - t0
        if i:  # the first step pays for lazy initialisation
            times.append(elapsed)
            peaks.append(peak_memory_mb() - before)
    return {"step_time_s": statistics.median(times), "peak_mem_above_start_mb": max(peaks)}


def _summary(repeats: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per route: median step time over repeats, peak memory (max), and the ratios to ``joint`` of each repeat
    (median and range): a ratio pairs measurements taken next to each other."""
    out: dict[str, dict[str, Any]] = {}
    for route in repeats[0]:
        times = [r[route]["step_time_s"] for r in repeats]
        row: dict[str, Any] = {"step_time_s": statistics.median(times),
                               "peak_mem_above_start_mb": max(r[route]["peak_mem_above_start_mb"] for r in repeats)}
        if "joint" in repeats[0]:
            ratios = [r[route]["step_time_s"] / r["joint"]["step_time_s"] for r in repeats]
            row |= {"time_vs_joint": statistics.median(ratios), "time_vs_joint_range": [min(ratios), max(ratios)],
                    "mem_vs_joint": row["peak_mem_above_start_mb"] / max(
                        max(r["joint"]["peak_mem_above_start_mb"] for r in repeats), 1e-9)}
        out[route] = row
    return out


def run(arch: str, ks: list[int], routes: list[str], b: int, width: int, steps: int, bucket_cap_mb: float,
        threads: list[int] | None = None, repeats: int = 1) -> dict[str, Any]:
    """``{"threads=T": {"K=k": {route: summary}}}``, every (threads, K, route) measured once per repeat, in turn."""
    torch.manual_seed(0)
    threads = threads or [torch.get_num_threads()]
    raw: dict[tuple[int, int], list[dict[str, dict[str, float]]]] = {(t, k): [] for t in threads for k in ks}
    for _ in range(repeats):
        for k in ks:
            for t in threads:
                torch.set_num_threads(t)
                raw[(t, k)].append({route: measure(route, arch, k, b, width, steps, bucket_cap_mb)
                                    for route in routes})
    return {f"threads={t}": {f"K={k}": _summary(raw[(t, k)]) for k in ks} for t in threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="llama")
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--routes", nargs="+", default=list(ROUTES))
    p.add_argument("--rows-per-language", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--bucket-cap-mb", type=float, default=0.25)
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch thread counts, interleaved")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    results = run(a.arch, a.k, a.routes, a.rows_per_language, a.width, a.steps, a.bucket_cap_mb, a.threads,
                  a.repeats)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"settings": vars(a) | {"out": str(a.out)}, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
