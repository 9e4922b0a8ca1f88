"""OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"; reference luuyin/OWL): blocks with more
outliers keep more weights.

Per block l, the outlier ratio D_l is 100 × the share of the block's Wanda scores |W_ij|·‖X_:,j‖ (all its
pruned matrices together) above ``M`` × their mean, measured on the dense model (the driver's dense pass).
Then, as the reference: k = 2λ·(D − min D)/(max D − min D), k ← k − mean(k) + (1 − target), and block l's
sparsity is 1 − k_l. The mean is weighted by the blocks' sizes, which is the reference's plain mean when
every block prunes as many weights (it always does there); equal outlier ratios give uniform sparsity.
"""

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import UNIT, Range, option
from symprune.prune.allocation import ALLOCATIONS, Layout, shift_to_target, unit_range
from symprune.prune.totals import ordered_total


@dataclass
class OWLParams:
    """OWL's parameters (reference argument names: Hyper_m, Lamda)."""

    M: float = option(5.0, range=Range(low=0, low_open=True))
    """A score is an outlier above M × its block's mean score (reference: Hyper_m, whose argument default is
    3; 5 is the value of the reference README's example commands)."""
    lam: float = option(0.08, range=UNIT)
    """λ: block sparsities span target ± λ (reference: Lamda, default 0.08)."""

    def __post_init__(self):
        if not self.M > 0:
            raise ConfigError(f"allocation.M={self.M} must be positive")
        if not 0.0 <= self.lam < 1.0:
            raise ConfigError(f"allocation.lam={self.lam} (λ) is outside [0, 1)")


def outlier_ratio(scores: list[torch.Tensor], M: float) -> float:
    """100 × the share of all entries of ``scores`` above M × their mean."""
    count = sum(score.numel() for score in scores)
    mean = float(sum(ordered_total(score.detach()) for score in scores)) / count  # same bits under any thread count
    outliers = sum(int((score.detach() > mean * M).sum()) for score in scores)  # no concatenated copy
    return 100.0 * outliers / count


@ALLOCATIONS.register("owl", params=OWLParams,
                      block_evidence=lambda params: lambda scores: outlier_ratio(scores, params.M))
def owl(layout: Layout, target: float, evidence: torch.Tensor, M: float, lam: float) -> torch.Tensor:
    """``evidence``: per matrix, its block's outlier ratio D_l."""
    kept = unit_range(evidence.double()) * (2 * lam)
    return 1.0 - shift_to_target(kept, layout.size_tensor(), 1.0 - target)
