"""The distributed training loop: torch DDP + a communication hook, one language per rank per step.

A plain torch loop (not the HF Trainer) so the hook, the per-rank data, `no_sync` accumulation, warm-up and
checkpoints are explicit. Its optimizer, schedule and clipping are those of the shared single-process path
(`harness.train.sft.training_arguments`): AdamW (`adamw_torch`, betas 0.9/0.999, eps 1e-8) with weight decay on the
parameters HF decays (not biases, not norms), SGD or Adafactor as configured, `transformers.get_scheduler` with
`train.schedule` / `train.warmup_steps`, gradient-norm clipping at `train.max_grad_norm`; non-finite steps are skipped
(no update) and counted.

`DistEngine(...).run(...)` is used by the suite path (`harness.distributed.train`), the tests and the benchmark.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.config import TrainConfig
from harness.distributed.accounting import Comm, CommCounter, allreduce_bytes, peak_memory_mb
from harness.distributed.assignment import StepAssignment, assign
from harness.distributed.hooks import HOOKS, HookState, register
from harness.moo.blocks import nested_index
from harness.train.losses import token_losses

NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]  # as HF Trainer


@dataclass(frozen=True)
class EngineConfig:
    hook: str = "mean"  # one of hooks.HOOKS, or "ddp" (no hook: plain DDP all-reduce, for comparison)
    weighting: str = "mean"
    weighting_options: dict[str, Any] = field(default_factory=dict)
    bucket_cap_mb: float = 25.0
    warmup_steps: int = 1  # steps with plain averaging while DDP rebuilds its buckets
    grad_accum: int = 1
    seed: int = 0
    normalize: str = "none"  # per-block gradient normalisation before the solve (harness.moo.combiners)
    output_scale: str = "raw"  # raw | mean_norm (harness.moo.combiners)
    granularity: str = "ddp_bucket"  # blocks inside each bucket (harness.moo.blocks): ddp_bucket | module | tensor

    def __post_init__(self) -> None:
        if self.hook not in (*HOOKS, "ddp"):
            raise ValueError(f"unknown hook {self.hook!r}; known: {', '.join(HOOKS)}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")


def engine_weighting(cfg: EngineConfig, world: int, n_languages: int) -> Any:
    """The hooks' weighting for ``cfg``: stateless ones as ``fn(gram)``, stateful ones (GradVac, FAMO) as they are.

    A stateful weighting is refused under DDP, with the reason, when languages rotate over steps (N < K: a
    K_eff×K_eff state would mix languages) or with granularity ``module`` (a module split over two buckets would
    update one state twice per step). One that needs the per-language losses (FAMO) gets them from the engine.
    """
    from harness.moo.weightings import STATEFUL_WEIGHTINGS, stateful_weighting, weighting

    if cfg.weighting not in STATEFUL_WEIGHTINGS:
        return weighting(cfg.weighting, **cfg.weighting_options)
    w = stateful_weighting(cfg.weighting, **cfg.weighting_options)
    why = None
    if world < n_languages:
        why = (f"its state is per language pair and with {world} ranks < {n_languages} languages the languages "
               f"rotate over steps; use N >= K ranks")
    elif cfg.granularity == "module":
        why = "a module split over two DDP buckets would update its state twice per step; use ddp_bucket or tensor"
    if why:
        raise ValueError(f"method/weighting {cfg.weighting!r} cannot run under DDP: {why}")
    return w


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    norm_types = (torch.nn.LayerNorm,)
    out = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, norm_types):
            continue
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if not any(re.search(pat, full.lower()) for pat in NO_DECAY):
                out.add(full)
    return out


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = decay_parameter_names(model)
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": train.weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    if train.optimizer == "adamw_torch":
        return torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.999), eps=1e-8)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr)
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=train.lr, scale_parameter=False, relative_step=False)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig):
    from transformers import get_scheduler

    return get_scheduler(train.schedule, optimizer, num_warmup_steps=train.warmup_steps,
                         num_training_steps=train.steps)


BatchFn = Callable[[int, int, int, StepAssignment], dict[str, torch.Tensor]]  # (step, rank, micro, assignment)
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


class DistEngine:
    """One model replica per rank, wrapped in DDP with the configured hook."""

    def __init__(self, model: torch.nn.Module, cfg: EngineConfig, train: TrainConfig, n_languages: int,
                 batch_fn: BatchFn, loss_fn: LossFn, group=None):
        self.cfg, self.train, self.n_languages = cfg, train, n_languages
        self.batch_fn, self.loss_fn = batch_fn, loss_fn
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        if cfg.hook == "ddp" and not assign(self.world, n_languages, 0).even:
            raise ValueError(f"hook 'ddp' (DDP's own all-reduce) averages ranks, and with {self.world} ranks over "
                             f"{n_languages} languages some languages have more ranks: use hook 'mean', which weights "
                             "every language equally")
        self.model = model
        self.ddp = DDP(model, bucket_cap_mb=cfg.bucket_cap_mb, process_group=group,
                       device_ids=[torch.cuda.current_device()] if next(model.parameters()).is_cuda else None,
                       forward_sync_buffers=False)
        self.counter = CommCounter(self.world)
        self.comm = Comm(group, self.counter)
        weighting = None
        if cfg.weighting != "mean" or cfg.weighting_options or cfg.normalize != "none" or cfg.output_scale != "raw":
            weighting = engine_weighting(cfg, self.world, n_languages)
        self.state = HookState(comm=self.comm, hook=cfg.hook if cfg.hook != "ddp" else "mean", weighting=weighting,
                               seed=cfg.seed, normalize=cfg.normalize, output_scale=cfg.output_scale, names={id(p): n for n, p in model.named_parameters()},
                               granularity=cfg.granularity, index=nested_index(model, cfg.granularity))
        if cfg.hook != "ddp":
            register(self.ddp, self.state)
        if train.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.optimizer = build_optimizer(model, train)
        self.scheduler = build_scheduler(self.optimizer, train)
        self.skipped_steps = 0

    # -- checkpoint state ----------------------------------------------------------------------------------------
    def state_dict(self, step: int) -> dict[str, Any]:
        """Model, optimizer, schedule, step, and the weighting's per-block states (stateful weightings)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": step, "skipped_steps": self.skipped_steps,
                "weighting": self.state.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "weighting" in state:
            self.state.rule.load_state_dict(state["weighting"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        return int(state["step"])

    def resume(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint and, past the warm-up, let DDP rebuild its buckets before the first real step.

        DDP hands the hook its initial buckets in the first iteration of a process and its rebuilt
        (gradient-ready order) buckets from the second on. An uninterrupted run solved step ``s`` on the rebuilt
        buckets, so a resumed one must too, or the bucket-level blocks, and a stateful weighting's per-bucket states,
        would differ. One forward/backward on step ``s``'s first micro-batch with plain averaging, its gradients
        dropped and the RNG restored, does that (what the warm-up step does at the start of a run).
        """
        step = self.load_state_dict(state)
        if step >= self.cfg.warmup_steps and self.cfg.hook != "ddp":
            self._prime_buckets(step)
        return step

    def _prime_buckets(self, step: int) -> None:
        assignment = assign(self.world, self.n_languages, step)
        rng = torch.get_rng_state()
        self.state.begin_step(step, assignment, warmup=True)
        self.ddp.train()
        self._loss(self.batch_fn(step, self.rank, 0, assignment)).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.counter.reset()
        torch.set_rng_state(rng)

    def _loss(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forward under the run's precision: autocast to ``train.dtype`` over fp32 master weights when mixed
        (``TrainConfig.autocast_dtype``), else in the weights' own dtype."""
        compute = self.train.autocast_dtype
        if compute is None:
            return self.loss_fn(self.ddp, inputs)
        with torch.autocast(self._device().type, dtype=getattr(torch, compute)):
            return self.loss_fn(self.ddp, inputs)

    # -- one optimizer step --------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        """Optimizer step `step` (0-based). Returns this rank's metrics (bytes, times, loss of its language)."""
        t0 = time.perf_counter()
        cfg = self.cfg
        assignment = assign(self.world, self.n_languages, step)
        warmup = step < cfg.warmup_steps
        self.counter.reset()
        self.state.begin_step(step, assignment, warmup)
        self.ddp.train()
        loss_total = torch.zeros((), dtype=torch.float64, device=self._device())
        for micro in range(cfg.grad_accum):
            inputs = self.batch_fn(step, self.rank, micro, assignment)
            sync = micro == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss = self._loss(inputs) / cfg.grad_accum
                loss_total += loss.detach().to(torch.float64)
                if sync and not warmup and self.state.needs_losses:  # before the backward: the hooks solve in it
                    self.state.set_losses(self.comm.all_gather(loss_total.reshape(1), name="all_gather.losses"))
                loss.backward()
        loss_total = float(loss_total)
        self.state.finalize()
        if cfg.hook == "ddp":  # DDP's built-in all-reduce is not seen by a hook: count what its reducer sends
            self.counter.add("all_reduce.ddp_builtin", allreduce_bytes(self.grad_bytes, self.world))
        # one fused check (a foreach norm, one host sync): non-finite iff some gradient is (or the norm overflows)
        total_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        finite = bool(torch.isfinite(total_norm))
        if not finite:  # same on every rank: the gradients are identical after synchronisation
            for p in self.params:
                if p.grad is not None:
                    p.grad.zero_()
            self.skipped_steps += 1
        grad_norm = float("nan")
        if self.train.max_grad_norm > 0 and finite:  # = clip_grad_norm_, whose norm this is
            torch.nn.utils.clip_grads_with_norm_(self.params, self.train.max_grad_norm, total_norm)
            grad_norm = float(total_norm)
        lr = float(self.scheduler.get_last_lr()[0])
        if finite:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        grad_bytes = self.counter.grad_bytes
        allreduce = allreduce_bytes(self.grad_bytes, self.world)
        metrics = {
            "train/rank_loss": loss_total, "train/lr": lr, "train/grad_norm": grad_norm,
            "train/skipped_steps": float(self.skipped_steps),
            "dist/bytes_per_step": grad_bytes,
            "dist/bytes_ratio_allreduce": grad_bytes / allreduce if allreduce else float("nan"),
            "dist/hook_time_s": self.counter.hook_time_s,
            "dist/warmup": float(warmup),
            "perf/step_time_s": time.perf_counter() - t0,
            "perf/peak_mem_mb": peak_memory_mb(),
        }
        for name, nbytes in self.counter.step_bytes.items():
            metrics[f"dist/bytes/{name}"] = nbytes
        return metrics

    def gather_losses(self, rank_loss: float, assignment: StepAssignment, languages: list[str]) -> dict[str, float]:
        """Per-language training loss of the step (mean over the language's ranks); a logging-only all-gather."""
        t = torch.tensor([rank_loss], dtype=torch.float64, device=self._device())
        out = self.comm.all_gather(t, name="aux.losses").cpu()
        per: dict[str, list[float]] = {}
        for r, lang in enumerate(assignment.rank_language):
            per.setdefault(languages[lang], []).append(float(out[r]))
        metrics = {f"train/loss/{lang}": sum(v) / len(v) for lang, v in per.items()}
        metrics["train/loss"] = sum(metrics.values()) / len(metrics)
        return metrics

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def token_mean_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy over the response tokens (labels -100 are ignored), the shared SFT loss."""
    sums, counts = token_losses(model, inputs)
    return sums.sum() / counts.sum().clamp_min(1.0)
