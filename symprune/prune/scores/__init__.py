"""Score functions: weight (d_out × d_in) and layer statistics in, scores out (higher = kept).

A score is called as ``fn(weight, stats, **params)`` (``stats``: the layer's ``LayerStats``) and returns
scores of the weight's shape. Each module registers its functions in ``SCORES`` with the statistics they read
(``stats=``) and the unstructured comparison group their reference uses
(``group=``: "row" or "layer"), which ``sparsity.group=auto`` follows. Either may be
a function of the parameters. ``takes_layer=True`` scores also receive the layer's
name (per-layer random draws); ``reconstructs=True`` methods (SparseGPT) receive the
sparsity pattern's contract, choose the mask themselves and return updated weights with it, and declare the
pattern kinds they can keep (``pattern_kinds=``; others are refused when the run is planned).
"""

from dataclasses import dataclass

from symprune.errors import ConfigError
from symprune.options import option
from symprune.registry import Registry, import_components

ROUTINGS = ("none", "gate")


@dataclass
class ScoreOptions:
    """Settings of every score, read by the driver when it collects statistics."""

    routing: str = option("none", choices=ROUTINGS)
    """An expert's statistics: none (its routed tokens as they are) or gate (each routed token's inputs scaled by
    its routing weight for that expert, as MoE-Pruner does; fused experts only)."""

    def __post_init__(self):
        if self.routing not in ROUTINGS:
            raise ConfigError(f"unknown score.routing '{self.routing}'; valid: {', '.join(ROUTINGS)}")


SCORES = Registry("score", options=ScoreOptions)

import_components(__name__, __path__)  # every module registers its components
