"""The FSDP2 engine: every decoder block a `fully_shard` unit, the unit is the bucket, MOO inside its reduce-scatter.

`Fsdp2Engine(...).step(s)` is `DistEngine.step`'s twin under `distributed.engine: fsdp2` (DESIGN.md, "Engines at
scale: FSDP2 as the bucket"): the same language-per-rank batches, loss, optimizer groups, schedule, clipping,
non-finite skip and metrics (`harness.distributed.engine`), with FSDP2 in place of DDP:

- units (:func:`fsdp_units`): each decoder block (the HF model's ``_no_split_modules`` classes), then the root (the
  rest: embeddings, final norm, LM head). Unit index = that order; it is the block index of the solve (PCGrad key) and
  of the single-process simulation, which takes the units as its buckets (``harness.distributed.simulate``);
- mixed precision through FSDP2's ``MixedPrecisionPolicy``: ``train.dtype`` bfloat16/float16 with master weights ->
  compute in that dtype, gradients reduced (and Grams accumulated) in float32, float32 master weights and optimizer
  state; no autocast;
- the reduce-scatter of every unit is one of `harness.distributed.fsdp2_comm`'s (mode from the DDP hook the executor
  resolved: ``mean`` -> joint SFT's mean, ``sharded`` -> per-unit MOO, ``full`` -> global MOO). No warm-up steps:
  FSDP2 has no bucket rebuild. ``allgather`` / ``full_gather`` are DDP hooks and are refused here, naming the fix.

Bytes: ``dist/bytes_per_step`` is the gradient reduction (what replaces the reduce-scatter), ``dist/bytes_ratio_
reduce_scatter`` its ratio to FSDP2's reduce-scatter of the same units, ``dist/bytes/all_gather.params`` FSDP2's
parameter all-gathers (the same for every method; not in ``bytes_per_step``, as DDP's ``bytes_per_step`` has no
parameter traffic either).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from harness.buckets import Bucket
from harness.config import TrainConfig
from harness.distributed.accounting import Comm, CommCounter, allreduce_bytes, peak_memory_mb
from harness.distributed.assignment import assign
from harness.distributed.engine import (
    BatchFn,
    DistEngine,
    EngineConfig,
    LossFn,
    build_optimizer,
    build_scheduler,
    engine_weighting,
)
from harness.distributed.fsdp2_comm import (
    CountingAllGather,
    GlobalKeepReduceScatter,
    MeanReduceScatter,
    UnitMooReduceScatter,
    UnitRecord,
    check_aliases,
    finish_global,
)
from harness.distributed.hooks import HookState

FSDP2_MODES = {"mean": MeanReduceScatter, "sharded": UnitMooReduceScatter, "full": GlobalKeepReduceScatter}


@dataclass(frozen=True)
class Unit:
    """One FSDP2 unit: its block index, the module path ('' = the root) and its trainable parameter names."""

    index: int
    path: str
    names: tuple[str, ...]


def _block_paths(model: torch.nn.Module) -> list[str]:
    """Decoder blocks: modules whose class is in the HF model's ``_no_split_modules`` (outermost only), in order."""
    classes = set(getattr(model, "_no_split_modules", None) or ())
    paths: list[str] = []
    for path, module in model.named_modules():
        if type(module).__name__ in classes and not any(path.startswith(p + ".") for p in paths):
            paths.append(path)
    if not paths:
        raise ValueError(f"engine fsdp2: found no decoder blocks in {type(model).__name__} (no module of the classes "
                         f"in its _no_split_modules {sorted(classes)}); use distributed.engine: ddp for this model")
    return paths


def fsdp_units(model: torch.nn.Module) -> list[Unit]:
    """The units of ``model`` (plain or already sharded): decoder blocks 0..L-1, then the root (everything else)."""
    named = [n for n, p in model.named_parameters() if p.requires_grad]
    blocks = _block_paths(model)
    units, taken = [], set()
    for i, path in enumerate(blocks):
        names = tuple(n for n in named if n.startswith(path + "."))
        units.append(Unit(i, path, names))
        taken.update(names)
    units.append(Unit(len(blocks), "", tuple(n for n in named if n not in taken)))
    return units


