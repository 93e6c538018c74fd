"""`LoopOptions`: the options every self-rewarding DPO method shares, defined without torch.

A preference method (CONGRAD and its baselines) registers with :func:`harness.method.preference_method` from its
Options (a subclass of these) and a pair-filter factory; the loop itself (:mod:`harness.preference.loop`: generation,
judging, DPO through TRL) is imported when the method trains, so discovery (``polymoo methods``) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.preference.judges import JUDGES
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """Options shared by every self-rewarding method (CONGRAD, its baselines): they differ only in the pair filter."""

    iterations: int = option(3, "reconstruction", "self-rewarding iterations M1 -> M2 -> M3 (count)")
    prompts_per_language: int = option(16, "reconstruction",
                                       "prompts per seen language per iteration (a fresh seeded slice of the train split)")
    responses_per_prompt: int = option(4, "reconstruction", "N sampled responses per prompt")
    temperature: float = option(0.8, "reconstruction", "sampling temperature")
    top_p: float = option(0.95, "reconstruction", "nucleus sampling top-p")
    max_new_tokens: int = option(48, "harness", "maximum generated tokens per response")
    generation_batch_size: int = option(16, "harness", "prompts per generate() call")
    judge: str = option("reference", "reconstruction",
                        "self: the model scores its answers with the additive 5-point rubric; reference: chrF against "
                        "the prompt's reference answer (deterministic; for tiny random models)")
    judge_max_new_tokens: int = option(64, "harness", "tokens the self judge may write")
    max_judge_prompt_tokens: int = option(1024, "harness", "the self judge's prompt budget: the rubric and the question "
                                                          "are kept, the response is cut to fit")
    min_score_gap: float = option(0.0, "reconstruction", "pairs need best - worst > this (0: only exact ties skipped)")
    beta: float = option(0.1, "reconstruction", "DPO beta")
    lp_alpha: float = option(0.01, "reconstruction",
                             "LP-DPO length penalty alpha per token of length difference (0 = plain DPO)")
    dpo_epochs: float = option(1.0, "reconstruction", "DPO epochs over the kept pairs per iteration")
    dpo_batch_size: int = option(4, "harness", "pairs per DPO step")
    dpo_lr: float | None = option(None, "harness", "DPO learning rate (null: the suite's train.lr)")
    sft_first: bool = option(False, "reconstruction",
                             "start the loop from an SFT model, as the self-rewarding recipe does (its M1): joint SFT "
                             "on the seen languages with the suite's train settings (train.steps, lr, schedule, batch), "
                             "then the iterations; needs dpo_lr, since train.lr is then the SFT stage's")
    dpo_max_length: int | None = option(None, "harness",
                                        "DPO max sequence length (null: train.max_seq_len + max_new_tokens)")
    eval_each_iteration: bool = option(True, "harness",
                                       "evaluate intermediate iterations (metrics prefixed iter<k>/); the final model "
                                       "is always evaluated by the harness")
    win_rate_prompts_per_language: int = option(4, "harness",
                                                "held-out prompts per seen language for the win rate of the final model "
                                                "vs the initial one under the configured judge (0: skip)")

    def check(self) -> list[tuple[str, str]]:
        out = []
        for key in ("iterations", "prompts_per_language", "max_new_tokens", "generation_batch_size",
                    "judge_max_new_tokens", "dpo_batch_size", "max_judge_prompt_tokens"):
            if getattr(self, key) <= 0:
                out.append((key, f"expected a positive integer, got {getattr(self, key)}"))
        if self.responses_per_prompt < 2:
            out.append(("responses_per_prompt", f"needs at least 2 responses to build a pair, got {self.responses_per_prompt}"))
        if self.judge not in JUDGES:
            out.append(("judge", f"expected one of {list(JUDGES)}, got {self.judge!r}"))
        if not 0 < self.top_p <= 1:
            out.append(("top_p", f"expected a number in (0, 1], got {self.top_p}"))
        if self.temperature <= 0:
            out.append(("temperature", f"expected a positive number, got {self.temperature}"))
        if self.beta <= 0:
            out.append(("beta", f"expected a positive number, got {self.beta}"))
        if self.lp_alpha < 0:
            out.append(("lp_alpha", f"expected >= 0, got {self.lp_alpha}"))
        if self.dpo_epochs <= 0:
            out.append(("dpo_epochs", f"expected a positive number, got {self.dpo_epochs}"))
        if self.win_rate_prompts_per_language < 0:
            out.append(("win_rate_prompts_per_language", "expected >= 0"))
        if self.sft_first and self.dpo_lr is None:
            out.append(("dpo_lr", "sft_first needs an explicit DPO learning rate: train.lr is the SFT stage's"))
        return out
