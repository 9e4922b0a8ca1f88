"""Score functions: weight (d_out × d_in) and layer statistics in, scores out (higher = kept).

Each module registers its functions in ``SCORES`` with the statistics they read
(``stats=``) and the unstructured comparison group their reference uses
(``group=``: "row" or "layer"), which ``sparsity.group=auto`` follows.
"""

from symprune.registry import Registry

SCORES = Registry("score")

from symprune.scores import magnitude, ria, wanda  # noqa: E402,F401  (registration)
