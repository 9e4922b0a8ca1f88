"""Layer-wise sparsity allocation: how the requested ratio is spread over the pruned matrices.

An allocation is called as ``fn(layout, target, evidence, **params)`` and returns one ratio per matrix of
``layout`` (a float64 tensor in its order) whose weighted mean over the matrices' sizes is ``target``.
``evidence`` (one value per matrix, in the layout's order; None for rules that measure nothing) is what the
rule measures on the model, declared by the registration as a function of the bound parameters giving the measure:

- ``block_evidence``: a function of one block's dense score matrices (e.g. OWL's outlier ratio), measured in a
  dense calibration pass with the score the registration names as ``evidence_score`` (taken from the score
  registry, e.g. ``wanda``); each matrix gets its block's;
- ``matrix_evidence``: a function ``(weight, cache)`` of one weight matrix, on its block's compute device, and
  the run's ``EvidenceCache`` (e.g. AlphaPruning's heavy-tail exponent, whose spectra the cache keeps across
  runs). A rule that caches nothing ignores ``cache``; one that does counts each look-up there, and the
  counts go to the run record.

``varies=False`` marks a rule that gives every matrix the target (``uniform``): the driver then skips the
allocation step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from symprune.errors import ConfigError
from symprune.registry import Registry, import_components

ALLOCATIONS = Registry("allocation")


@dataclass(frozen=True)
class Layout:
    """The pruned matrices in pruning order: full name, block index and number of weights of each."""

    names: tuple[str, ...]
    blocks: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def num_blocks(self) -> int:
        return max(self.blocks) + 1 if self.blocks else 0

    def size_tensor(self) -> torch.Tensor:
        return torch.tensor(self.sizes, dtype=torch.float64)

    def per_layer(self, per_block: torch.Tensor) -> torch.Tensor:
        """Each matrix gets its block's value."""
        return per_block[torch.tensor(self.blocks)]

    def block_means(self, per_layer: torch.Tensor) -> torch.Tensor:
        """The plain mean of each block's values (blocks without matrices: NaN)."""
        index = torch.tensor(self.blocks)
        totals = torch.zeros(self.num_blocks, dtype=torch.float64).index_add_(0, index, per_layer.double())
        counts = torch.zeros(self.num_blocks, dtype=torch.float64).index_add_(0, index, torch.ones_like(per_layer, dtype=torch.float64))
        return totals / counts


@dataclass
class EvidenceCache:
    """Where the rules keep what they measure on the weights across runs: ``directory`` is the run's
    ``paths.cache`` (None: nowhere), each kind of entry in its own folder there; ``lookups`` counts, per kind,
    the values read from it (hits) and those computed (misses)."""

    directory: str | Path | None = None
    lookups: dict[str, Counter] = field(default_factory=dict)

    def count(self, kind: str, hit: bool) -> None:
        self.lookups.setdefault(kind, Counter())["hits" if hit else "misses"] += 1

    def record(self) -> dict[str, dict[str, Any]]:
        """Per kind looked up: hits, misses and the folder of its entries (None: nothing was cached)."""
        folder = None if self.directory is None else Path(self.directory).expanduser().resolve()
        return {kind: {"hits": counts["hits"], "misses": counts["misses"],
                       "dir": None if folder is None else str(folder / kind)}
                for kind, counts in self.lookups.items()}


def unit_range(values: torch.Tensor) -> torch.Tensor:
    """``values`` mapped linearly onto [0, 1] (min → 0, max → 1); all zeros when they are all equal."""
    spread = values.max() - values.min()
    return torch.zeros_like(values) if spread == 0 else (values - values.min()) / spread


def shift_to_target(ratios: torch.Tensor, sizes: torch.Tensor, target: float) -> torch.Tensor:
    """``ratios`` moved by one constant so that their mean weighted by ``sizes`` is ``target`` (with equal sizes:
    minus their mean, plus the target, as OWL's reference does)."""
    return ratios - (ratios * sizes).sum() / sizes.sum() + target


def check_ratios(layout: Layout, ratios: torch.Tensor, allocation: str, hint: str) -> None:
    """Every ratio must be a sparsity in [0, 1)."""
    bad = [(name, float(ratio)) for name, ratio in zip(layout.names, ratios) if not 0.0 <= float(ratio) < 1.0]
    if bad:
        name, ratio = bad[0]
        raise ConfigError(f"allocation={allocation} gives {len(bad)} matrices a sparsity outside [0, 1), e.g. "
                          f"{ratio:.4f} for {name}; {hint}")


import_components(__name__, __path__)  # every module registers its components
