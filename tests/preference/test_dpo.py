"""LP-DPO: the loss by hand, α = 0 equals TRL's DPO on the same batch, α > 0 equals the hand formula inside the TRL
trainer, and the filter's tokenisation / per-pair losses are TRL's."""

from __future__ import annotations

import math

import pytest
import torch

# harness.preference.dpo and trl's DPOTrainer import transformers.Trainer (seconds): each test imports what it uses,
# so collecting this module stays cheap.


def test_lp_dpo_loss_hand_computed():
    from harness.preference.dpo import lp_dpo_loss

    # z = 0.1 * ((-10 + 11) - (-12 + 11)) - 0.05 * (5 - 3) = 0.2 - 0.1 = 0.1 ; loss = log(1 + e^-0.1)
    t = torch.tensor
    loss = lp_dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), t([5]), t([3]), beta=0.1, alpha=0.05)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-7)
    assert float(loss) == pytest.approx(0.6443966600735709, abs=1e-7)
    # a longer chosen answer is penalised, a longer rejected one favoured
    plain = lp_dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), t([5]), t([3]), beta=0.1, alpha=0.0)
    assert float(loss) > float(plain)
    swapped = lp_dpo_loss(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), t([3]), t([5]), beta=0.1, alpha=0.05)
    assert float(swapped) < float(plain)


def _trainer(cls, model, tok, pairs, tmp_path, **extra):
    from harness.preference.dpo import dpo_dataset, make_dpo_config

    cfg = make_dpo_config(str(tmp_path / cls.__name__), per_device_train_batch_size=len(pairs), max_steps=1,
                          learning_rate=1e-3, beta=0.1, max_length=64, seed=0)
    return cls(model=model, args=cfg, train_dataset=dpo_dataset(pairs), processing_class=tok, **extra)


def _batch(trainer, n):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


@pytest.fixture(scope="module")
def fresh_llama():
    from harness.models.loading import load_model

    return load_model("llama", "tiny")


def test_alpha_zero_equals_trl_dpo_and_alpha_positive_equals_hand_formula(fresh_llama, pairs, tmp_path):
    from trl import DPOTrainer

    from harness.preference.dpo import LPDPOTrainer, pair_losses, sequence_logps

    model, tok = fresh_llama
    pairs = pairs[:4]
    trl_plain = _trainer(DPOTrainer, model, tok, pairs, tmp_path)
    lp0 = _trainer(LPDPOTrainer, model, tok, pairs, tmp_path, lp_alpha=0.0)
    alpha = 0.05
    lp = _trainer(LPDPOTrainer, model, tok, pairs, tmp_path, lp_alpha=alpha)
    batch = _batch(trl_plain, len(pairs))
    # nudge the policy away from the reference so Δ ≠ 0 (the precomputed reference log-probs stay those of the start)
    saved = model.lm_head.weight.detach().clone()
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn(saved.shape, generator=torch.Generator().manual_seed(0)))
    try:
        model.train()
        loss_trl = trl_plain.compute_loss(model, dict(batch))
        loss_lp0 = lp0.compute_loss(model, dict(batch))
        loss_lp = lp.compute_loss(model, dict(batch))
        # hand formula from the policy log-probs, precomputed reference log-probs and completion lengths
        with torch.no_grad():
            logps, lengths = sequence_logps(model, batch)
        pc, pr = logps.chunk(2)
        lc, lr = lengths.chunk(2)
        rc, rr = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        hand = torch.stack([
            -torch.nn.functional.logsigmoid(torch.tensor(
                0.1 * ((float(pc[i]) - float(rc[i])) - (float(pr[i]) - float(rr[i])))
                - alpha * (float(lc[i]) - float(lr[i]))))
            for i in range(len(pairs))]).mean()
        hand0 = pair_losses(model, batch, torch.cat([rc, rr]), 0.1, 0.0).mean()
    finally:
        with torch.no_grad():
            model.lm_head.weight.copy_(saved)
        model.eval()
    assert float(loss_lp0.detach()) == pytest.approx(float(loss_trl.detach()), abs=1e-6)  # α = 0 is exactly TRL's DPO
    assert float(loss_trl.detach()) != pytest.approx(math.log(2), abs=1e-3)  # and Δ really is non-zero
    assert float(loss_lp.detach()) == pytest.approx(float(hand), abs=1e-4)
    assert float(loss_lp.detach()) != pytest.approx(float(loss_trl.detach()), abs=1e-3)  # the length penalty is active
    assert float(hand0) == pytest.approx(float(loss_trl.detach()), abs=1e-4)  # the filter's per-pair loss is TRL's
    assert (lc != lr).any()  # the example really has unequal lengths


def test_lp_dpo_refuses_configs_it_cannot_express(fresh_llama, pairs, tmp_path):
    from harness.preference.dpo import LPDPOTrainer, dpo_dataset, make_dpo_config

    model, tok = fresh_llama
    cfg = make_dpo_config(str(tmp_path / "x"), per_device_train_batch_size=2, max_steps=1, beta=0.1,
                          precompute_ref_log_probs=False)
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        LPDPOTrainer(model=model, args=cfg, train_dataset=dpo_dataset(pairs[:2]), processing_class=tok, lp_alpha=0.1)


def test_tokenization_matches_trl(fresh_llama, pairs, tmp_path):
    from trl import DPOTrainer

    from harness.preference.dpo import collate_pairs, tokenize_pair

    model, tok = fresh_llama
    trainer = _trainer(DPOTrainer, model, tok, pairs, tmp_path)
    for i, pair in enumerate(pairs):
        row = trainer.train_dataset[i]
        mine = tokenize_pair(tok, pair)
        assert (mine["prompt_ids"], mine["chosen_ids"], mine["rejected_ids"]) == \
            (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
    batch = collate_pairs(tok, pairs, 64)
    assert batch["input_ids"].shape[0] == 2 * len(pairs)
