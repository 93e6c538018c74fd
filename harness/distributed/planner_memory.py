"""Peak memory per rank of what the training code holds, phase by phase (the capacity planner's memory half).

The planner (:mod:`harness.distributed.planner`) builds each model on the meta device; this module turns its
:class:`~harness.distributed.planner.ModelFacts` and a :class:`Workload` (the run's precision, optimizer, batch,
checkpointing) into bytes. It follows the code, not a textbook:

* **precision** (``harness.config.TrainConfig``): ``dtype: bfloat16`` with ``master_weights: true`` (the full-scale
  default) keeps the weights in float32 and autocasts the compute to bf16; gradients, DDP's buckets (hence the
  communicated bytes) and AdamW's two states (``zeros_like(param)``) are then float32 too: 4 + 4 + 4 + 8 = 20 bytes
  per trainable parameter under DDP. ``master_weights: false`` keeps all of it in bf16 (10 bytes). Autocast caches a
  bf16 copy of every weight it casts (:func:`cast_bytes`) until the autocast region ends.
* **optimizer step**: AdamW's foreach path (torch's default on CUDA) allocates one state-sized temporary
  (``_foreach_sqrt`` of ``exp_avg_sq``); the per-tensor path (CPU) two of the largest tensor.
* **activations**: bytes saved for the backward per decoder layer, counted on HF Llama (transformers 5) with
  :class:`harness.distributed.storage_peak.StoragePeak`, per element of b·s·x: ``hidden`` (norms, q, RoPE, attention
  output), ``kv`` (k, v and their RoPE copies), ``intermediate`` (SwiGLU's four tensors), flash attention's
  log-sum-exp (b·a·s float32) and RMSNorm's two float32 scales (b·s). The other architectures take Llama's counts
  (Gemma 2's two extra norms per layer are not counted). Checkpointing keeps each layer's input (b·s·h in the residual
  stream's dtype) plus one layer's working set. Logits: float32 log-softmax saved (4·b·s·V), and two float32
  b·s·V tensors at the start of the backward.
* **phases** (``total`` = their maximum; what is live in each):
  - DDP (``DistEngine``): weights + optimizer state + DDP bucket buffers always; then the forward/backward start
    (+ activations + autocast copies), the backward (+ ``.grad`` + the hook's buffers, which the asynchronous hooks
    hold while the saved activations are still alive: measured on CPU, all of them add up — an upper bound where the
    backward frees activations before the hooks run), the optimizer step (+ ``.grad`` + step temporaries);
  - one process, joint SFT (HF Trainer; accelerate autocasts each forward call): as DDP without the buckets, K·b
    rows in one pass;
  - one process, a gradient method (``harness.train.grad_engine``'s ``loop``: one forward/backward per language):
    the K float32 rows are allocated before the first pass and filled in place, so every pass holds them (K·P·4) beside
    its activations, or beside its own gradients before they are copied into their row (on the CPU two passes at a
    time: ``Workload.parallel_languages``); then the combination holds the K rows, the direction and ``.grad``.
  ZeRO-3 / FSDP: weights, gradients and optimizer state divided by N, plus the largest unit gathered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.distributed.planner import ModelFacts

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ROW_BYTES = 4  # per-language gradient rows are float32 (harness.train.grad_engine._row_dtype)
SINGLE_PROCESS_METHODS = ("joint", "global", "bucket")
# bytes saved per element of b·s·{hidden, kv width, intermediate} per decoder layer, by precision regime
LAYER_COEFFS = {"float32": (28, 16, 16), "mixed": (22, 8, 8), "half": (18, 8, 8)}
NON_LAYER = {"float32": 12, "mixed": 11, "half": 8}  # final norm and embedding output, per element of b·s·h
LOGITS_SAVED, LOGITS_BACKWARD = 4, 8  # float32 log-softmax kept; its gradient and the input gradient at the backward


@dataclass(frozen=True)
class Workload:
    """Per-rank micro-batch and the training choices that set activations, precision and optimizer state.

    ``dtype`` / ``master_weights`` mean what they mean in ``TrainConfig`` (``from_train`` copies them); ``dtype=None``
    takes the built model's own element sizes without autocast. ``optimizer_state_bytes=None``: AdamW's states in the
    weights' dtype, as torch keeps them. ``foreach``: AdamW's multi-tensor step (torch's default on CUDA)."""

    batch: int = 1
    seq: int = 1024
    checkpointing: bool = True
    flash_attention: bool = True
    optimizer_state_bytes: int | None = None
    master_weights: bool = True
    ddp_bucket_copy: bool = True  # DDP bucket buffers beside .grad (gradient_as_bucket_view=False, as DistEngine)
    dtype: str | None = "bfloat16"
    optimizer: str = "adamw_torch"
    foreach: bool = True
    parallel_languages: int = 1  # single process: languages whose passes are in flight at once (the CPU loop: 2)

    @classmethod
    def from_train(cls, train: object, **overrides: object) -> Workload:
        """The workload of a ``TrainConfig`` (batch per language, sequence length, precision, optimizer, checkpointing)."""
        values = dict(batch=train.batch_size_per_language, seq=train.max_seq_len, dtype=train.dtype,
                      master_weights=train.master_weights, optimizer=train.optimizer,
                      checkpointing=train.gradient_checkpointing)
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class Precision:
    """Bytes per element of what the code keeps: weights, gradients (= DDP buckets = communicated), optimizer states,
    activations; and whether autocast copies weights."""

    weight: int
    grad: int
    state: int
    compute: int
    autocast: bool

    @property
    def regime(self) -> str:
        return "mixed" if self.autocast else "float32" if self.compute == 4 else "half"


def bucket_numel_at(f: ModelFacts, elem: int) -> tuple[int, ...]:
    """DDP's buckets (elements each, ready order) when the gradients have ``elem`` bytes per element: the cap is in
    bytes, so float32 gradients (mixed precision) fill a 25 MB bucket with half the elements of bf16 ones. Re-split from
    the gradient-ready sizes as `harness.buckets.assign_by_size` does (one dtype); the recorded buckets when ``facts``
    was given them."""
    if elem == f.grad_bytes or not f.ready_numel:
        return f.bucket_numel
    from harness.buckets import bucket_caps

    limits = bucket_caps(f.bucket_cap_mb)
    out, numel, size, level = [], 0, 0, 0
    for n in f.ready_numel:
        numel, size = numel + n, size + n * elem
        if size >= limits[level]:
            out.append(numel)
            numel, size, level = 0, 0, min(level + 1, len(limits) - 1)
    return tuple(out + ([numel] if numel else []))


def precision(f: ModelFacts, wl: Workload) -> Precision:
    if wl.dtype is None:
        w, compute, autocast = f.weight_bytes, f.weight_bytes, False
    else:
        if wl.dtype not in DTYPE_BYTES:
            raise ValueError(f"planner: unknown dtype {wl.dtype!r}; known: {', '.join(DTYPE_BYTES)}")
        compute = DTYPE_BYTES[wl.dtype]
        autocast = wl.master_weights and compute != 4
        w = 4 if autocast else compute
    state = wl.optimizer_state_bytes if wl.optimizer_state_bytes is not None else w
    return Precision(weight=w, grad=w, state=state, compute=compute, autocast=autocast)


def optimizer_state_bytes(f: ModelFacts, wl: Workload, p: Precision) -> float:
    """AdamW: two states per trainable parameter; SGD (no momentum, as built): none; Adafactor: factored rows and
    columns, about 1 % of the parameters at these shapes."""
    states = {"adamw_torch": 2.0, "sgd": 0.0, "adafactor": 0.01}.get(wl.optimizer, 2.0)
    return states * f.params_trainable * p.state


def step_temp_bytes(f: ModelFacts, wl: Workload, p: Precision) -> float:
    if wl.optimizer != "adamw_torch":
        return 0.0
    return f.params_trainable * p.state if wl.foreach else 2.0 * f.max_param_numel * p.state


def cast_bytes(f: ModelFacts, p: Precision) -> float:
    """Autocast's low-precision copies of the linear weights (cached until the autocast region ends, saved for the
    backward when not recomputed)."""
    if not p.autocast:
        return 0.0
    # LoRA: the frozen base is loaded in the compute dtype (``TrainConfig.weights_dtype``), so only the adapters' float32
    # weights are cast
    return (f.params_trainable if f.lora else f.cast_numel) * p.compute


def weight_bytes(f: ModelFacts, p: Precision) -> float:
    """The weights as loaded: all in ``p.weight``, except a LoRA run's frozen base under mixed precision, which stays in
    the compute dtype (only the trainable adapters are float32 master weights)."""
    frozen = f.params_total - f.params_trainable
    frozen_bytes = p.compute if (f.lora and p.autocast) else p.weight
    return f.params_trainable * p.weight + frozen * frozen_bytes


def layer_bytes(f: ModelFacts, wl: Workload, p: Precision, rows: int) -> float:
    """Bytes one decoder layer saves for the backward, ``rows`` sequences of ``wl.seq`` tokens."""
    bs = rows * wl.seq
    c_h, c_kv, c_i = LAYER_COEFFS[p.regime]
    attention = 0.0 if wl.flash_attention else f.heads * wl.seq * (4 + p.compute)  # probabilities, float32 + cast
    return bs * (c_h * f.hidden + c_kv * f.kv_width + c_i * f.intermediate + 4 * f.heads + 8 + attention)


def activation_bytes(f: ModelFacts, wl: Workload, elem: int | None = None, rows: int | None = None) -> float:
    """Activations at the start of the backward (``rows`` sequences, default ``wl.batch``), logits included;
    ``elem`` (legacy) forces the compute element size."""
    p = precision(f, wl)
    if elem is not None:
        p = Precision(p.weight, p.grad, p.state, elem, p.autocast and elem != 4)
    rows = wl.batch if rows is None else rows
    bs = rows * wl.seq
    per_layer = layer_bytes(f, wl, p, rows)
    stream = 2 if p.regime == "half" else 4
    layers = f.layers * bs * f.hidden * stream + per_layer if wl.checkpointing else f.layers * per_layer
    logits = bs * f.vocab * (LOGITS_SAVED + LOGITS_BACKWARD)
    return layers + NON_LAYER[p.regime] * bs * f.hidden + logits


def _cast_rows(numel: int, e: int) -> int:
    """`HookState.language_rows` multiplies in at least float32: a bf16 input is copied to float32 first."""
    return numel * 4 if e < ROW_BYTES else 0


def _logits_backward_bytes(f: ModelFacts, wl: Workload, rows: int) -> float:
    return rows * wl.seq * f.vocab * LOGITS_BACKWARD


def hook_transient_bytes(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp",
                         wl: Workload | None = None) -> float:
    """The largest bucket's buffers while its hook runs (``harness.distributed.hooks``): padded copy and received
    slices (sharded, full) or the gathered bucket (allgather, full_gather); the chained futures keep the previous
    bucket's received tensor alive while the next runs, so two of them count; the language rows (float32) and the
    combined slice with its all-gather. The full-gradient hooks' rows are counted as kept (`hook_kept_bytes`)."""
    n, k = world, min(world, languages)
    e = precision(f, wl).grad if wl is not None else f.grad_bytes
    b = max(bucket_numel_at(f, e), default=0)
    c = math.ceil(b / n)
    if hook == "mean":
        return 0.0
    if hook in ("sharded", "full"):
        received = 2 * n * c * e + _cast_rows(n * c, e)
        if hook == "full":
            return float(received)
        combined = c * ROW_BYTES + c * e + (0 if sharding == "zero3" else n * c * e)
        return float(max(received + k * c * ROW_BYTES, k * c * ROW_BYTES + combined))
    if hook in ("allgather", "full_gather"):
        received = 2 * n * b * e + _cast_rows(n * b, e)
        return float(received + (k * b * ROW_BYTES + b * ROW_BYTES if hook == "allgather" else 0))
    raise ValueError(f"unknown hook {hook!r}")


def hook_kept_bytes(f: ModelFacts, hook: str, world: int, languages: int, elem: int | None = None) -> float:
    """The full-gradient hooks keep every bucket's language rows until the backward ends: K·c_b (full: the slices)
    or K·b (full_gather: the whole gradient) float32 values per bucket (buckets at ``elem`` bytes per gradient)."""
    k = min(world, languages)
    if hook == "full":
        buckets = bucket_numel_at(f, elem or f.grad_bytes)
        return float(sum(k * math.ceil(b / world) * ROW_BYTES for b in buckets))
    if hook == "full_gather":
        return float(k * f.params_trainable * ROW_BYTES)
    return 0.0


def hook_extra_bytes(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp",
                     wl: Workload | None = None) -> float:
    """What the hook holds at its peak: the largest bucket's buffers plus the kept rows of the full-gradient hooks."""
    e = precision(f, wl).grad if wl is not None else f.grad_bytes
    return hook_transient_bytes(f, hook, world, languages, sharding, wl) + hook_kept_bytes(f, hook, world, languages, e)


def _static(f: ModelFacts, wl: Workload, p: Precision, world: int, sharding: str) -> dict[str, float]:
    unit = max(bucket_numel_at(f, p.grad), default=0)
    opt = optimizer_state_bytes(f, wl, p)
    if sharding == "zero3":
        return {"weights": weight_bytes(f, p) / world + unit * p.weight, "optimizer": opt / world,
                "gradients": f.params_trainable * p.grad / world + unit * p.grad, "ddp_buckets": 0.0}
    buckets = f.params_trainable * p.grad if (wl.ddp_bucket_copy and world > 1) else 0.0
    return {"weights": weight_bytes(f, p), "optimizer": opt, "gradients": f.params_trainable * p.grad,
            "ddp_buckets": buckets}


def predict_memory(f: ModelFacts, hook: str, world: int, languages: int, sharding: str = "ddp",
                   wl: Workload = Workload()) -> dict[str, float]:
    """Peak bytes per rank of the DDP engine (``world`` > 1; one process without buckets when 1) or ZeRO-3: the
    components, the three phases (``peak_forward``, ``peak_backward``, ``peak_step``) and ``total`` = their maximum."""
    p = precision(f, wl)
    out = _static(f, wl, p, world, sharding)
    out["hook_extra"] = hook_extra_bytes(f, hook, world, languages, sharding, wl)
    out["activations"] = activation_bytes(f, wl)
    out["autocast_copies"] = cast_bytes(f, p)
    out["step_temp"] = step_temp_bytes(f, wl, p) / (world if sharding == "zero3" else 1)
    held = out["weights"] + out["optimizer"] + out["ddp_buckets"]
    out["peak_forward"] = held + out["activations"] + out["autocast_copies"]
    saved = out["activations"] - _logits_backward_bytes(f, wl, wl.batch)
    kept_copies = 0.0 if wl.checkpointing else out["autocast_copies"]
    out["peak_backward"] = held + saved + kept_copies + out["gradients"] + out["hook_extra"]
    out["peak_step"] = held + out["gradients"] + out["step_temp"]
    out["total"] = max(out["peak_forward"], out["peak_backward"], out["peak_step"])
    return out


def predict_single_process(f: ModelFacts, method: str, languages: int, wl: Workload = Workload()) -> dict[str, float]:
    """Peak bytes of the single-process path (HF Trainer): ``joint`` SFT, or a gradient method — ``global`` (full
    MGDA / PCGrad on the whole vector) or ``bucket`` (Bucket-Level MOO), both on K float32 per-language rows."""
    if method not in SINGLE_PROCESS_METHODS:
        raise ValueError(f"planner: unknown single-process method {method!r}; known: {', '.join(SINGLE_PROCESS_METHODS)}")
    p, k, n = precision(f, wl), languages, f.params_trainable
    out = _static(f, wl, p, 1, "ddp")
    out["autocast_copies"] = cast_bytes(f, p)
    out["step_temp"] = step_temp_bytes(f, wl, p)
    held = out["weights"] + out["optimizer"]
    out["peak_step"] = held + out["gradients"] + out["step_temp"]
    if method == "joint":
        out["activations"] = activation_bytes(f, wl, rows=k * wl.batch)
        out["language_rows"] = 0.0
        out["peak_forward"] = held + out["activations"] + out["autocast_copies"]
        out["peak_backward"] = held + out["gradients"]
    else:
        out["activations"] = activation_bytes(f, wl, rows=wl.batch)
        out["language_rows"] = k * n * ROW_BYTES
        one_pass = max(out["activations"] + out["autocast_copies"], n * p.grad)  # then copied into its row
        one_pass *= max(1, wl.parallel_languages)  # harness.train.language_workers: side by side on the CPU
        out["peak_forward"] = held + k * n * ROW_BYTES + one_pass
        out["peak_backward"] = held + (k + 1) * n * ROW_BYTES + out["gradients"]
    out["total"] = max(out["peak_forward"], out["peak_backward"], out["peak_step"])
    return out
