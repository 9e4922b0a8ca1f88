"""The SymWanda score family (docs/methods.md §2.1–2.2): one general score, each method a choice of factors.

    S_ij = (w_in · |W_ij| ⊙ A_j  +  w_out · |W_ij| ⊙ B_i) · ‖X_:,j‖₂^a

A_j (input side, one value per column j) and B_i (output side, one per row i) are
each one of:
  activation   ‖X_:,j‖₂ for A (input activations), ‖Y_i‖₂ for B (the layer's output activations)
  inv_lp       1 / ‖W_:,j‖_p, 1 / ‖W_i,:‖_p  (p ≥ 1 or ∞; p = 1 is RIA's relative importance)
  inv_sampled  1 / (Σ |W| over a random subset of the column / row) — stochRIA
  weight_l2    ‖W_:,j‖₂, ‖W_i,:‖₂
  one          1
  zero         0 (the side is left out)

Activation norms carry the references' 1/√n_sequences scale (sqrt of ``sq_norm``).
Inverse factors divide (|W| / norm) rather than multiply by a reciprocal, and a
unit weight or a = 0 adds no operation, so the Wanda, RI and RIA presets compute
the references' exact expressions and give bit-identical masks.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import Range, option
from symprune.prune.scores import SCORES
from symprune.prune.scores.norms import weight_lp_norm
from symprune.prune.stats import LayerStats

FACTORS = ("activation", "inv_lp", "inv_sampled", "weight_l2", "one", "zero")
GROUPS = ("row", "layer")
INPUT_SIDE, OUTPUT_SIDE = 0, 1  # the dim a side's factor reduces over: columns j (0) or rows i (1)


@dataclass
class SymWandaParams:
    """S_ij = (w_in · |W_ij| · A_j + w_out · |W_ij| · B_i) · ‖X_:,j‖₂^a (docs/methods.md §2.1)."""

    input: str = option("activation", choices=FACTORS)
    """A_j, the input-side factor (one value per column j)."""
    output: str = option("zero", choices=FACTORS)
    """B_i, the output-side factor (one value per row i)."""
    w_in: float = 1.0
    """Weight of the input-side term (a finite number)."""
    w_out: float = 1.0
    """Weight of the output-side term (a finite number)."""
    p: float = option(1.0, range=Range(low=1))
    """p of the inv_lp factor's norm (inf: the max-norm)."""
    a: float = 0.0
    """Activation exponent of the multiplicative ‖X_:,j‖^a factor (0: none; a finite number)."""
    beta: float = option(0.1, range=Range(low=0, high=1, low_open=True))
    """inv_sampled: fraction of a column's or row's entries drawn, ⌈β·length⌉ of them."""
    rescale: bool = False
    """inv_sampled: divide the subset sum by β (an unbiased estimate of the full sum)."""
    replacement: bool = False
    """inv_sampled: draw with replacement."""
    seed: int = 0
    """inv_sampled: each layer draws from seed and its name, so runs repeat exactly."""
    reference_group: str = option("layer", choices=GROUPS)
    """The comparison group sparsity.group=auto uses for this preset."""

    def __post_init__(self):
        for side in ("input", "output"):
            if getattr(self, side) not in FACTORS:
                raise ConfigError(f"symwanda: unknown {side} factor '{getattr(self, side)}'; valid: {', '.join(FACTORS)}")
        if self.input == "zero" and self.output == "zero":
            raise ConfigError("symwanda: input and output factors are both 'zero', so every score would be 0")
        if math.isnan(self.p) or self.p < 1:
            raise ConfigError(f"symwanda: norm p={self.p} must be a number >= 1 (or inf)")
        if not 0 < self.beta <= 1:
            raise ConfigError(f"symwanda: sampling ratio beta={self.beta} is outside (0, 1]")
        for name in ("w_in", "w_out", "a"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"symwanda: {name}={getattr(self, name)} must be a finite number")
        if self.reference_group not in GROUPS:
            raise ConfigError(f"symwanda: unknown reference_group '{self.reference_group}'; valid: {', '.join(GROUPS)}")


def _required_stats(params: SymWandaParams) -> frozenset[str]:
    needed = set()
    if params.input == "activation" or params.a != 0:
        needed.add("sq_norm")
    if params.output == "activation":
        needed.add("out_sq_norm")
    return frozenset(needed)


def _layer_generator(seed: int, layer: str) -> torch.Generator:
    """A CPU generator, whatever the weight's device: the same seed draws the same subsets on every device."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(layer.encode())) % 2**62)


def sampled_sums(
    magnitude: torch.Tensor, dim: int, beta: float, replacement: bool, generator: torch.Generator
) -> torch.Tensor:
    """Σ |W| over ⌈β·length⌉ random entries of every column (dim 0) or row (dim 1), one subset each.

    The subset is a 0/1 (or, with replacement, a count) matrix multiplied into |W| before
    an ordinary sum, so β = 1 without replacement reproduces the full sum bit for bit. The subsets are drawn
    on the CPU (``generator`` is a CPU generator) and moved to the weight's device.
    """
    lines = magnitude.t() if dim == 0 else magnitude  # one line per column (dim 0) or row (dim 1)
    draws = max(1, math.ceil(beta * lines.shape[1]))
    weights = torch.ones(lines.shape)
    picked = torch.multinomial(weights, draws, replacement=replacement, generator=generator).to(magnitude.device)
    counts = torch.zeros_like(lines).scatter_add_(1, picked, torch.ones_like(picked, dtype=lines.dtype))
    return torch.sum(magnitude * (counts.t() if dim == 0 else counts), dim=dim)


def _side(magnitude, weight, stats: LayerStats, kind: str, dim: int, params: SymWandaParams, layer: str):
    """|W| combined with one side's factor, or None for 'zero'."""
    shape = (1, -1) if dim == INPUT_SIDE else (-1, 1)
    if kind == "zero":
        return None
    if kind == "one":
        return magnitude
    if kind == "activation":
        name = "sq_norm" if dim == INPUT_SIDE else "out_sq_norm"
        return magnitude * torch.sqrt(stats.require(name, "symwanda's activation factor").reshape(shape))
    if kind == "weight_l2":
        return magnitude * weight_lp_norm(weight, 2, dim).reshape(shape)
    if kind == "inv_lp":
        return magnitude / weight_lp_norm(weight, params.p, dim).reshape(shape)
    generator = _layer_generator(params.seed + dim, layer)
    sums = sampled_sums(magnitude, dim, params.beta, params.replacement, generator)
    return magnitude / (sums / params.beta if params.rescale else sums).reshape(shape)


@SCORES.register("symwanda", params=SymWandaParams, stats=_required_stats, group=lambda p: p.reference_group, takes_layer=True)
def symwanda(weight: torch.Tensor, stats: LayerStats, *, layer: str, **factors) -> torch.Tensor:
    params = SymWandaParams(**factors)
    magnitude = torch.abs(weight)
    terms = [
        term if scale == 1 else term * scale
        for term, scale in (
            (_side(magnitude, weight, stats, params.input, INPUT_SIDE, params, layer), params.w_in),
            (_side(magnitude, weight, stats, params.output, OUTPUT_SIDE, params, layer), params.w_out),
        )
        if term is not None
    ]
    score = terms[0] + terms[1] if len(terms) == 2 else terms[0]
    if params.a != 0:
        score = score * torch.sqrt(stats.require("sq_norm", "symwanda's activation exponent").reshape(1, -1)) ** params.a
    return score
