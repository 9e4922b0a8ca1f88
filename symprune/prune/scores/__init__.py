"""Score functions: weight (d_out × d_in) and layer statistics in, scores out (higher = kept).

A score is called as ``fn(weight, stats, **params)`` (``stats``: the layer's ``LayerStats``) and returns
scores of the weight's shape. Each module registers its functions in ``SCORES`` with the statistics they read
(``stats=``) and the unstructured comparison group their reference uses
(``group=``: "row" or "layer"), which ``sparsity.group=auto`` follows. Either may be
a function of the parameters. ``takes_layer=True`` scores also receive the layer's
name (per-layer random draws); ``reconstructs=True`` methods (SparseGPT) receive the
sparsity pattern's contract, choose the mask themselves and return updated weights with it.
"""

from symprune.registry import Registry

SCORES = Registry("score")

from symprune.prune.scores import magnitude, ria, sparsegpt, symwanda, wanda  # noqa: E402,F401  (registration)
