"""The suite schema: frozen dataclasses for models, languages, data, methods, training, evaluation, seeds, tracking.

Pure schema: each dataclass checks its own values (`check()`), and knows nothing of the method registry, the model
catalog or the evaluation tasks. Loading a YAML file, `include`, `--set` overrides and the checks against those
registries live in :mod:`harness.suite`. `Suite.resolved()` is what gets logged with every run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from harness.languages import KNOWN_LANGUAGES, OFFLINE_LANGUAGES
from harness.validate import suggest, to_dict

CACHE_VERSION = 1


# The languages of the controlled-interference lab (`data.source: interference`): synthetic, generated offline.
LAB_LANGUAGES: frozenset[str] = frozenset(f"lab{i}" for i in range(1, 9))
LAB_MAX_CONCEPTS = 40  # every lab language needs its own single-token surface word per concept (harness.data.interference)
LAB_ANSWER_VOCABULARIES = ("inputs", "separate")  # answers written with the input words, or with words of their own
LAB_MAX_CONCEPTS_SEPARATE = 22  # separate answer words double the single-token words a concept needs


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # names that become folder names under output_dir


def unsafe_name(value: str) -> str | None:
    """Why `value` cannot name a folder (a path separator, '..', a leading dot), or None."""
    if SAFE_NAME.match(value) and ".." not in value:
        return None
    return (f"{value!r} becomes a folder name: use letters, digits and . _ + - only, starting with a letter or digit "
            "(no '/' or '..')")


@dataclass(frozen=True, kw_only=True)
class SuiteInfo:
    name: str
    version: int = 1
    description: str = ""

    def check(self) -> list[tuple[str, str]]:
        problem = unsafe_name(self.name)
        return [("name", problem)] if problem else []


@dataclass(frozen=True, kw_only=True)
class Languages:
    seen: tuple[str, ...]
    unseen: tuple[str, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        out = []
        if not self.seen:
            out.append(("seen", "needs at least one language"))
        for group in ("seen", "unseen"):
            for i, code in enumerate(getattr(self, group)):
                if code not in KNOWN_LANGUAGES and code not in LAB_LANGUAGES:
                    out.append((f"{group}[{i}]", f"unknown language {code!r}{suggest(code, KNOWN_LANGUAGES)}"))
        overlap = set(self.seen) & set(self.unseen)
        if overlap:
            out.append(("unseen", f"languages both seen and unseen: {sorted(overlap)}"))
        for group in ("seen", "unseen"):
            codes = list(getattr(self, group))
            twice = sorted({c for c in codes if codes.count(c) > 1})
            if twice:
                out.append((group, f"duplicate languages: {', '.join(twice)}"))
        return out

    @property
    def all(self) -> tuple[str, ...]:
        return self.seen + self.unseen


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: Literal["chatterbot", "hub", "json", "interference"] = "chatterbot"
    max_examples_per_language: int = 200
    heldout_fraction: float = 0.2
    # training examples of individual languages (imbalance); the others keep max_examples_per_language
    examples_per_language: dict[str, int] = field(default_factory=dict)
    # hub / json sources: a dataset id or local file(s) with one row per example
    path: str | None = None
    split: str = "train"
    language_field: str = "language"
    prompt_field: str = "prompt"
    response_field: str = "response"
    # interference source (docs/interference_lab.md): languages lab1..lab8 over one shared lexical task
    seed: int = 0  # the generated data depend on this seed only, never on the run seed
    conflict: float = 0.0  # fraction of concepts whose answer the `dissenters` contest
    relatedness: float = 1.0  # fraction of concepts with one surface word shared by all languages
    dissenters: tuple[str, ...] = ()  # languages that demand the alternative answer on contested concepts
    concepts: int = 8  # few concepts: the lab converges within ~100 steps (docs/interference_lab.md)
    item_length: int = 4  # concepts per item (words in the prompt and in the answer)
    answer_vocabulary: str = "inputs"  # "separate": answers never appear as inputs (docs/interference_lab.md, v5)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.max_examples_per_language <= 0:
            out.append(("max_examples_per_language", f"expected a positive integer, got {self.max_examples_per_language}"))
        if not 0.0 < self.heldout_fraction < 1.0:
            out.append(("heldout_fraction", f"expected a number in (0, 1), got {self.heldout_fraction}"))
        if self.source in ("hub", "json") and not self.path:
            out.append(("path", f"source {self.source!r} needs a dataset id or file path"))
        for lang, n in self.examples_per_language.items():
            if n <= 0:
                out.append((f"examples_per_language.{lang}", f"expected a positive integer, got {n}"))
        return out + self._check_lab()

    def _check_lab(self) -> list[tuple[str, str]]:
        out = []
        if self.source != "interference":
            defaults = DataConfig()
            for key in ("seed", "conflict", "relatedness", "dissenters", "concepts", "item_length", "answer_vocabulary"):
                if getattr(self, key) != getattr(defaults, key):
                    out.append((key, f"only used by source: interference (the source is {self.source!r})"))
            return out
        for key in ("conflict", "relatedness"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                out.append((key, f"expected a number in [0, 1], got {getattr(self, key)}"))
        if not 2 <= self.concepts <= LAB_MAX_CONCEPTS:
            out.append(("concepts", f"expected an integer in [2, {LAB_MAX_CONCEPTS}], got {self.concepts}"))
        if self.item_length <= 0:
            out.append(("item_length", f"expected a positive integer, got {self.item_length}"))
        if self.answer_vocabulary not in LAB_ANSWER_VOCABULARIES:
            out.append(("answer_vocabulary", f"expected one of {list(LAB_ANSWER_VOCABULARIES)}, "
                                             f"got {self.answer_vocabulary!r}{suggest(self.answer_vocabulary, LAB_ANSWER_VOCABULARIES)}"))
        elif self.answer_vocabulary == "separate" and self.concepts > LAB_MAX_CONCEPTS_SEPARATE:
            out.append(("concepts", f"answer_vocabulary 'separate' allows at most {LAB_MAX_CONCEPTS_SEPARATE} "
                                    f"concepts, got {self.concepts}"))
        for i, code in enumerate(self.dissenters):
            if code not in LAB_LANGUAGES:
                out.append((f"dissenters[{i}]", f"not a lab language: {code!r}{suggest(code, LAB_LANGUAGES)}"))
        return out


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def check(self) -> list[tuple[str, str]]:
        return [("rank", f"expected a positive integer, got {self.rank}")] if self.rank <= 0 else []


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int = 30
    batch_size_per_language: int = 4
    lr: float = 3e-4
    schedule: Literal["constant", "linear", "cosine", "constant_with_warmup"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 96
    optimizer: Literal["adamw_torch", "sgd", "adafactor"] = "adamw_torch"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraConfig | None = None
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    save_model: bool = True  # final weights under <run>/final (checkpoints are dropped once a run finishes)
    # gradient methods, single process: per-language gradients by one pass per language (loop), one batched
    # torch.func pass (vmap) or one forward + one backward of the whole batch with per-row contributions grouped by
    # language (one_backward); same rows (harness.train.grad_engine), different speed (results/bench/grad_engine.md)
    grad_engine: Literal["loop", "vmap", "one_backward"] = "loop"
    # dtype bfloat16 / float16: keep fp32 master weights and optimizer state and compute in dtype (autocast), so small
    # updates are not rounded away; false: weights and optimizer state in dtype too (pure low precision)
    master_weights: bool = True
    gradient_checkpointing: bool = False  # recompute activations in the backward (HF models; loop and vmap engines)

    @property
    def weights_dtype(self) -> str:
        """The dtype the weights are loaded and kept in: float32 under mixed precision, else ``dtype``. With LoRA the
        frozen base stays in ``dtype`` (it is never updated, so a float32 copy would only cost memory: 32 GB for an 8B
        model); peft keeps the trainable adapters in float32 (``autocast_adapter_dtype``), so they are the master
        weights."""
        return "float32" if self.master_weights and self.lora is None else self.dtype

    @property
    def autocast_dtype(self) -> str | None:
        """The compute dtype of mixed precision (None: the weights' own dtype)."""
        return self.dtype if self.master_weights and self.dtype != "float32" else None

    def check(self) -> list[tuple[str, str]]:
        out = []
        for key in ("steps", "batch_size_per_language", "max_seq_len", "log_every"):
            if getattr(self, key) <= 0:
                out.append((key, f"expected a positive integer, got {getattr(self, key)}"))
        for key in ("warmup_steps", "save_every"):
            if getattr(self, key) < 0:
                out.append((key, f"expected a non-negative integer, got {getattr(self, key)}"))
        if self.lr <= 0:
            out.append(("lr", f"expected a positive number, got {self.lr}"))
        if self.max_grad_norm < 0:
            out.append(("max_grad_norm", f"expected >= 0 (0 disables clipping), got {self.max_grad_norm}"))
        if self.grad_engine == "one_backward" and self.gradient_checkpointing:
            out.append(("grad_engine", "one_backward needs the activations of the forward (it reads them in the "
                                       "backward); with gradient_checkpointing use grad_engine: loop"))
        return out


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    heldout_loss: bool = True
    tasks: tuple[str, ...] = ("babel_mc",)
    mc_items_per_language: int = 40
    lm_eval_tasks: dict[str, str] = field(default_factory=dict)  # full scale: lm-eval task name -> language
    batch_size: int = 16
    limit: int | None = None
    bootstrap_iters: int = 100  # lm-eval's standard errors (a closed form for acc, a bootstrap for f1 & co.); 0: none

    def check(self) -> list[tuple[str, str]]:
        out = []  # task names are checked against the evaluation registry by harness.suite
        for task, lang in self.lm_eval_tasks.items():
            if lang not in KNOWN_LANGUAGES:
                out.append((f"lm_eval_tasks.{task}", f"unknown language {lang!r}{suggest(lang, KNOWN_LANGUAGES)}"))
        if self.mc_items_per_language <= 0 or self.batch_size <= 0:
            out.append(("mc_items_per_language", "mc_items_per_language and batch_size must be positive"))
        if self.bootstrap_iters < 0:
            out.append(("bootstrap_iters", f"expected a non-negative integer (0: no standard errors), got {self.bootstrap_iters}"))
        return out


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite under results/mlflow
    experiment: str | None = None  # None: polymoo/<suite name>


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    nproc: int = 1
    hook: Literal["mean", "allgather", "sharded", "full", "full_gather"] = "sharded"
    timeout_s: int = 300
    warmup_steps: int = 1
    grad_accum: int = 1  # micro-batches per optimizer step (no_sync); the hook sees the accumulated gradient
    # how long the other ranks wait for rank 0 alone (after a run: evaluation, saving, plots; before its training:
    # logging the run's start to MLflow): a gloo group of its own,
    # so `timeout_s` keeps bounding the training collectives (a dead rank still fails the run quickly)
    eval_timeout_s: int = 86400
    # ddp: DDP + a communication hook per bucket; fsdp2: every decoder block a fully_shard unit, the unit is the bucket,
    # MOO inside the unit's reduce-scatter (harness.distributed.fsdp2, docs/distributed.md)
    engine: Literal["ddp", "fsdp2"] = "ddp"

    def check(self) -> list[tuple[str, str]]:
        out = []
        for key in ("nproc", "timeout_s", "grad_accum", "eval_timeout_s"):
            if getattr(self, key) <= 0:
                out.append((key, f"expected a positive integer, got {getattr(self, key)}"))
        if self.warmup_steps < 0:
            out.append(("warmup_steps", f"expected a non-negative integer, got {self.warmup_steps}"))
        return out


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # leaderboard row name; default derives from name and options
    # The method's typed Options, parsed once by harness.suite when the suite is validated. Derived, so it is not part
    # of the schema (init=False: a YAML file cannot set it) nor of the resolved config and its hash.
    parsed_options: Any = field(default=None, init=False, compare=False, repr=False)

    def check(self) -> list[tuple[str, str]]:
        problem = unsafe_name(self.display)
        return [("label" if self.label else "name", problem)] if problem else []

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        return self.name


@dataclass(frozen=True, kw_only=True)
class Suite:
    suite: SuiteInfo
    scale: Literal["tiny", "full"] = "tiny"
    init: Literal["random", "pretrained"] = "random"  # tiny twins: seeded random weights, or pre-trained on the corpus
    models: tuple[str, ...]
    languages: Languages
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: tuple[MethodSpec, ...]
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: tuple[int, ...] = (0,)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    output_dir: str = "results/runs"
    source: str = field(default="<memory>", compare=False)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if not self.models:
            out.append(("models", "needs at least one model"))
        if not self.methods:
            out.append(("methods", "needs at least one method"))
        if not self.seeds:
            out.append(("seeds", "needs at least one seed"))
        for key in ("seeds", "models"):
            values = list(getattr(self, key))
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:
                out.append((key, f"listed twice: {', '.join(twice)} (each would overwrite the other's runs)"))
        if self.scale == "tiny" and self.data.source == "chatterbot":
            for group in ("seen", "unseen"):
                for i, code in enumerate(getattr(self.languages, group)):
                    if code in KNOWN_LANGUAGES and code not in OFFLINE_LANGUAGES:
                        out.append((f"languages.{group}[{i}]",
                                    f"no offline data for {code!r} in chatterbot-corpus; available: "
                                    f"{', '.join(sorted(OFFLINE_LANGUAGES))}"))
        if self.init == "pretrained" and self.scale != "tiny":
            out.append(("init", "pretrained bases exist for the tiny twins only (scale: tiny); full-scale models "
                                "are pre-trained already"))
        return out + self._check_lab_languages()

    def _check_lab_languages(self) -> list[tuple[str, str]]:
        out = []
        lab = self.data.source == "interference"
        for group in ("seen", "unseen"):
            for i, code in enumerate(getattr(self.languages, group)):
                if lab and code not in LAB_LANGUAGES:
                    out.append((f"languages.{group}[{i}]", f"source interference generates languages "
                                f"{', '.join(sorted(LAB_LANGUAGES))}, not {code!r}"))
                elif not lab and code in LAB_LANGUAGES:
                    out.append((f"languages.{group}[{i}]", f"{code!r} is a lab language: it needs "
                                "data.source: interference"))
        if lab:
            for lang in self.data.examples_per_language:
                if lang not in self.languages.all:
                    out.append((f"data.examples_per_language.{lang}", "not a language of the suite"))
            seen = self.languages.seen
            camps = {code in self.data.dissenters for code in seen}
            if self.data.conflict > 0 and camps != {True, False}:
                out.append(("data.dissenters", f"conflict {self.data.conflict} needs both camps among the seen "
                            f"languages: some in dissenters (now {list(self.data.dissenters)}) and some not"))
        return out

    def resolved(self) -> dict[str, Any]:
        data = to_dict(self)
        data.pop("source", None)
        _drop_new_defaults(data, _ADDED_LATER)
        return data

    def config_hash(self) -> str:
        blob = json.dumps({"suite": self.resolved(), "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_only(self, *, model: str | Sequence[str] | None = None, method: str | Sequence[str] | None = None,
                  seed: int | Sequence[int] | None = None) -> Suite:
        """A copy restricted to some models / methods / seeds (CLI filters, repeatable, and nox `train(<method>)`),
        in the suite's order. A method is a label when some method carries it (``mgda`` is then not also
        ``mgda-full-gather``), else a method name, which selects all of its variants (``bkmoo``: bkmoo_mgda, ...)."""
        out = self
        if model is not None:
            wanted = (model,) if isinstance(model, str) else tuple(model)
            out = replace(out, models=tuple(m for m in out.models if m in wanted))
        if method is not None:
            picked = [m for name in ((method,) if isinstance(method, str) else method) for m in self._methods_named(name)]
            out = replace(out, methods=tuple(m for m in out.methods if any(m is p for p in picked)))
        if seed is not None:
            out = replace(out, seeds=tuple(dict.fromkeys((seed,) if isinstance(seed, int) else seed)))
        return out

    def _methods_named(self, name: str) -> tuple[MethodSpec, ...]:
        by_label = tuple(m for m in self.methods if m.display == name)
        return by_label or tuple(m for m in self.methods if m.name == name)


# Keys added after config hashes were recorded (golden records, MLflow runs): left out of the resolved config while
# they hold their default, so a suite that does not use them keeps its config hash.
_ADDED_LATER: dict[str, Any] = {
    "init": "random",
    "data": {"examples_per_language": {}, "seed": 0, "conflict": 0.0, "relatedness": 1.0, "dissenters": [],
             "concepts": 8, "item_length": 4, "answer_vocabulary": "inputs"},
    "eval": {"bootstrap_iters": 100},
    "train": {"grad_engine": "loop", "master_weights": True, "gradient_checkpointing": False},
    "distributed": {"eval_timeout_s": 86400, "engine": "ddp"},
}


def _drop_new_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, default in defaults.items():
        if isinstance(default, dict) and default and isinstance(data.get(key), dict):
            _drop_new_defaults(data[key], default)
        elif key in data and data[key] == default:
            del data[key]
