"""DPO and LP-DPO: the loss as a function, TRL's DPOTrainer with the length penalty, and per-pair losses for the filter.

LP-DPO (reconstruction of CONGRAD's length-penalised DPO):
    L = −log σ( β (Δ_chosen − Δ_rejected) − α (|y_chosen| − |y_rejected|) ),   Δ = log π(y|x) − log π_ref(y|x),
with |y| the number of completion tokens the loss sees (TRL's `completion_mask`: the response and the chat template's
end-of-turn tokens, after truncation). α = 0 is plain DPO (TRL `loss_type=["sigmoid"]`).

`LPDPOTrainer` is TRL's DPOTrainer with one override: with reference log-probabilities precomputed, adding
(α/β)·|y| to the reference log-prob of each completion turns TRL's sigmoid loss into LP-DPO exactly
(β((lp_c − ref_c − (α/β)|y_c|) − (lp_r − ref_r − (α/β)|y_r|)) = β(Δ_c − Δ_r) − α(|y_c| − |y_r|)). Nothing else of TRL is
touched. Consequence, documented: TRL's logged `rewards/*` are then the length-penalised implicit rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from harness.preference.pairs import Pair


def lp_dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor, len_chosen: torch.Tensor, len_rejected: torch.Tensor, beta: float,
                alpha: float) -> torch.Tensor:
    """Per-pair LP-DPO loss (no reduction)."""
    logits = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)) - alpha * (
        len_chosen.to(policy_chosen.dtype) - len_rejected.to(policy_chosen.dtype))
    return -F.logsigmoid(logits)


# ---------------------------------------------------------------------------------------------------------------------
# tokenisation (the conversational path of TRL 1.16's DPOTrainer._prepare_dataset)
# ---------------------------------------------------------------------------------------------------------------------


def _ids(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def conversational(pair: Pair) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": pair.prompt}],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}]}


def tokenize_pair(tokenizer: Any, pair: Pair) -> dict[str, list[int]]:
    """prompt_ids / chosen_ids / rejected_ids exactly as TRL tokenizes a conversational preference example."""
    row = conversational(pair)
    prompt = _ids(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True))
    chosen = _ids(tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=True))
    rejected = _ids(tokenizer.apply_chat_template(row["prompt"] + row["rejected"], tokenize=True))
    n = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    return {"prompt_ids": prompt[:n], "chosen_ids": chosen[n:], "rejected_ids": rejected[n:]}


def collate_pairs(tokenizer: Any, pairs: Sequence[Pair], max_length: int | None) -> dict[str, torch.Tensor]:
    """TRL's preference batch: rows [chosen..., rejected...], right-padded, with `completion_mask`."""
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length)
    return collator([tokenize_pair(tokenizer, p) for p in pairs])


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion-token log-probs, number of completion tokens) per row of a collated preference batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].to(logps.dtype)
    token = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(1), mask.sum(1)


def pair_losses(model: Any, batch: dict[str, torch.Tensor], ref_logps: torch.Tensor, beta: float,
                alpha: float) -> torch.Tensor:
    """LP-DPO loss of every pair of a collated batch; `ref_logps` per row (chosen rows then rejected rows)."""
    logps, lengths = sequence_logps(model, batch)
    pc, pr = logps.chunk(2)
    rc, rr = ref_logps.chunk(2)
    lc, lr = lengths.chunk(2)
    return lp_dpo_loss(pc, pr, rc, rr, lc, lr, beta, alpha)


# ---------------------------------------------------------------------------------------------------------------------
# TRL trainer
# ---------------------------------------------------------------------------------------------------------------------


class LPDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer with the LP-DPO length penalty `lp_alpha` (0 = TRL's sigmoid DPO, untouched)."""

    def __init__(self, *args: Any, lp_alpha: float = 0.0, **kwargs: Any):
        self.lp_alpha = float(lp_alpha)
        args_obj = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
        if self.lp_alpha and args_obj is not None:
            if not args_obj.precompute_ref_log_probs:
                raise ValueError("LP-DPO (lp_alpha != 0) needs DPOConfig(precompute_ref_log_probs=True)")
            if list(args_obj.loss_type) != ["sigmoid"] or args_obj.f_divergence_type != "reverse_kl" \
                    or args_obj.ld_alpha is not None:
                raise ValueError("LP-DPO is defined for loss_type=['sigmoid'], reverse KL and ld_alpha=None")
        super().__init__(*args, **kwargs)

    def _compute_loss(self, model, inputs, return_outputs):
        if self.lp_alpha:
            lengths = inputs["completion_mask"][:, 1:].sum(1).to(inputs["ref_chosen_logps"].dtype)
            lc, lr = lengths.chunk(2)
            shift = self.lp_alpha / self.beta
            inputs = {**inputs, "ref_chosen_logps": inputs["ref_chosen_logps"] + shift * lc,
                      "ref_rejected_logps": inputs["ref_rejected_logps"] + shift * lr}
        return super()._compute_loss(model, inputs, return_outputs)


def dpo_dataset(pairs: Sequence[Pair]):
    import datasets

    rows = [conversational(p) for p in pairs]
    return datasets.Dataset.from_list(rows)


def make_dpo_config(output_dir: str, **kwargs: Any) -> DPOConfig:
    base: dict[str, Any] = dict(output_dir=output_dir, report_to=[], save_strategy="no", logging_steps=1,
                                use_cpu=not torch.cuda.is_available(), loss_type=["sigmoid"],
                                precompute_ref_log_probs=True, disable_tqdm=True, dataloader_num_workers=0)
    base.update(kwargs)
    return DPOConfig(**base)
