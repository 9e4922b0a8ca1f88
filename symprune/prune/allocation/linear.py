"""Ratios rising (or falling) linearly over the depth: the last block's ratio minus the first's is ``spread``."""

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import UNIT, option
from symprune.prune.allocation import ALLOCATIONS, Layout, shift_to_target

DIRECTIONS = ("rising", "falling")


@dataclass
class LinearParams:
    """Ratios changing linearly over the depth, averaging sparsity.ratio."""

    spread: float = option(0.1, range=UNIT)
    """The last block's ratio minus the first's (absolute value)."""
    direction: str = option("rising", choices=DIRECTIONS)
    """rising: deeper blocks are pruned more; falling: less."""

    def __post_init__(self):
        if not 0.0 <= self.spread < 1.0:
            raise ConfigError(f"allocation.spread={self.spread} is outside [0, 1)")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"unknown allocation.direction '{self.direction}'; valid: {', '.join(DIRECTIONS)}")


@ALLOCATIONS.register("linear", params=LinearParams)
def linear(layout: Layout, target: float, evidence, spread: float, direction: str) -> torch.Tensor:
    depth = torch.arange(layout.num_blocks, dtype=torch.float64) / max(layout.num_blocks - 1, 1)
    per_block = spread * (depth if direction == "rising" else 1.0 - depth)
    return shift_to_target(layout.per_layer(per_block), layout.size_tensor(), target)
