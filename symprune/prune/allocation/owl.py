"""OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"; reference luuyin/OWL): blocks with more
outliers keep more weights.

Per block l, the outlier ratio D_l is 100 × the share of the block's Wanda scores |W_ij|·‖X_:,j‖ (all its
pruned matrices together) above ``M`` × their mean, measured on the dense model (the driver's dense pass).
Then, as the reference: k = 2λ·(D − min D)/(max D − min D), k ← k − mean(k) + (1 − target), and block l's
sparsity is 1 − k_l. The mean is weighted by the blocks' sizes, which is the reference's plain mean when
every block prunes as many weights (it always does there); equal outlier ratios give uniform sparsity.

A high target with a wide λ can push a block's sparsity out of [0, 1). ``out_of_range=refuse`` (the default)
stops the run before pruning; ``clip`` follows the reference, which prunes a block whose sparsity is ≤ 0 at
0.01 instead (so the mean sparsity ends above the target; the run's report gives the achieved one). A
sparsity ≥ 1 is refused either way: the reference would prune every weight of those blocks.
"""

import logging

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import UNIT, Range, option
from symprune.prune.allocation import ALLOCATIONS, Layout, shift_to_target, unit_range
from symprune.prune.totals import ordered_total

log = logging.getLogger("symprune")
OUT_OF_RANGE = ("refuse", "clip")
REFERENCE_FLOOR = 0.01  # the reference's sparsity for a block whose allocated sparsity is <= 0


@dataclass
class OWLParams:
    """OWL's parameters (reference argument names: Hyper_m, Lamda)."""

    M: float = option(5.0, range=Range(low=0, low_open=True))
    """A score is an outlier above M × its block's mean score (reference: Hyper_m, whose argument default is
    3; 5 is the value of the reference README's example commands)."""
    lam: float = option(0.08, range=UNIT)
    """λ: block sparsities span target ± λ (reference: Lamda, default 0.08)."""
    out_of_range: str = option("refuse", choices=OUT_OF_RANGE)
    """A block sparsity <= 0: refuse stops the run before pruning; clip prunes that block at 0.01 as the
    reference does."""

    def __post_init__(self):
        if not self.M > 0:
            raise ConfigError(f"allocation.M={self.M} must be positive")
        if not 0.0 <= self.lam < 1.0:
            raise ConfigError(f"allocation.lam={self.lam} (λ) is outside [0, 1)")
        if self.out_of_range not in OUT_OF_RANGE:
            raise ConfigError(f"unknown allocation.out_of_range '{self.out_of_range}'; valid: {', '.join(OUT_OF_RANGE)}")


def outlier_ratio(scores: list[torch.Tensor], M: float) -> float:
    """100 × the share of all entries of ``scores`` above M × their mean."""
    count = sum(score.numel() for score in scores)
    mean = float(sum(ordered_total(score.detach()) for score in scores)) / count  # same bits under any thread count
    outliers = sum(int((score.detach() > mean * M).sum()) for score in scores)  # no concatenated copy
    return 100.0 * outliers / count


@ALLOCATIONS.register("owl", params=OWLParams,
                      block_evidence=lambda params: lambda scores: outlier_ratio(scores, params.M), evidence_score="wanda")
def owl(layout: Layout, target: float, evidence: torch.Tensor, M: float, lam: float,
        out_of_range: str) -> torch.Tensor:
    """``evidence``: per matrix, its block's outlier ratio D_l."""
    kept = unit_range(evidence.double()) * (2 * lam)
    ratios = 1.0 - shift_to_target(kept, layout.size_tensor(), 1.0 - target)
    if out_of_range == "clip":
        below = ratios <= 0
        if below.any():
            log.warning("OWL: %d matrices got a sparsity <= 0 (lowest %.4f); pruned at %.2f as the reference does",
                        int(below.sum()), float(ratios.min()), REFERENCE_FLOOR)
        ratios = torch.where(below, torch.full_like(ratios, REFERENCE_FLOOR), ratios)
    return ratios
