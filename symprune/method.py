"""A pruning method: the configured score, sparsity pattern and refinement, composed per layer.

The driver only asks a method which statistics it needs, whether a layer's
shape admits it, and for each layer's mask; it knows nothing of the algorithms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from symprune.patterns import PATTERNS
from symprune.refine import REFINEMENTS
from symprune.registry import Built, ConfigError
from symprune.scores import SCORES
from symprune.stats import LayerStats


@dataclass
class LayerResult:
    pruned: torch.Tensor  # bool, True = weight set to zero
    info: dict[str, Any] = field(default_factory=dict)
    weight: torch.Tensor | None = None  # updated weights, from methods that reconstruct (SparseGPT)


@dataclass(frozen=True)
class PruningMethod:
    score: Built
    pattern: Built
    refine: Built

    @property
    def required_stats(self) -> frozenset[str]:
        return frozenset(self.score.meta("stats", frozenset())) | frozenset(self.refine.meta("stats", frozenset()))

    @property
    def target_sparsity(self) -> float:
        return self.pattern.params.target_sparsity

    def check_layer(self, name: str, d_out: int, d_in: int) -> None:
        self.pattern.params.check_layer(name, d_out, d_in)

    def prune_layer(self, name: str, weight: torch.Tensor, stats: LayerStats) -> LayerResult:
        if self.score.meta("reconstructs"):
            pruned, updated = self.score.fn(weight, stats, self.pattern)
            return LayerResult(pruned, {}, updated)
        context = {"layer": name} if self.score.meta("takes_layer") else {}
        scores = self.score.fn(weight, stats, **context)
        pruned = self.pattern.fn(scores)
        pruned, info = self.refine.fn(weight, pruned, scores=scores, stats=stats, layer=name, pattern=self.pattern)
        return LayerResult(pruned, info)

    def describe(self) -> dict[str, Any]:
        """Names and resolved parameters, for the run record."""
        return {
            part: {"name": built.name, **built.param_dict()}
            for part, built in (("score", self.score), ("sparsity", self.pattern), ("refine", self.refine))
        }


def build_method(score_cfg, sparsity_cfg, refine_cfg) -> PruningMethod:
    """Validate the three config nodes and resolve ``group=auto`` to the score's reference group."""
    score = SCORES.build(score_cfg)
    pattern = PATTERNS.build(sparsity_cfg)
    refine = REFINEMENTS.build(refine_cfg)
    group = getattr(pattern.params, "group", None)
    if group == "auto":
        pattern = Built(pattern.entry, dataclasses.replace(pattern.params, group=score.meta("group")))
    if score.meta("reconstructs"):
        if refine.name != "none":
            raise ConfigError(
                f"score '{score.name}' chooses its mask while updating the weights; refine must be 'none', "
                f"not '{refine.name}'"
            )
        if group == "row":
            raise ConfigError(f"score '{score.name}' chooses its mask per block of columns: sparsity.group must be auto or layer")
    return PruningMethod(score, pattern, refine)
