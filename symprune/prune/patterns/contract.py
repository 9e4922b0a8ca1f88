"""What a sparsity pattern promises about every mask it makes.

Scores that choose their own mask (SparseGPT), refinements, saving and the driver's check after
every layer read the contract instead of switching on pattern names. Masks are checked in the
pattern's column order (after a channel permutation, if the pattern has one).

A contract declares its ``kind`` (``KINDS``: the kinds symprune's methods know). A score that chooses its
own mask or a refinement declares the kinds it can honour (its registration's ``pattern_kinds``), and a
method given a pattern of another kind is refused when the run is planned, instead of being handled as
unstructured. A pattern of a new kind gives a ``Contract`` subclass whose ``violation`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

UNSTRUCTURED, NM = "unstructured", "nm"
KINDS = (UNSTRUCTURED, NM)


class PatternViolation(RuntimeError):
    """A layer's final mask breaks its pattern's contract (the driver stops the run with the layer's name)."""


@dataclass(frozen=True)
class Contract:
    """What a pattern promises about every mask: read by methods that choose their own mask (SparseGPT), by
    refinements and by the driver, which checks each layer's final mask with ``violation``."""

    ratio: float
    """The fraction of each layer's weights pruned."""
    kind: str = field(kw_only=True)
    """What the pattern constrains: unstructured (a ratio per row or layer), nm (N of every M columns), or a
    kind of a pattern's own."""
    block: int | None = None
    """N:M: M, the width of the column blocks that each keep M - N weights; else None."""
    pruned_per_block: int | None = None
    """N:M: N."""
    ties: str = "topk"
    """N:M: which of a block's equal scores a method that selects its own mask prunes (``nm_mask``)."""
    group: str | None = None
    """Unstructured: "row" (exactly int(d_in·ratio) per row) or "layer" (at least int(numel·ratio))."""

    def violation(self, pruned: torch.Tensor) -> str | None:
        """Why a (d_out, d_in) boolean mask (True = pruned) breaks the contract, or None if it keeps it."""
        if self.kind not in KINDS:
            raise NotImplementedError(f"a pattern of kind '{self.kind}' checks its masks with a Contract subclass")
        rows, columns = pruned.shape
        if self.kind == NM:
            counts = pruned.reshape(rows, columns // self.block, self.block).sum(dim=-1)
            wrong = (counts != self.pruned_per_block).nonzero()
            if len(wrong):
                row, block = wrong[0].tolist()
                return (f"{len(wrong)} blocks of {self.block} columns do not have exactly {self.pruned_per_block} pruned "
                        f"weights (e.g. row {row}, columns {block * self.block}-{block * self.block + self.block - 1}: "
                        f"{int(counts[row, block])})")
            return None
        if self.group == "row":
            k = int(columns * self.ratio)
            counts = pruned.sum(dim=1, dtype=torch.int32)  # a bool sum counts in int64 by default: twice the bytes
            wrong = (counts != k).nonzero()
            if len(wrong):
                row = int(wrong[0])
                return f"{len(wrong)} rows do not have exactly {k} pruned weights (e.g. row {row}: {int(counts[row])})"
            return None
        k = int(pruned.numel() * self.ratio)
        if int(pruned.sum()) < k:
            return f"{int(pruned.sum())} weights pruned, fewer than {k} ({self.ratio:g} of {pruned.numel()})"
        return None
