import torch

from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats


@SCORES.register("magnitude", stats=frozenset(), group="layer")
def magnitude(weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """|W_ij|."""
    return weight.abs()
