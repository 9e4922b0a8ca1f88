import math
from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats


@dataclass
class RIAParams:
    """(|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · ‖X_:,j‖^a, in the reference's op order."""

    a: float = 0.5
    """Activation exponent (a finite number); a = 0 is RI (no activations)."""

    def __post_init__(self):
        if not math.isfinite(self.a):
            raise ConfigError(f"ria: activation exponent a={self.a} must be a finite number")


def _ria_stats(params: RIAParams) -> frozenset[str]:
    return frozenset() if params.a == 0 else frozenset({"sq_norm"})


@SCORES.register("ria", params=RIAParams, stats=_ria_stats, group="layer")
def ria(weight: torch.Tensor, stats: LayerStats, a: float) -> torch.Tensor:
    """Relative importance and activations (Zhang et al. 2024), in the reference's op order:

    (|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · sqrt(sq_norm_j)^a

    With a = 0 (RI) the reference's factor x**0 is exactly 1, so it is skipped.
    """
    magnitude = torch.abs(weight)
    relative = magnitude / torch.sum(magnitude, dim=0) + magnitude / torch.sum(magnitude, dim=1).reshape(-1, 1)
    if a == 0:
        return relative
    return relative * torch.sqrt(stats.require("sq_norm", "ria").reshape(1, -1)) ** a
