"""The shared training path: HF Trainer with language-balanced batches and an optional gradient combiner.

Every SFT-style method runs through `train_sft`: same data order (seed-only), optimizer, clipping,
schedule and checkpointing. Methods differ only in `combiner`:
- None (joint SFT): one forward over the mixed batch; the loss is the mean over languages of each
  language's token-mean loss, so its gradient is exactly the mean of the per-language gradients;
- a `GradientCombiner`: the K per-language flat gradients (`train.grad_engine`: one forward/backward per language,
  or one batched torch.func pass; `harness.train.grad_engine`) combined into one direction that is written into
  `.grad` before clipping and the optimizer step.
A step whose gradients are not finite is skipped (no optimizer update), counted and logged.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from harness.data.sft import BalancedBatchSampler, TokenizedLanguages, collate
from harness.faults import maybe_fail
from harness.method import RunContext
from harness.moo.combiners import GradientCombiner
from harness.numerics import all_finite
from harness.perf import PeakMemory
from harness.train.grad_engine import language_gradients
from harness.train.losses import token_losses


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters in `named_parameters` order: the layout of every flat gradient."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def language_losses(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Token-mean loss of each language present in the batch."""
    sums, counts = token_losses(model, inputs)
    out = {}
    for lang in inputs["language"].unique().tolist():
        sel = inputs["language"] == lang
        out[int(lang)] = sums[sel].sum() / counts[sel].sum().clamp_min(1.0)
    return out


class PolymooTrainer(Trainer):
    def __init__(self, *args: Any, languages: list[str], per_language: int, data_seed: int,
                 combiner: GradientCombiner | None = None, grad_engine: str = "loop", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.languages, self.per_language, self.data_seed, self.combiner = languages, per_language, data_seed, combiner
        self.grad_engine = grad_engine
        self._combiner_takes_losses = combiner is not None and _takes_losses(combiner)  # once, not every step
        self.step_log: dict[str, float] = {}
        self.skipped_steps = 0
        self._skip_update = False

    # -- data: the same balanced, seed-only order for every method ---------------------------------------------
    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        sampler = BalancedBatchSampler(self.train_dataset.index_by_language, self.per_language,
                                       self.args.max_steps, self.data_seed)
        return torch.utils.data.DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator)

    # -- loss ----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = language_losses(model, inputs)
        self._record_losses(losses)
        loss = torch.stack(list(losses.values())).mean()
        return (loss, None) if return_outputs else loss

    def _record_losses(self, losses: dict[int, torch.Tensor]) -> None:
        for lang_id, value in losses.items():
            self.step_log[f"train/loss/{self.languages[lang_id]}"] = float(value.detach())

    # -- one step ------------------------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        self.step_log = {}
        if self.combiner is None:
            with self.compute_loss_context_manager():  # autocast under mixed precision
                loss = self.compute_loss(model, inputs)
            self.accelerator.backward(loss)
        else:
            with self.compute_loss_context_manager():
                loss = self._combined_step(model, inputs)
        self._guard_non_finite(model)
        self.step_log["train/loss"] = float(loss.detach())
        return loss.detach()

    def _combined_step(self, model, inputs) -> torch.Tensor:
        params = [p for _, p in trainable_parameters(model)]
        rows = language_gradients(self.grad_engine, model, inputs, params, token_losses)
        losses = dict(zip(rows.languages, rows.losses, strict=True))
        self._record_losses(losses)
        stacked = rows.rows.float()
        names = [self.languages[i] for i in rows.languages]
        if not all_finite(stacked):
            direction = torch.full_like(stacked[0], float("nan"))  # skipped below, never combined
        else:
            result = self._combine(stacked, names, rows.losses)
            direction = result.direction
            self.step_log.update(result.metrics)
        offset = 0
        for p in params:
            n = p.numel()
            update = direction[offset: offset + n].view_as(p).to(p.dtype)
            p.grad = update.clone() if p.grad is None else p.grad + update
            offset += n
        return torch.stack(list(losses.values())).mean()

    def _combine(self, stacked: torch.Tensor, names: list[str], losses: torch.Tensor) -> Any:
        """The combiner on the K flat gradients; the K per-language mean losses go along when it takes them."""
        if self._combiner_takes_losses:
            return self.combiner(stacked, names, self.state.global_step, losses=losses)
        return self.combiner(stacked, names, self.state.global_step)

    def _guard_non_finite(self, model) -> None:
        """Non-finite gradients: zero them and skip the optimizer update (weights are never corrupted)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = all_finite(grads)
        self._skip_update = not finite
        if not finite:
            for g in grads:
                g.zero_()
            self.skipped_steps += 1
        self.step_log["train/skipped_steps"] = float(self.skipped_steps)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        for group in optimizer.param_groups:  # torch's default on CPU is a Python loop over tensors: the multi-tensor
            if "foreach" in group and group["foreach"] is None:  # kernels give the same bits, 2.5x faster there
                group["foreach"] = True
        inner_step = optimizer.step

        def guarded_step(*args: Any, **kwargs: Any) -> Any:
            if self._skip_update:
                return None
            return inner_step(*args, **kwargs)

        optimizer.step = guarded_step
        return optimizer


def _takes_losses(combiner: Any) -> bool:
    """Whether ``combiner`` accepts ``losses=`` (combiners written before it existed are called without it)."""
    try:
        params = inspect.signature(combiner).parameters
    except (TypeError, ValueError):
        return False
    return "losses" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


WEIGHTING_STATE_FILE = "polymoo_weighting_state.pt"
"""Beside each HF checkpoint: the combiner's weighting state (``GramCombiner.state_dict``), restored on resume."""


