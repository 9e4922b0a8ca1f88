"""N:M semi-structured sparsity, N counting the *pruned* weights of every M consecutive inputs.

This is the convention of every reference pruning repo (2:4 zeroes 2 of 4, 4:8
zeroes 4 of 8). NVIDIA's "N kept of M" is the same only when N = M/2.
Optionally the blocks are formed after RIA's channel permutation (patterns/permutation.py): the
pattern names the column order (``column_order``) and the method masks and refines in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import POSITIVE, option
from symprune.prune.patterns import PATTERNS
from symprune.prune.patterns.contract import NM, Contract
from symprune.prune.patterns.permutation import channel_permutation

PERMUTATIONS = ("none", "heuristic", "lsa")  # lsa: heuristic reallocation, then linear-sum assignment
TIE_RULES = ("topk", "stable")  # topk: the references' torch.topk(largest=False) per block; stable: lower column first

CONVENTION = (
    "N counts the pruned weights in every block of M consecutive input columns "
    "(the references' convention: 2:4 zeroes 2 of 4); for NVIDIA's 'N kept of M' set n = M - N_kept"
)


@dataclass
class NMParams:
    """N of every M consecutive input weights of a row pruned (N counts the pruned weights; N < M)."""

    n: int = option(2, range=POSITIVE)
    """N, the weights pruned in every block (less than m)."""
    m: int = option(4, range=POSITIVE)
    """M, the block width (every layer's input width must be divisible by it)."""
    permutation: str = option("none", choices=PERMUTATIONS)
    """RIA's channel permutation: none, heuristic (channel reallocation) or lsa (then linear-sum assignment)."""
    ties: str = option("topk", choices=TIE_RULES)
    """Which of a block's equal scores are pruned: topk (the references' torch.topk) or stable (lower column)."""

    def __post_init__(self):
        if self.permutation not in PERMUTATIONS:
            raise ConfigError(f"unknown N:M permutation '{self.permutation}'; valid: {', '.join(PERMUTATIONS)}")
        if self.ties not in TIE_RULES:
            raise ConfigError(f"unknown N:M tie rule sparsity.ties='{self.ties}'; valid: {', '.join(TIE_RULES)}")
        if self.n <= 0 or self.m <= 0:
            raise ConfigError(f"N:M needs positive N and M, got n={self.n}, m={self.m}")
        if self.n >= self.m:
            raise ConfigError(f"N:M needs N < M, got n={self.n}, m={self.m}: {CONVENTION}")

    @property
    def target_sparsity(self) -> float:
        return self.n / self.m

    @property
    def contract(self) -> Contract:
        return Contract(ratio=self.n / self.m, kind=NM, block=self.m, pruned_per_block=self.n, ties=self.ties)

    @property
    def permutes(self) -> bool:
        return self.permutation != "none"

    def column_order(self, scores: torch.Tensor) -> torch.Tensor | None:
        """The column order the blocks are taken in: RIA's channel permutation of the scores, or None."""
        if not self.permutes:
            return None
        return channel_permutation(scores, self.n, self.m, assignment=self.permutation == "lsa")

    def check_layer(self, name: str, d_out: int, d_in: int) -> None:
        if d_in % self.m:
            raise ConfigError(
                f"layer '{name}' has input width {d_in}, which is not divisible by M={self.m} "
                f"(N:M = {self.n}:{self.m})"
            )


def nm_mask(scores: torch.Tensor, n: int, m: int, ties: str = "topk") -> torch.Tensor:
    """In every row and every block of m consecutive columns zero the n lowest scores.

    Where a block's n-th and (n+1)-th lowest scores are equal, ``ties`` decides which go: ``topk`` picks
    as the references do (``torch.topk(block, n, largest=False)`` per block of M columns: Wanda's, RIA's,
    magnitude's and SparseGPT's N:M selection), whose order among equal scores is that of torch's
    selection algorithm on the device it runs on (on the CPU it often prunes the higher column);
    ``stable`` prunes the lower column first, the same on every device.
    """
    rows, cols = scores.shape
    blocks = scores.reshape(rows, cols // m, m)
    if ties == "topk":
        lowest = torch.topk(blocks.float(), n, dim=-1, largest=False).indices
    else:
        lowest = torch.argsort(blocks, dim=-1, stable=True)[..., :n]
    pruned = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, lowest, True)
    return pruned.reshape(rows, cols)


@PATTERNS.register("nm", params=NMParams)
def nm(scores: torch.Tensor, n: int, m: int, permutation: str, ties: str) -> torch.Tensor:
    """The N:M mask of scores given in the pattern's column order (the method applies ``column_order``)."""
    return nm_mask(scores, n, m, ties)
