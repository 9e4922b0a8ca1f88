"""Sparsity patterns: scores in, boolean mask out (True = pruned), which scores compete.

A pattern is called as ``fn(scores, **params)`` on scores in the pattern's column order and returns the
(d_out, d_in) mask. Each pattern's parameter dataclass checks its ranges and, through
``check_layer``, whether a layer's shape admits it, before any work starts; besides its fields it
provides what ``PatternParams`` lists, which the method, the driver and the refinements read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from symprune.registry import Registry, import_components

if TYPE_CHECKING:
    import torch

    from symprune.prune.patterns.contract import Contract

PATTERNS = Registry("sparsity pattern", config_key="pattern")


class PatternParams(Protocol):
    """What a sparsity pattern's parameter dataclass provides besides its fields."""

    permutes: bool
    """Whether the pattern takes the columns in an order of its own (``column_order``)."""

    @property
    def target_sparsity(self) -> float:
        """The fraction of each layer's weights the pattern prunes."""

    @property
    def contract(self) -> Contract:
        """What the pattern promises about every mask (checked by the driver after every layer)."""

    def column_order(self, scores: torch.Tensor) -> torch.Tensor | None:
        """The column order the mask is taken in (e.g. RIA's channel permutation), or None: as stored."""

    def check_layer(self, name: str, d_out: int, d_in: int) -> None:
        """Raise ``ConfigError`` if a layer of this shape cannot have the pattern (checked at plan time)."""


import_components(__name__, __path__)  # every module registers its components
