"""Every matrix gets the requested ratio: symprune's behaviour without an allocation."""

import torch

from symprune.prune.allocation import ALLOCATIONS, Layout


@ALLOCATIONS.register("uniform", varies=False)
def uniform(layout: Layout, target: float, evidence=None) -> torch.Tensor:
    return torch.full((len(layout.names),), float(target), dtype=torch.float64)
