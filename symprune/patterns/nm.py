"""N:M semi-structured sparsity, N counting the *pruned* weights of every M consecutive inputs.

This is the convention of every reference pruning repo (2:4 zeroes 2 of 4, 4:8
zeroes 4 of 8). NVIDIA's "N kept of M" is the same only when N = M/2.
Optionally the blocks are formed after RIA's channel permutation (patterns/permutation.py).
"""

from dataclasses import dataclass

import torch

from symprune.patterns import PATTERNS
from symprune.patterns.permutation import channel_permutation
from symprune.registry import ConfigError

PERMUTATIONS = ("none", "heuristic", "lsa")  # lsa: heuristic reallocation, then linear-sum assignment

CONVENTION = (
    "N counts the pruned weights in every block of M consecutive input columns "
    "(the references' convention: 2:4 zeroes 2 of 4); for NVIDIA's 'N kept of M' set n = M - N_kept"
)


@dataclass
class NMParams:
    n: int = 2
    m: int = 4
    permutation: str = "none"

    def __post_init__(self):
        if self.permutation not in PERMUTATIONS:
            raise ConfigError(f"unknown N:M permutation '{self.permutation}'; valid: {', '.join(PERMUTATIONS)}")
        if self.n <= 0 or self.m <= 0:
            raise ConfigError(f"N:M needs positive N and M, got n={self.n}, m={self.m}")
        if self.n >= self.m:
            raise ConfigError(f"N:M needs N < M, got n={self.n}, m={self.m}: {CONVENTION}")

    @property
    def target_sparsity(self) -> float:
        return self.n / self.m

    def check_layer(self, name: str, d_out: int, d_in: int) -> None:
        if d_in % self.m:
            raise ConfigError(
                f"layer '{name}' has input width {d_in}, which is not divisible by M={self.m} "
                f"(N:M = {self.n}:{self.m})"
            )


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every row and every block of m consecutive columns zero the n lowest scores (stable ties)."""
    rows, cols = scores.shape
    blocks = scores.reshape(rows, cols // m, m)
    order = torch.argsort(blocks, dim=-1, stable=True)[..., :n]
    pruned = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, order, True)
    return pruned.reshape(rows, cols)


@PATTERNS.register("nm", params=NMParams)
def nm(scores: torch.Tensor, n: int, m: int, permutation: str) -> torch.Tensor:
    """The N:M mask, its blocks taken in the order of a channel permutation unless permutation='none'."""
    if permutation == "none":
        return nm_mask(scores, n, m)
    index = channel_permutation(scores, n, m, assignment=permutation == "lsa")
    pruned = torch.empty_like(scores, dtype=torch.bool)
    pruned[:, index] = nm_mask(scores[:, index], n, m)
    return pruned
