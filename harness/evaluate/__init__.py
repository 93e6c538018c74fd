"""Evaluation of trained models, per language, and everything built on its metrics.

- `pipeline.evaluate_model`: the evaluation every run gets after `train` (held-out loss / perplexity,
  CLDR multiple choice through lm-eval, lm-eval's own tasks mapped to languages, seen / unseen means);
- `mc`: generated lm-eval task files and result parsing; `heldout`: held-out loss;
- `checkpoint` and `standalone`: `polymoo eval CHECKPOINT --suite S` outside training;
- `run_plots`: per-run plots the runner can log.

Paper claims and reproduction reports live in `harness/reproduce/`; the `polymoo eval` sub-command in
`harness/cli/evaluate.py`.
"""
