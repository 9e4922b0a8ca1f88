"""Refinement steps: a first mask in, a better mask (same number of zeros per row) out.

A refinement is called as ``fn(weight, pruned, scores=..., stats=..., layer=..., contract=..., **params)``
(``contract``: the sparsity pattern's, symprune/prune/patterns/contract.py)
and returns ``(pruned, info)``, ``info`` being a dict of per-layer numbers for the run record. A
refinement declares the pattern kinds it can keep (``pattern_kinds=``; others are refused when the run is
planned); ``changes_mask=False`` marks one that returns the first mask (``none``).
"""

from symprune.registry import Registry, import_components

REFINEMENTS = Registry("refinement")


@REFINEMENTS.register("none", stats=frozenset(), changes_mask=False)
def none(weight, pruned, **context):
    """Keep the first mask."""
    return pruned, {}


import_components(__name__, __path__)  # every module registers its components
