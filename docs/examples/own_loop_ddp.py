"""Polymoo's DDP communication hook on your own DistributedDataParallel model (docs/api.md).

Plain PyTorch DDP (gloo, CPU), one language per rank; the polymoo hook replaces DDP's all-reduce and combines the
per-language gradients bucket by bucket (hook `sharded`: about the bytes of one all-reduce).

    python -m torch.distributed.run --standalone --nproc-per-node=2 docs/examples/own_loop_ddp.py --steps 5

`--out DIR` makes every rank save its flat parameters after every step and the buckets the hook saw (the test
`tests/distributed/test_own_loop.py` checks them against a by-hand reference).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.api import comm_hook, polymoo_hook_state


def build_model(seed: int = 0) -> nn.Module:
    """A tiny regressor standing in for your model (the same initial weights on every rank)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def batch(language: int, step: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy per-language data: a shared target plus a conflicting per-language part (rotated weights)."""
    g = torch.Generator().manual_seed(1000 * language + step % 4)
    x = torch.randn(size, 8, generator=g)
    shared = torch.linspace(-1.0, 1.0, 8)
    w = shared + 0.5 * torch.roll(shared, shifts=3 * language)
    return x, (x @ w).unsqueeze(1)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--hook", default="sharded", help="sharded | allgather | full | full_gather | mean")
    p.add_argument("--weighting", default="mgda")
    p.add_argument("--granularity", default="ddp_bucket", help="ddp_bucket | module | tensor (blocks inside buckets)")
    p.add_argument("--bucket-cap-mb", type=float, default=0.0005, help="tiny, so the toy model has several buckets")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_model()
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    optimizer = make_optimizer(model)

    # --- polymoo: two lines. Rank r trains language r; every rank solves the same per-bucket problem. ----------
    state = polymoo_hook_state(ddp, args.weighting, hook=args.hook, languages_per_rank=list(range(world)),
                               granularity=args.granularity)
    ddp.register_comm_hook(state, comm_hook)

    snapshots = []
    for step in range(args.steps):
        language = state.begin(step)  # this rank's language; plain averaging on step 0 while DDP rebuilds buckets
        x, y = batch(language, step)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), y)
        state.share_loss(loss)  # FAMO weighs by the languages' losses: every rank learns them here (else a no-op)
        loss.backward()  # the hook combines the languages' gradients bucket by bucket into .grad
        state.end()  # the full-gradient hooks (full, full_gather) solve here; a no-op for the bucket hooks
        optimizer.step()
        snapshots.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
        print(f"rank {rank} step {step} language {language} loss {loss.item():.4f}", flush=True)

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({"params": snapshots, "buckets": state.buckets, "world": world}, args.out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
