"""Two processes building the same tiny twin at once (two ranks on one node, two jobs on one cache): both get a whole
model, the cache holds one copy and no half-written folder, and a later load works. Before atomic writes a half-written
twin made every later run fail with "Unrecognized model"."""

from __future__ import annotations

import multiprocessing as mp

import pytest

pytestmark = pytest.mark.integration


def _build(cache_dir: str, start, out) -> None:
    from harness.models.tiny import build_tiny

    start.wait()  # both processes leave the barrier together and race to write the same folder
    out.put(str(build_tiny("qwen3", cache_dir=__import__("pathlib").Path(cache_dir))))


def test_two_processes_build_the_same_twin_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path), start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    paths = {out.get(timeout=5), out.get(timeout=5)}
    assert len(paths) == 1
    entries = [p.name for p in tmp_path.iterdir()]
    assert len(entries) == 1 and not any(".tmp" in e for e in entries), entries

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(paths.pop())
    assert sum(p.numel() for p in model.parameters()) > 0
