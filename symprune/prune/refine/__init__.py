"""Refinement steps: a first mask in, a better mask (same number of zeros per row) out.

A refinement is called as ``fn(weight, pruned, scores=..., stats=..., layer=..., contract=..., **params)``
(``contract``: the sparsity pattern's, symprune/prune/patterns/contract.py)
and returns ``(pruned, info)``, ``info`` being a dict of per-layer numbers for the run record.
"""

from symprune.registry import Registry

REFINEMENTS = Registry("refinement")


@REFINEMENTS.register("none", stats=frozenset())
def none(weight, pruned, **context):
    """Keep the first mask."""
    return pruned, {}


from symprune.prune.refine import dsnot, r2dsnot  # noqa: E402,F401  (registration)
