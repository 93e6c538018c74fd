"""Joint SFT — the standard multilingual recipe: one loss over the language mixture.

Method card: the loss of a step is the mean over the batch's languages of each language's token-mean
loss (batches hold the same number of examples per language), so its gradient is exactly the mean of the
per-language gradients: the `mean` weighting of the MOO methods, computed with one forward/backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import gradient_method


@dataclass(frozen=True, kw_only=True)
class JointSFTOptions:
    pass


gradient_method(name="joint_sft", summary="Joint SFT over the language mixture (standard fine-tuning)",
                family="baseline", Options=JointSFTOptions, make_combiner=lambda options, run: None)
