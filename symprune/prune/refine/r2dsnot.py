"""R²-DSnoT (docs/methods.md §4.2): DSnoT with relative reweighting, a square-root activation exponent and a
regularised decision boundary. symprune's reading of the parts the paper leaves open:

- relative importance ρ_ij = scale · (1/‖W_i,:‖_p + 1/‖W_:,j‖_p) multiplies the ranking of the phases
  named by ``reweight`` (grow: c_ij / var_j^γ · ρ_ij; prune: the pruning importance · ρ_ij);
- the unstructured pruning importance is |W_ij| · ‖X_:,j‖^α (α = 1: DSnoT's Wanda score; α = 0.5 and
  reweight=prune with p = 1 make it the RIA score); N:M keeps the reference's order, the first mask's
  score, so α does not apply there;
- the normalised importance s_ij = |W_ij| · (1/‖W_i,:‖_p + 1/‖W_:,j‖_p) is the ℓp regulariser: γ₁ · s_ij
  is added to the pruning importance (weights with large s are pruned later), and γ₂ > 0 accepts a swap
  only if |e_i + c_ip - c_ig| + γ₂ · (s_ip - s_ig) < |e_i| (γ₂ = 0: no such rule, as in DSnoT).

reweight=none, α = 1, γ₁ = γ₂ = 0 is DSnoT exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import NON_NEGATIVE, Range, option
from symprune.prune.patterns.contract import NM, UNSTRUCTURED
from symprune.prune.refine import REFINEMENTS
from symprune.prune.refine.dsnot import STATS, DSnoTParams, Rankings, dsnot_rankings, refine_layer
from symprune.prune.scores.norms import weight_lp_norm
from symprune.prune.stats import LayerStats

REWEIGHT_PHASES = ("none", "grow", "prune", "both")


@dataclass
class R2DSnoTParams(DSnoTParams):
    """DSnoT's parameters and R²-DSnoT's own (docs/methods.md §4.2)."""

    reweight: str = option("prune", choices=REWEIGHT_PHASES)
    """Which phase's ranking ρ multiplies: none, grow, prune or both."""
    norm_p: float = option(1.0, range=Range(low=1))
    """p of the ℓp norms in ρ and s (1: RIA's sums; inf allowed)."""
    reweight_scale: float = option(1.0, range=Range(low=0, low_open=True))
    """The relative-importance scaling factor in ρ (a finite number)."""
    alpha: float = option(0.5, range=NON_NEGATIVE)
    """Activation exponent of the unstructured pruning importance |W_ij| · ‖X_:,j‖^α (DSnoT: 1)."""
    gamma1: float = option(0.0, range=NON_NEGATIVE)
    """γ₁: weight of the ℓp regulariser s in the pruning importance."""
    gamma2: float = option(0.0, range=NON_NEGATIVE)
    """γ₂: weight of s in the accept rule; 0: no accept rule."""

    def __post_init__(self):
        super().__post_init__()
        if self.reweight not in REWEIGHT_PHASES:
            raise ConfigError(f"unknown refine.reweight '{self.reweight}'; valid: {', '.join(REWEIGHT_PHASES)}")
        if math.isnan(self.norm_p) or self.norm_p < 1:
            raise ConfigError(f"refine.norm_p={self.norm_p} must be a number >= 1 (or inf)")
        if not (math.isfinite(self.reweight_scale) and self.reweight_scale > 0):
            raise ConfigError(f"refine.reweight_scale={self.reweight_scale} must be a finite number > 0")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"refine.alpha={self.alpha} must be a finite number >= 0")
        for key in ("gamma1", "gamma2"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"refine.{key}={value} must be a finite number >= 0")


def inverse_norms(weight: torch.Tensor, p: float) -> torch.Tensor:
    """1/‖W_i,:‖_p + 1/‖W_:,j‖_p, d_out × d_in."""
    return 1 / weight_lp_norm(weight, p, dim=1).reshape(-1, 1) + 1 / weight_lp_norm(weight, p, dim=0).reshape(1, -1)


def r2_rankings(
    weight: torch.Tensor, contributions: torch.Tensor, scores: torch.Tensor, stats: LayerStats, nm: bool,
    settings: R2DSnoTParams,
) -> Rankings:
    weight = weight.float()
    base = dsnot_rankings(weight, contributions, scores, stats, nm, settings.var_power)
    grow, prune = base.grow, base.prune
    if not nm and settings.alpha != 1:
        prune = weight.abs() * torch.sqrt(stats.require("sq_norm", "r2dsnot").reshape(1, -1)) ** settings.alpha
    relative = inverse_norms(weight, settings.norm_p)
    if settings.reweight in ("grow", "both"):
        grow = grow * (settings.reweight_scale * relative)
    if settings.reweight in ("prune", "both"):
        prune = prune * (settings.reweight_scale * relative)
    importance = weight.abs() * relative
    if settings.gamma1:
        prune = prune + settings.gamma1 * importance
    return Rankings(grow=grow, prune=prune, importance=importance, accept_penalty=settings.gamma2)


@REFINEMENTS.register("r2dsnot", params=R2DSnoTParams, stats=STATS, pattern_kinds=frozenset({UNSTRUCTURED, NM}))
def r2dsnot(weight, pruned, *, scores, stats, layer, contract, **params):
    settings = R2DSnoTParams(**params)

    def rankings(weight, contributions, scores, stats, nm):
        return r2_rankings(weight, contributions, scores, stats, nm, settings)

    return refine_layer(weight, pruned, scores=scores, stats=stats, layer=layer, contract=contract,
                        settings=settings, rankings=rankings)