class WeightingStateCallback(TrainerCallback):
    """Saves the combiner's weighting state into every checkpoint folder (stateful weightings: GradVac, FAMO)."""

    def __init__(self, combiner: Any):
        self.combiner = combiner

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            torch.save(self.combiner.state_dict(), folder / WEIGHTING_STATE_FILE)


CHECKPOINT_COMPLETE = "POLYMOO_COMPLETE"
"""Written last into a checkpoint folder, before it is renamed into place: resume takes only folders with it."""
COUNTERS_FILE = "polymoo_counters.json"
"""Beside each HF checkpoint: the trainer's own counters (skipped non-finite steps), restored on resume."""
STAGING = ".staging"
"""HF writes each checkpoint into ``checkpoints/.staging/checkpoint-N``; `CheckpointFinisher` renames it into
``checkpoints/`` once complete, so a stop or a full disk mid-write leaves nothing that resume could pick up."""
KEEP_CHECKPOINTS = 2


def staging_dir(run: RunContext) -> Path:
    return run.checkpoint_dir / STAGING


class CheckpointFinisher(TrainerCallback):
    """Completes each checkpoint (keep it last among the callbacks): the trainer's counters, the marker, an atomic
    rename from the staging folder into ``checkpoints/``, and only the newest `KEEP_CHECKPOINTS` kept."""

    def __init__(self, final_root: Path, trainer_ref: Callable[[], PolymooTrainer]):
        self.final_root, self.trainer_ref = final_root, trainer_ref

    def on_save(self, args, state, control, **kwargs):
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not staged.is_dir():
            return
        (staged / COUNTERS_FILE).write_text(json.dumps({"skipped_steps": self.trainer_ref().skipped_steps}))
        (staged / CHECKPOINT_COMPLETE).write_text(str(state.global_step))
        final = self.final_root / staged.name
        if final.exists():  # a complete checkpoint of the same step (a resume with changed save_every): replace it
            old = final.with_name(f".old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        staged.rename(final)
        for stale in complete_checkpoints(self.final_root)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(stale, ignore_errors=True)


def load_weighting_state(combiner: Any, checkpoint: str | None) -> None:
    """Restore the weighting state saved beside ``checkpoint``; a stateful combiner refuses a checkpoint without it."""
    if checkpoint is None or not hasattr(combiner, "load_state_dict"):
        return
    path = Path(checkpoint) / WEIGHTING_STATE_FILE
    if path.exists():
        combiner.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    elif getattr(getattr(combiner, "rule", None), "stateful", False):
        raise FileNotFoundError(f"resuming a stateful weighting from {checkpoint}, which has no {WEIGHTING_STATE_FILE}")


class StepLogger(TrainerCallback):
    """Per-step metrics to the tracker: per-language losses, combiner diagnostics, lr, time, tokens/s, memory."""

    def __init__(self, run: RunContext, trainer_ref: Callable[[], PolymooTrainer], log_every: int):
        self.run, self.trainer_ref, self.log_every = run, trainer_ref, log_every
        self.memory = PeakMemory()
        self._t0 = time.perf_counter()
        self.step_times: list[float] = []
        self.tokens = 0

    def on_step_begin(self, args, state, control, **kwargs):
        maybe_fail(state.global_step)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer_ref()
        dt = time.perf_counter() - self._t0
        self.step_times.append(dt)
        tokens = trainer.state.num_input_tokens_seen if hasattr(trainer.state, "num_input_tokens_seen") else 0
        metrics = dict(trainer.step_log)
        metrics["perf/step_time_s"] = dt
        metrics["perf/peak_mem_mb"] = self.memory.peak_mb()
        if trainer.lr_scheduler is not None:
            metrics["train/lr"] = float(trainer.lr_scheduler.get_last_lr()[0])
        if tokens and tokens > self.tokens:
            metrics["perf/tokens_per_s"] = (tokens - self.tokens) / max(dt, 1e-9)
            self.tokens = tokens
        if state.global_step % self.log_every == 0 or state.global_step == state.max_steps:
            self.run.tracker.log_metrics({k: v for k, v in metrics.items() if _finite(v)}, step=state.global_step)
        _show_losses(trainer, trainer.step_log)

    def on_train_end(self, args, state, control, **kwargs):
        combiner = self.trainer_ref().combiner
        if hasattr(combiner, "close"):  # figures drawn once, outside the timed steps
            combiner.close()

    def summary(self) -> dict[str, float]:
        times = self.step_times[1:] or self.step_times  # the first step pays for warm-up
        return {"perf/mean_step_time_s": sum(times) / max(len(times), 1), "perf/peak_mem_mb": self.memory.peak_mb()}


def _show_losses(trainer: PolymooTrainer, step_log: dict[str, float]) -> None:
    """The step's loss and per-language losses as the progress bar's postfix (``loss=3.210, en=3.100, fr=3.350``;
    a skipped step shows its nan)."""
    shown = {"loss": step_log["train/loss"]} if "train/loss" in step_log else {}
    shown |= {k.removeprefix("train/loss/"): v for k, v in step_log.items() if k.startswith("train/loss/")}
    for cb in trainer.callback_handler.callbacks:
        bar = getattr(cb, "training_bar", None) if isinstance(cb, ProgressCallback) else None
        if bar is not None and shown:
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def precision_arguments(t: Any) -> dict[str, bool]:
    """HF / TRL precision flags of a TrainConfig: mixed precision (fp32 master weights, autocast in ``dtype``)
    everywhere it is asked for; pure bfloat16 weights as before (the flag only on CUDA); fp16 autocast only on CUDA
    (it needs a loss scaler). Activation checkpointing when ``gradient_checkpointing``."""
    cuda = torch.cuda.is_available()
    mixed = t.autocast_dtype is not None
    return {"bf16": t.dtype == "bfloat16" and (mixed or cuda), "fp16": t.dtype == "float16" and cuda,
            "gradient_checkpointing": t.gradient_checkpointing}


def training_arguments(run: RunContext, **overrides: Any) -> TrainingArguments:
    t = run.suite.train
    save_every = t.save_every or t.steps
    kwargs: dict[str, Any] = dict(
        output_dir=str(staging_dir(run)), max_steps=t.steps, learning_rate=t.lr, lr_scheduler_type=t.schedule,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optimizer,
        per_device_train_batch_size=t.batch_size_per_language * len(run.suite.languages.seen),
        gradient_accumulation_steps=1, logging_steps=t.log_every, save_steps=save_every, save_strategy="steps",
        save_total_limit=2, report_to=[], seed=run.seed, data_seed=run.seed, use_cpu=not torch.cuda.is_available(),
        **precision_arguments(t), remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=False, include_num_input_tokens_seen=True,
        save_only_model=False, average_tokens_across_devices=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def train_sft(run: RunContext, combiner: GradientCombiner | None = None,
              extra_callbacks: list[TrainerCallback] | None = None) -> tuple[Any, dict[str, float]]:
    """Train run.model on the seen languages; returns (model, summary metrics)."""
    t = run.suite.train
    seen = list(run.suite.languages.seen)
    dataset = TokenizedLanguages(run.tokenizer, {lang: run.data.train[lang] for lang in seen}, t.max_seq_len)
    holder: dict[str, PolymooTrainer] = {}
    logger = StepLogger(run, lambda: holder["trainer"], t.log_every)
    callbacks: list[TrainerCallback] = [logger, *(extra_callbacks or [])]
    if hasattr(combiner, "state_dict"):
        callbacks.append(WeightingStateCallback(combiner))
    callbacks.append(CheckpointFinisher(run.checkpoint_dir, lambda: holder["trainer"]))  # last: after every file
    trainer = PolymooTrainer(
        model=run.model, args=training_arguments(run), train_dataset=dataset,
        data_collator=collate(run.tokenizer.pad_token_id), languages=seen, per_language=t.batch_size_per_language,
        data_seed=run.seed, combiner=combiner, grad_engine=t.grad_engine, callbacks=callbacks,
    )
    holder["trainer"] = trainer
    checkpoint = last_checkpoint(run) if run.resume else None
    shutil.rmtree(staging_dir(run), ignore_errors=True)  # what a stopped attempt half wrote
    load_weighting_state(combiner, checkpoint)
    restore_counters(trainer, checkpoint)
    if run.resume:
        run.tracker.restart_from_step(int(Path(checkpoint).name.removeprefix("checkpoint-")) if checkpoint else 0)
    trainer.train(resume_from_checkpoint=checkpoint)
    summary = {**logger.summary(), "train/skipped_steps": float(trainer.skipped_steps),
               "train/final_loss": trainer.step_log.get("train/loss", float("nan"))}
    return trainer.model, summary


def complete_checkpoints(root: Path) -> list[Path]:
    """The complete checkpoints under `root` (with the CHECKPOINT_COMPLETE marker), oldest first."""
    if not root.exists():
        return []
    complete = [p for p in root.glob("checkpoint-*")
                if p.name.removeprefix("checkpoint-").isdigit() and (p / CHECKPOINT_COMPLETE).exists()]
    return sorted(complete, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def last_checkpoint(run: RunContext) -> str | None:
    """The newest complete checkpoint; half-written ones (in the staging folder, or without the marker) are skipped."""
    complete = complete_checkpoints(run.checkpoint_dir)
    return str(complete[-1]) if complete else None


def restore_counters(trainer: PolymooTrainer, checkpoint: str | None) -> None:
    """The counters saved with `checkpoint` (a checkpoint written before they were saved restores none)."""
    path = Path(checkpoint) / COUNTERS_FILE if checkpoint else None
    if path is not None and path.exists():
        trainer.skipped_steps = int(json.loads(path.read_text())["skipped_steps"])
