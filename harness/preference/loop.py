"""The self-rewarding DPO loop (M1 → M2 → M3 …) with a pluggable pair filter: what a method registered with
`preference_method(...)` (`harness.preference.method`, re-exported here) runs when it trains.

One iteration, for the seen languages: take prompts from ``run.data.train[lang]`` (a seeded order, a fresh slice each
iteration), sample N responses per prompt, judge them, build best-vs-worst pairs, filter them (CONGRAD, random, none),
train with (LP-)DPO through TRL; the trained model generates and judges in the next iteration. The reference model of
iteration t is the model M_{t-1} it starts from (precomputed reference log-probs; with LoRA, TRL's frozen copy of the
adapter). Everything is logged per iteration (``step = iteration``) and language; the harness evaluates the returned
model; intermediate iterations are evaluated here (``iter<k>/`` prefix) unless disabled.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from harness.data.sft import Example
from harness.method import RunContext, TrainOutcome
from harness.preference.dpo import LPDPOTrainer, collate_pairs, dpo_dataset, make_dpo_config, sequence_logps
from harness.preference.filters import FilterContext, FilterResult, PairFilter, by_language, warn_missing
from harness.preference.generation import generate
from harness.preference.judges import make_judge
from harness.preference.method import LoopOptions
from harness.preference.pairs import Pair, build_pairs
from harness.seeding import derive_seed


def iteration_prompts(examples: Sequence[Example], seed: int, language: str, iteration: int, n: int) -> list[Example]:
    """A seeded permutation of the train examples; iteration k takes slice k (wrapping when the split is small)."""
    order = list(range(len(examples)))
    g = torch.Generator().manual_seed(derive_seed(seed, "pref/prompts", language) % 2**63)
    order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
    if not order:
        return []
    start = (iteration - 1) * n
    return [examples[order[(start + j) % len(order)]] for j in range(min(n, len(order)))]


def _histogram_figure(title: str, values: dict[str, list[float]], xlabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = [lang for lang in values if values[lang]]
    fig, axes = plt.subplots(1, max(len(langs), 1), figsize=(3.2 * max(len(langs), 1), 2.6), squeeze=False)
    for ax, lang in zip(axes[0], langs, strict=False):
        ax.hist(values[lang], bins=12)
        ax.set_title(lang)
        ax.set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


class SelfRewardingLoop:
    def __init__(self, run: RunContext, options: LoopOptions, pair_filter: PairFilter):
        self.run, self.o, self.filter = run, options, pair_filter
        # on the accelerator before generation, judging and scoring (the DPO trainer would move it only later)
        self.model = run.model.to(torch.device("cuda", run.dist.local_rank)) if torch.cuda.is_available() else run.model
        self.tok = run.tokenizer
        self.seen = tuple(run.suite.languages.seen)
        self.tracker = run.tracker
        self.judge = make_judge(options.judge, **({"max_new_tokens": options.judge_max_new_tokens,
                                                   "batch_size": options.generation_batch_size,
                                                   "prompt_max_tokens": options.max_judge_prompt_tokens}
                                                  if options.judge == "self" else {}))
        self.max_length = options.dpo_max_length or run.suite.train.max_seq_len + options.max_new_tokens
        self.dpo_step = 0
        self.summary: dict[str, float] = {}

    # -- helpers ---------------------------------------------------------------------------------------------------
    def log(self, metrics: dict[str, float], step: int) -> None:
        metrics = _finite(metrics)
        self.tracker.log_metrics(metrics, step=step)
        self.summary |= metrics

    def _generate(self, prompts: list[str], n: int, seed: int, sample: bool = True):
        o = self.o
        return generate(self.model, self.tok, prompts, n=n, do_sample=sample, temperature=o.temperature, top_p=o.top_p,
                        max_new_tokens=o.max_new_tokens, batch_size=o.generation_batch_size, seed=seed,
                        max_prompt_tokens=self.run.suite.train.max_seq_len)

    # -- the loop --------------------------------------------------------------------------------------------------
    def execute(self) -> TrainOutcome:
        started = time.perf_counter()
        if self.run.resume:  # no checkpoints: a resume starts over, and its points replace the interrupted attempt's
            self.tracker.restart_from_step(0)
        win_prompts = self._win_rate_prompts()
        initial = self._greedy_scores(win_prompts) if win_prompts else None
        for k in range(1, self.o.iterations + 1):
            self.iteration(k)
            if k < self.o.iterations and self.o.eval_each_iteration:
                self._evaluate(k)
        if initial is not None:
            self._win_rate(win_prompts, initial)
        model = self._finalise_model()
        self.summary["perf/preference_loop_s"] = time.perf_counter() - started
        return TrainOutcome(model=model, metrics={k: v for k, v in self.summary.items() if "/iter" not in k})

    def _language_pairs(self, k: int, lang: str) -> tuple[list[Pair], list[float], dict[str, float], dict[str, Any]]:
        """Iteration k, one language: generate, judge, build pairs. Returns the pairs, the parsed judge scores, the
        language's metrics and its dump (with ``_perf``: generated tokens, generation s, judge s, responses judged)."""
        run, o = self.run, self.o
        examples = iteration_prompts(run.data.train[lang], run.seed, lang, k, o.prompts_per_language)
        prompts = [ex.prompt for ex in examples]
        gens = self._generate(prompts, o.responses_per_prompt, derive_seed(run.seed, "pref/generate", k, lang))
        n = o.responses_per_prompt
        flat_prompts = [p for p in prompts for _ in range(n)]
        flat_refs = [ex.response for ex in examples for _ in range(n)]
        flat_resp = [r for rs in gens.texts for r in rs]
        judgments = self.judge.judge(self.model, self.tok, flat_prompts, flat_resp, flat_refs)
        scores = [judgments.scores[i * n: (i + 1) * n] for i in range(len(prompts))]
        pairs, stats = build_pairs(lang, prompts, gens.texts, scores, [ex.response for ex in examples], o.min_score_gap)
        judged = [s for s in judgments.scores if s is not None]
        metrics = {f"pref/pairs/{lang}": stats.pairs, f"pref/prompts/{lang}": stats.prompts,
                   f"pref/ties/{lang}": stats.ties, f"pref/too_few_scored/{lang}": stats.too_few_scored,
                   f"pref/parse_rate/{lang}": judgments.parse_rate,
                   f"pref/judge_score_mean/{lang}": sum(judged) / len(judged) if judged else float("nan")}
        metrics |= {f"pref/judge_{status}/{lang}": float(c) for status, c in judgments.counts().items()}
        dump = {"language": lang, "prompts": prompts, "responses": gens.texts, "scores": scores,
                "statuses": [judgments.statuses[i * n: (i + 1) * n] for i in range(len(prompts))],
                "judge_raw": judgments.raw[:8],
                "_perf": (gens.new_tokens, gens.seconds, judgments.seconds, len(flat_resp))}
        return pairs, judged, metrics, dump

    def iteration(self, k: int) -> None:
        metrics: dict[str, float] = {}
        all_pairs: list[Pair] = []
        judge_scores: dict[str, list[float]] = {}
        gen_tokens, gen_seconds, judge_seconds, judged = 0, 0.0, 0.0, 0
        dumps: list[dict[str, Any]] = []
        for lang in self.seen:
            pairs, judge_scores[lang], lang_metrics, dump = self._language_pairs(k, lang)
            tokens, seconds, judge_s, n_judged = dump.pop("_perf")
            gen_tokens, gen_seconds, judge_seconds, judged = (gen_tokens + tokens, gen_seconds + seconds,
                                                              judge_seconds + judge_s, judged + n_judged)
            all_pairs += pairs
            metrics |= lang_metrics
            dumps.append(dump)
        metrics |= {"pref/pairs": float(len(all_pairs)), "perf/gen_tokens_per_s": gen_tokens / max(gen_seconds, 1e-9),
                    "perf/gen_s": gen_seconds, "perf/judge_per_s": judged / max(judge_seconds, 1e-9),
                    "perf/judge_s": judge_seconds}
        self._filter_and_train(k, all_pairs, judge_scores, dumps, metrics)

    def _filter_and_train(self, k: int, all_pairs: list[Pair], judge_scores: dict[str, list[float]],
                          dumps: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        """Iteration k after the pairs: filter them, report which languages lost all pairs, log, then DPO."""
        run, o = self.run, self.o
        no_pairs = warn_missing(self.seen, {lang: len(v) for lang, v in by_language(all_pairs).items()},
                                f"preference pairs in iteration {k}")
        # filter
        ctx = FilterContext(model=self.model, tokenizer=self.tok, iteration=k, seed=run.seed, languages=self.seen,
                            beta=o.beta, alpha=o.lp_alpha, max_length=self.max_length)
        result = self.filter(all_pairs, ctx) if all_pairs else FilterResult(keep=[], scores=[])
        kept = [p for p, keep in zip(all_pairs, result.keep, strict=False) if keep]
        metrics |= result.metrics
        groups = by_language(all_pairs)
        kept_groups = by_language(kept)
        for lang in self.seen:
            n_pairs, n_kept = len(groups.get(lang, [])), len(kept_groups.get(lang, []))
            metrics[f"pref/kept/{lang}"] = float(n_kept)
            metrics[f"congrad/kept_fraction/{lang}"] = n_kept / n_pairs if n_pairs else 0.0
        metrics["pref/kept"] = float(len(kept))
        metrics["congrad/kept_fraction"] = len(kept) / len(all_pairs) if all_pairs else 0.0
        no_survivors = warn_missing(self.seen, {lang: len(v) for lang, v in kept_groups.items()},
                                    f"surviving pairs after the {getattr(self.filter, 'name', 'pair')} filter "
                                    f"in iteration {k}")
        for lang in self.seen:
            metrics[f"pref/language_without_pairs/{lang}"] = float(lang in no_pairs)
            metrics[f"pref/language_without_kept_pairs/{lang}"] = float(lang in no_survivors)
        report = {"iteration": k, "languages_without_pairs": no_pairs, "languages_without_kept_pairs": no_survivors,
                  "filter": getattr(self.filter, "name", "?"), "filter_artifacts": result.artifacts}
        self.tracker.log_dict(report, f"pref/iter{k}/report.json")
        self.tracker.log_dict({"generations": dumps,
                               "pairs": [{**p.as_row(), "kept": keep,
                                          "score": (result.scores[i] if result.scores else None)}
                                         for i, (p, keep) in enumerate(zip(all_pairs, result.keep, strict=False))]},
                              f"pref/iter{k}/pairs.json")
        self._figures(k, judge_scores, all_pairs, result)
        # DPO
        if kept:
            metrics |= self._dpo(k, kept)
        else:
            warnings.warn(f"iteration {k}: no preference pair survived; DPO skipped, model unchanged", RuntimeWarning,
                          stacklevel=2)
            metrics["dpo/skipped"] = 1.0
        self.log(metrics, step=k)
        self.log({f"iter{k}/{key}": v for key, v in metrics.items() if key.startswith(("pref/pairs", "dpo/"))}, step=k)

    def _figures(self, k: int, judge_scores: dict[str, list[float]], pairs: list[Pair], result: FilterResult) -> None:
        try:
            import matplotlib.pyplot as plt

            fig = _histogram_figure(f"iteration {k}: judge scores ({self.o.judge})", judge_scores, "score")
            self.tracker.log_figure(fig, f"pref/iter{k}/judge_scores.png")
            plt.close(fig)
            if result.scores:
                align: dict[str, list[float]] = {}
                for p, s in zip(pairs, result.scores, strict=False):
                    align.setdefault(p.language, []).append(s)
                fig = _histogram_figure(f"iteration {k}: alignment with the consensus direction", align, "score")
                self.tracker.log_figure(fig, f"congrad/iter{k}/alignment_scores.png")
                plt.close(fig)
        except Exception as err:  # a figure must never fail a run
            warnings.warn(f"score histogram not logged: {err}", RuntimeWarning, stacklevel=2)

    def _dpo(self, k: int, pairs: list[Pair]) -> dict[str, float]:
        import datasets
        from transformers.trainer_callback import PrinterCallback, TrainerCallback

        run, o, t = self.run, self.o, self.run.suite.train
        loop = self

        class Forward(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "loss" not in logs:
                    return
                loop.dpo_step += 1
                keys = {"loss": "dpo/loss", "rewards/margins": "dpo/reward_margin",
                        "rewards/accuracies": "dpo/reward_accuracy", "rewards/chosen": "dpo/reward_chosen",
                        "rewards/rejected": "dpo/reward_rejected", "grad_norm": "dpo/grad_norm",
                        "learning_rate": "dpo/lr"}
                loop.tracker.log_metrics(_finite({v: logs[key] for key, v in keys.items() if key in logs}),
                                         step=loop.dpo_step)

        from harness.train.sft import precision_arguments  # the SFT path's precision flags, same for DPO

        config = make_dpo_config(
            str(run.checkpoint_dir / f"dpo_iter{k}"), per_device_train_batch_size=o.dpo_batch_size,
            num_train_epochs=o.dpo_epochs, learning_rate=o.dpo_lr or t.lr, lr_scheduler_type="constant",
            weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optimizer, beta=o.beta,
            max_length=self.max_length, seed=derive_seed(run.seed, "pref/dpo", k) % 2**31,
            data_seed=derive_seed(run.seed, "pref/dpo", k) % 2**31,
            **precision_arguments(t), precompute_ref_batch_size=o.dpo_batch_size)
        progress = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
        try:
            trainer = LPDPOTrainer(model=self.model, args=config, train_dataset=dpo_dataset(pairs),
                                   processing_class=self.tok, lp_alpha=o.lp_alpha, callbacks=[Forward()])
            trainer.remove_callback(PrinterCallback)
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
        finally:
            if progress:
                datasets.utils.logging.enable_progress_bar()
        self.model = trainer.model
        ref_rows = trainer.train_dataset
        if hasattr(self.model, "peft_config") and "ref" in self.model.peft_config:
            self.model.delete_adapter("ref")  # the next iteration's reference is the model this one produced
            self.model.set_adapter("default")
        out = {"dpo/steps": float(trainer.state.global_step), "dpo/pairs": float(len(pairs)), "perf/dpo_s": seconds}
        out |= self._reward_stats(pairs, ref_rows)
        return out

    @torch.no_grad()
    def _reward_stats(self, pairs: list[Pair], rows: Any) -> dict[str, float]:
        """Per-language implicit reward margin β(Δ_c − Δ_r) and accuracy of the trained model on its training pairs."""
        beta = self.o.beta
        ref_c = {(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]):
                 (r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in rows}
        was = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        margins: dict[str, list[float]] = {}
        for s in range(0, len(pairs), 8):
            chunk = pairs[s: s + 8]
            batch = {k: v.to(device) for k, v in collate_pairs(self.tok, chunk, self.max_length).items()}
            pc, pr = sequence_logps(self.model, batch)[0].chunk(2)
            for j, p in enumerate(chunk):
                ref = ref_c.get((p.prompt, p.chosen, p.rejected))
                if ref is None:
                    continue
                margins.setdefault(p.language, []).append(beta * ((float(pc[j]) - ref[0]) - (float(pr[j]) - ref[1])))
        self.model.train(was)
        out: dict[str, float] = {}
        for lang, values in margins.items():
            out[f"dpo/reward_margin/{lang}"] = sum(values) / len(values)
            out[f"dpo/reward_accuracy/{lang}"] = sum(v > 0 for v in values) / len(values)
        every = [v for values in margins.values() for v in values]
        if every:
            out["dpo/final_reward_margin"] = sum(every) / len(every)
            out["dpo/final_reward_accuracy"] = sum(v > 0 for v in every) / len(every)
        return out

    def _evaluate(self, k: int) -> None:
        from harness.evaluate.pipeline import evaluate_model

        run = self.run
        metrics = evaluate_model(run.suite, self.model, self.tok, run.data, run.run_dir / f"eval_iter{k}", None)
        self.log({f"iter{k}/{key}": v for key, v in metrics.items()}, step=k)

    # -- win rate --------------------------------------------------------------------------------------------------
    def _win_rate_prompts(self) -> list[Example]:
        n = self.o.win_rate_prompts_per_language
        if n <= 0:
            return []
        return [ex for lang in self.seen for ex in self.run.data.heldout[lang][:n]]

    def _greedy_scores(self, examples: list[Example]) -> tuple[list[str], list[float | None]]:
        gens = self._generate([ex.prompt for ex in examples], 1, 0, sample=False)
        texts = [t[0] for t in gens.texts]
        judgments = self.judge.judge(self.model, self.tok, [ex.prompt for ex in examples], texts,
                                     [ex.response for ex in examples])
        return texts, judgments.scores

    def _win_rate(self, examples: list[Example], initial: tuple[list[str], list[float | None]]) -> None:
        _, init_scores = initial
        _, final_scores = self._greedy_scores(examples)
        per_lang: dict[str, list[float]] = {}
        for ex, a, b in zip(examples, final_scores, init_scores, strict=False):
            if a is None or b is None:
                continue
            per_lang.setdefault(ex.language, []).append(1.0 if a > b else 0.5 if a == b else 0.0)
        metrics = {f"pref/win_rate_vs_init/{lang}": sum(v) / len(v) for lang, v in per_lang.items()}
        every = [x for v in per_lang.values() for x in v]
        metrics["pref/win_rate_vs_init"] = sum(every) / len(every) if every else float("nan")
        metrics["pref/win_rate_judged"] = float(len(every))
        self.log(metrics, step=self.o.iterations)

    def _finalise_model(self) -> Any:
        return self.model