def unit_plan(model: torch.nn.Module) -> list[Bucket]:
    """The units as `harness.buckets.Bucket`s: what the single-process simulation takes as its buckets."""
    params = dict(model.named_parameters())
    return [Bucket(u.index, u.names, sum(params[n].numel() for n in u.names),
                   sum(params[n].numel() * params[n].element_size() for n in u.names)) for u in fsdp_units(model)]


def mp_policy(train: TrainConfig) -> MixedPrecisionPolicy:
    """bf16/fp16 compute with float32 reduction over float32 master weights when mixed; else FSDP2's default."""
    compute = train.autocast_dtype
    if compute is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=getattr(torch, compute), reduce_dtype=torch.float32)


def shard(model: torch.nn.Module, train: TrainConfig) -> list[FSDPModule]:
    """``fully_shard`` every decoder block, then the root; returns the FSDP modules in unit order."""
    policy = mp_policy(train)
    modules: list[FSDPModule] = []
    for path in _block_paths(model):
        modules.append(fully_shard(model.get_submodule(path), mp_policy=policy))
    modules.append(fully_shard(model, mp_policy=policy))
    return modules


def fsdp2_refusal(hook: str, granularity: str, train: TrainConfig) -> str | None:
    """Why the FSDP2 engine cannot run a method with this DDP hook and granularity under ``train``, with the fix;
    None when it can. Shared by the engine and `polymoo check` (which refuses before anything launches)."""
    if hook not in FSDP2_MODES:
        return (f"distributed.engine fsdp2 runs hooks {', '.join(FSDP2_MODES)} (joint SFT, per-unit MOO, "
                f"global MOO); {hook!r} is a DDP-only hook: drop the method's hook option or use "
                "distributed.engine: ddp")
    if granularity not in (("ddp_bucket", "whole") if hook == "full" else ("ddp_bucket",)):
        return (f"distributed.engine fsdp2: the FSDP unit (a decoder block) is the block; granularity "
                f"{granularity!r} is for the DDP hooks (use distributed.engine: ddp)")
    if train.lora is not None:
        return "distributed.engine fsdp2 shards full fine-tuning; train.lora is set: remove it or use distributed.engine: ddp"
    if train.dtype != "float32" and not train.master_weights:
        return ("distributed.engine fsdp2 keeps float32 master weights (MixedPrecisionPolicy); "
                "train.master_weights: false is DDP-only")
    return None


def check_fsdp2(cfg: EngineConfig, train: TrainConfig) -> None:
    """What the FSDP2 engine does not run, each with the fix."""
    why = fsdp2_refusal(cfg.hook, cfg.granularity, train)
    if why is not None:
        raise ValueError(why)


