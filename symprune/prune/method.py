"""A pruning method: the configured score, sparsity pattern and refinement, composed per layer.

The driver only asks a method which statistics it needs, whether a layer's
shape admits it, and for each layer's mask; it knows nothing of the algorithms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from symprune.errors import ConfigError
from symprune.model.masks import MaskSet
from symprune.prune.patterns import PATTERNS
from symprune.prune.refine import REFINEMENTS
from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats
from symprune.registry import Built


@dataclass
class LayerResult:
    pruned: torch.Tensor  # bool, True = weight set to zero, in the layer's own column order
    info: dict[str, Any] = field(default_factory=dict)
    weight: torch.Tensor | None = None  # updated weights, from methods that reconstruct (SparseGPT)
    order: torch.Tensor | None = None  # the pattern's column order (a channel permutation), None: as stored

    def in_pattern_order(self) -> torch.Tensor:
        return self.pruned if self.order is None else self.pruned[:, self.order]


@dataclass(frozen=True)
class PruningMethod:
    score: Built
    pattern: Built
    refine: Built
    given: MaskSet | None = None  # mask_from: saved masks applied instead of the pattern's

    @property
    def needs_scores(self) -> bool:
        """Scores make the first mask; with given masks they still order a permutation or a refinement."""
        return (self.given is None or self.pattern.params.permutes or self.refine.meta("changes_mask", True)
                or bool(self.score.meta("reconstructs")))

    @property
    def required_stats(self) -> frozenset[str]:
        score_stats = frozenset(self.score.meta("stats", frozenset())) if self.needs_scores else frozenset()
        return score_stats | frozenset(self.refine.meta("stats", frozenset()))

    @property
    def routing(self) -> str:
        """How an expert's statistics weigh its routed tokens (score.routing)."""
        return self.score.options.routing

    @property
    def target_sparsity(self) -> float:
        return self.pattern.params.target_sparsity

    @property
    def allocates(self) -> bool:
        """Whether the pattern takes a ratio per matrix (unstructured); N:M patterns fix theirs."""
        return hasattr(self.pattern.params, "ratio")

    def with_ratio(self, ratio: float) -> PruningMethod:
        """The method with the pattern's ratio replaced (a layer-wise allocation's ratio for one matrix)."""
        if not self.allocates:
            raise ValueError(f"sparsity pattern '{self.pattern.name}' has no ratio to allocate")
        return dataclasses.replace(self, pattern=Built(self.pattern.entry, dataclasses.replace(self.pattern.params, ratio=ratio)))

    @property
    def contract(self):
        return self.pattern.params.contract

    def check_layer(self, name: str, d_out: int, d_in: int) -> None:
        self.pattern.params.check_layer(name, d_out, d_in)

    def prune_layer(self, name: str, weight: torch.Tensor, stats: LayerStats) -> LayerResult:
        """Score, mask and refine one layer. With a channel permutation the mask is made and refined in the
        permuted column order (so it is exactly the pattern there) and then mapped back to the layer's columns."""
        given = None if self.given is None else self.given.mask(name).to(weight.device)
        if self.score.meta("reconstructs"):
            pruned, updated = self.score.fn(weight, stats, self.contract, fixed=given)
            return LayerResult(pruned, {}, updated)
        if not self.needs_scores:
            return LayerResult(given, {})
        context = {"layer": name} if self.score.meta("takes_layer") else {}
        scores = self.score.fn(weight, stats, **context)
        order = self.pattern.params.column_order(scores)
        if order is not None:
            weight, scores, stats = weight[:, order], scores[:, order], stats.permuted(order)
            given = None if given is None else given[:, order]
        pruned = self.pattern.fn(scores) if given is None else given
        pruned, info = self.refine.fn(weight, pruned, scores=scores, stats=stats, layer=name, contract=self.contract)
        if order is not None:
            pruned = torch.empty_like(pruned).index_copy_(1, order, pruned)
        return LayerResult(pruned, info, order=order)

    def without_statistics(self) -> PruningMethod:
        """The method for a layer without calibration statistics (an expert no calibration token was routed to):
        weight magnitude under the same pattern (and given masks), without refinement."""
        return dataclasses.replace(self, score=SCORES.build({"name": "magnitude"}), refine=REFINEMENTS.build({"name": "none"}))

    def violation(self, result: LayerResult) -> str | None:
        """Why a layer's final mask breaks the pattern's contract (checked in the pattern's column order), or None."""
        return self.contract.violation(result.in_pattern_order())

    def describe(self) -> dict[str, Any]:
        """Names and resolved parameters, for the run record."""
        return {
            part: {"name": built.name, **built.param_dict(), **built.option_dict()}
            for part, built in (("score", self.score), ("sparsity", self.pattern), ("refine", self.refine))
        }


def _check_pattern_kind(score: Built, refine: Built, kind: str, pattern: str) -> None:
    """A score that chooses its own mask, or a refinement, must know the pattern's kind of constraint."""
    for role, built in (("score", score), ("refine", refine)):
        kinds = built.meta("pattern_kinds")
        if kinds is not None and kind not in kinds:
            raise ConfigError(f"{role} '{built.name}' keeps masks of the pattern kinds {', '.join(sorted(kinds))}; "
                              f"sparsity pattern '{pattern}' is of kind '{kind}'")


def build_method(score_cfg, sparsity_cfg, refine_cfg, given: MaskSet | None = None) -> PruningMethod:
    """Validate the three config nodes and resolve ``group=auto`` to the score's reference group.
    ``given``: saved masks to apply instead of the pattern's (``mask_from``)."""
    score = SCORES.build(score_cfg)
    pattern = PATTERNS.build(sparsity_cfg)
    refine = REFINEMENTS.build(refine_cfg)
    group = getattr(pattern.params, "group", None)
    if group == "auto":
        pattern = Built(pattern.entry, dataclasses.replace(pattern.params, group=score.meta("group")))
    _check_pattern_kind(score, refine, pattern.params.contract.kind, pattern.name)
    if score.meta("reconstructs"):
        if refine.meta("changes_mask", True):
            raise ConfigError(
                f"score '{score.name}' chooses its mask while updating the weights; refine must be 'none', "
                f"not '{refine.name}'"
            )
        if group == "row":
            raise ConfigError(f"score '{score.name}' chooses its mask per block of columns: sparsity.group must be auto or layer")
        if pattern.params.permutes:
            raise ConfigError(
                f"score '{score.name}' chooses its mask column by column in the layer's own order; a channel permutation "
                f"(sparsity.permutation={pattern.params.permutation}) is not implemented for it: use permutation=none"
            )
    return PruningMethod(score, pattern, refine, given)
