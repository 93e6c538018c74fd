"""Per-language evaluation after training: held-out loss / perplexity and multiple-choice accuracy (lm-eval)."""