class Fsdp2Engine:
    """One shard of the model per rank; each unit's reduce-scatter replaced by the mode's comm."""

    gather_losses = DistEngine.gather_losses  # the same logging-only all-gather of the per-language losses
    _device = DistEngine._device

    def __init__(self, model: torch.nn.Module, cfg: EngineConfig, train: TrainConfig, n_languages: int,
                 batch_fn: BatchFn, loss_fn: LossFn, group=None):
        check_fsdp2(cfg, train)
        self.cfg, self.train, self.n_languages = cfg, train, n_languages
        self.batch_fn, self.loss_fn = batch_fn, loss_fn
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        self.counter, self.param_counter = CommCounter(self.world), CommCounter(self.world)
        self.comm = Comm(group, self.counter)
        weighting = None
        if cfg.weighting != "mean" or cfg.weighting_options or cfg.normalize != "none" or cfg.output_scale != "raw":
            weighting = engine_weighting(cfg, self.world, n_languages)
        self.state = HookState(comm=self.comm, hook=cfg.hook, weighting=weighting, seed=cfg.seed,
                               normalize=cfg.normalize, output_scale=cfg.output_scale)
        if train.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.units = fsdp_units(model)
        self.state.buckets = {u.index: list(u.names) for u in self.units}  # the bucket map artifact: the units
        self.grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self.model, self.modules = model, shard(model, train)
        self.record = UnitRecord()
        for unit, module in zip(self.units, self.modules, strict=True):
            module.set_gradient_divide_factor(1.0)  # the comms weight the ranks themselves
            module.set_custom_reduce_scatter(FSDP2_MODES[cfg.hook](self.state, unit.index, self.record))
            module.set_custom_all_gather(CountingAllGather(self.param_counter))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, train)
        self.scheduler = build_scheduler(self.optimizer, train)
        self.skipped_steps = 0
        self._aliases_checked = False

    def _backward(self, step: int) -> float:
        """The step's forward/backward passes (FSDP2 reduces on the last micro-batch only); returns the rank loss."""
        total = torch.zeros((), dtype=torch.float64, device=self._device())
        last = self.cfg.grad_accum - 1
        for micro in range(self.cfg.grad_accum):
            self.model.set_requires_gradient_sync(micro == last)
            loss = self.loss_fn(self.model, self.batch_fn(step, self.rank, micro, self.state.assignment))
            loss = loss / self.cfg.grad_accum
            total += loss.detach().to(torch.float64)
            if micro == last and self.state.needs_losses:  # before the backward: the comms solve inside it
                self.state.set_losses(self.comm.all_gather(total.reshape(1), name="all_gather.losses"))
            loss.backward()
        if self.cfg.hook == "full":
            if not self._aliases_checked:
                check_aliases(self.params, self.record)
                self._aliases_checked = True
            finish_global(self.state, self.record)
        return float(total)

    def _finite(self) -> bool:
        """One fused local check, one all-reduce (MIN) of the flag: every rank skips the same steps."""
        local = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in self.params
                 if p.grad is not None]
        flag = torch.stack([torch.isfinite(g).all() for g in local]).all().to(torch.float32).reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.comm.group)
        return bool(flag.item())

    def _update(self) -> tuple[float, float]:
        """Skip (non-finite) or clip and step; returns (grad norm, lr)."""
        finite = self._finite()
        if not finite:
            for p in self.params:
                p.grad = None
            self.skipped_steps += 1
        grad_norm = float("nan")
        if self.train.max_grad_norm > 0 and finite:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = float(self.scheduler.get_last_lr()[0])
        if finite:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, lr

    def step(self, step: int) -> dict[str, float]:
        """Optimizer step ``step`` (0-based); this rank's metrics, named as `DistEngine.step`'s."""
        t0 = time.perf_counter()
        self.counter.reset()
        self.param_counter.reset()
        self.record.reset()
        self.state.begin_step(step, assign(self.world, self.n_languages, step), warmup=False)
        self.model.train()
        rank_loss = self._backward(step)
        grad_norm, lr = self._update()
        return self._metrics(rank_loss, grad_norm, lr, time.perf_counter() - t0)

    def _metrics(self, rank_loss: float, grad_norm: float, lr: float, seconds: float) -> dict[str, float]:
        grad, rs = self.counter.grad_bytes, self.record.reduce_scatter_bytes
        allreduce = allreduce_bytes(self.grad_bytes, self.world)
        metrics = {"train/rank_loss": rank_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                   "train/skipped_steps": float(self.skipped_steps), "dist/bytes_per_step": grad,
                   "dist/bytes_ratio_reduce_scatter": grad / rs if rs else float("nan"),
                   "dist/bytes_ratio_allreduce": grad / allreduce if allreduce else float("nan"),
                   "dist/reduce_scatter_bytes": rs, "dist/param_bytes_per_step": self.param_counter.grad_bytes,
                   "dist/hook_time_s": self.counter.hook_time_s, "dist/warmup": 0.0,
                   "perf/step_time_s": seconds, "perf/peak_mem_mb": peak_memory_mb()}
        for name, nbytes in (*self.counter.step_bytes.items(), *self.param_counter.step_bytes.items()):
            metrics[f"dist/bytes/{name}"] = nbytes
        return metrics

    def coefficient_vector(self) -> torch.Tensor:
        """This step's coefficients, every unit's (or the global one) in index order, flat float64 (consistency)."""
        coeffs = self.record.coefficients
        if not coeffs:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([coeffs[i].reshape(-1).to(torch.float64).cpu() for i in sorted(coeffs)])

    def full_state_dict(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """Every parameter and buffer as a full CPU tensor. A collective (every rank calls it, unit by unit); ranks
        with ``keep=False`` drop each tensor at once, so only the ranks that need the model hold a full copy."""
        out = {}
        for name, t in self.model.state_dict().items():
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            if keep:
                out[name] = full.detach().cpu()
        return out
