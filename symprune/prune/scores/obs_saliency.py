"""SparseGPT's saliency as a plain score (DSnoT's ``--initial_method sparsegpt``, zyxxmu/DSnoT lib/prune.py):
W²/U_jj², the optimal-brain-surgeon cost of pruning each weight, without SparseGPT's weight update.

With H = 2/n · XᵀX, dead inputs (H_jj = 0) get H_jj = 1 and W_:,j = 0, and U is the upper Cholesky
factor of (H + percdamp·mean(diag H)·I)⁻¹; U_jj is the diagonal of that factor, not (H⁻¹)_jj. The whole
matrix is scored at once (SparseGPT itself rescores each block of columns after updating it), and the
DSnoT reference selects per output row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import Range, option
from symprune.prune.scores import SCORES
from symprune.prune.scores.sparsegpt import inverse_hessian_factor
from symprune.prune.stats import LayerStats


@dataclass
class SparseGPTSaliencyParams:
    percdamp: float = option(0.01, range=Range(low=0, low_open=True))
    """Dampening added to the Hessian's diagonal, as a fraction of its mean diagonal (SparseGPT's percdamp)."""

    def __post_init__(self):
        if not self.percdamp > 0:
            raise ConfigError(f"sparsegpt_saliency: percdamp={self.percdamp} must be > 0 (the Hessian dampening)")


@SCORES.register("sparsegpt_saliency", params=SparseGPTSaliencyParams, stats=frozenset({"hessian"}), group="row")
def sparsegpt_saliency(weight: torch.Tensor, stats: LayerStats, percdamp: float) -> torch.Tensor:
    """W_ij² / U_jj² in float32, in the reference's op order; neither the weight nor the statistic is modified."""
    hessian = stats.require("hessian", "sparsegpt_saliency").clone()
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1
    W = weight.detach().float().masked_fill(dead, 0)
    U = inverse_hessian_factor(hessian, percdamp)
    return W**2 / torch.diag(U).reshape(1, -1) ** 2
