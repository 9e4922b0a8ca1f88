import torch

from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats


@SCORES.register("wanda", stats=frozenset({"sq_norm"}), group="row")
def wanda(weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """|W_ij| · ‖X_:,j‖ (Sun et al. 2024), in the reference's op order."""
    sq_norm = stats.require("sq_norm", "wanda")
    return weight.abs() * torch.sqrt(sq_norm.reshape(1, -1))
