"""Explicit ratios: one per block (a list), or per module-name regular expression (a mapping; the first
pattern found in a matrix's name gives its ratio). Their mean over all pruned weights must be the requested
ratio, so that ``sparsity.ratio`` always says how sparse the run is."""

import re
from dataclasses import dataclass
from typing import Any

import torch

from symprune.errors import ConfigError
from symprune.prune.allocation import ALLOCATIONS, Layout
from symprune.prune.targets import check_patterns


@dataclass
class ListParams:
    """Explicit ratios, averaging sparsity.ratio over the pruned weights."""

    ratios: Any = None
    """[r_0, …, r_{L-1}], one per block, or {regex: ratio} (the first pattern found in a name wins); each in
    [0, 1)."""

    def __post_init__(self):
        if isinstance(self.ratios, dict):
            values = list(self.ratios.values())
            check_patterns("allocation.ratios", self.ratios)
        elif isinstance(self.ratios, list):
            values = self.ratios
        else:
            raise ConfigError("allocation=list needs allocation.ratios: a list with one ratio per block, or a "
                              f"mapping from module-name regular expression to ratio (got {self.ratios!r})")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"allocation.ratios: {value!r} is not a sparsity in [0, 1)")


@ALLOCATIONS.register("list", params=ListParams)
def explicit(layout: Layout, target: float, evidence, ratios) -> torch.Tensor:
    if isinstance(ratios, list):
        if len(ratios) != layout.num_blocks:
            raise ConfigError(f"allocation.ratios has {len(ratios)} entries; the model has {layout.num_blocks} "
                              f"blocks: give one ratio per block")
        per_layer = layout.per_layer(torch.tensor(ratios, dtype=torch.float64))
    else:
        per_layer = torch.tensor([_ratio_by_name(name, ratios) for name in layout.names], dtype=torch.float64)
    sizes = layout.size_tensor()
    pruned, wanted = float((per_layer * sizes).sum()), target * float(sizes.sum())
    if abs(pruned - wanted) > len(layout.names):  # more than one weight per matrix away
        raise ConfigError(f"allocation.ratios prune {pruned / float(sizes.sum()):.6f} of the pruned weights, but "
                          f"sparsity.ratio is {target}: set sparsity.ratio to that value or change the ratios")
    return per_layer


def _ratio_by_name(name: str, ratios: dict) -> float:
    for pattern, ratio in ratios.items():
        if re.search(pattern, name):
            return float(ratio)
    raise ConfigError(f"allocation.ratios: no pattern of {', '.join(ratios)} matches {name}; every pruned matrix "
                      f"needs one (add a catch-all '.' last)")
