"""SparseGPT (Frantar & Alistarh 2023, docs/methods.md §2.3): a method on the score axis that chooses
its own mask while updating the kept weights to compensate (optimal brain surgeon, column by column).

H = 2/n · XᵀX is dampened by ``percdamp`` × its mean diagonal; dead inputs (H_jj = 0) get
H_jj = 1 and W_:,j = 0. With U the upper Cholesky factor of H⁻¹, columns are processed in
blocks of ``blocksize``: the mask of a block (unstructured: the block's threshold on
W²/U_jj², ties included; N:M: per group of M columns) is chosen from the weights as updated
so far, each pruned weight's error is spread over the later columns of the block, and the
block's accumulated error over the columns after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import POSITIVE, Range, option
from symprune.prune.patterns.contract import NM, UNSTRUCTURED, Contract
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats


@dataclass
class SparseGPTParams:
    """Optimal-brain-surgeon pruning with weight updates (docs/methods.md §2.3)."""

    blocksize: int = option(128, range=POSITIVE)
    """Columns per block: the mask is chosen and the error spread block by block."""
    percdamp: float = option(0.01, range=Range(low=0, low_open=True))
    """Dampening: percdamp × mean(diag H) is added to the Hessian's diagonal."""

    def __post_init__(self):
        if self.blocksize < 1:
            raise ConfigError(f"sparsegpt: blocksize={self.blocksize} must be a positive integer")
        if not self.percdamp > 0:
            raise ConfigError(f"sparsegpt: percdamp={self.percdamp} must be > 0 (the Hessian dampening)")


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + percdamp·mean(diag H)·I)⁻¹."""
    damped = hessian.clone()
    diagonal = torch.arange(damped.shape[0], device=damped.device)
    damped[diagonal, diagonal] += percdamp * torch.mean(torch.diag(damped))
    factor, info = torch.linalg.cholesky_ex(damped)
    if info.item() != 0:
        raise ValueError(
            f"sparsegpt: the layer Hessian is not positive definite after dampening by percdamp={percdamp} "
            f"× its mean diagonal; raise score.percdamp"
        )
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)


def _block_mask(block: torch.Tensor, inverse_diag: torch.Tensor, ratio: float) -> torch.Tensor:
    """The unstructured mask of one block: the references' threshold on W²/U_jj², ties included."""
    saliency = block**2 / inverse_diag.reshape(1, -1) ** 2
    threshold = torch.sort(saliency.flatten())[0][int(saliency.numel() * ratio)]
    return saliency <= threshold


@SCORES.register("sparsegpt", params=SparseGPTParams, stats=frozenset({"hessian"}), group="layer", reconstructs=True,
                 pattern_kinds=frozenset({UNSTRUCTURED, NM}))
def sparsegpt(weight: torch.Tensor, stats: LayerStats, contract: Contract, blocksize: int, percdamp: float,
              fixed: torch.Tensor | None = None):
    """Returns (pruned mask, updated weights in the weight's dtype); the weight itself is not modified.
    The contract says the pattern: N:M groups (``block``) or an unstructured ``ratio``. ``fixed``: a mask
    to keep (e.g. Wanda's) instead of choosing one; the weights are still reconstructed under it."""
    W = weight.detach().clone().float()
    H = stats.require("hessian", "sparsegpt").clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U = inverse_hessian_factor(H, percdamp)
    nm = contract.kind == NM
    n, m = (contract.pruned_per_block, contract.block) if nm else (0, 0)
    if fixed is None and not nm and contract.ratio == 0:
        return torch.zeros_like(W, dtype=torch.bool), weight.detach().clone()

    pruned = torch.zeros_like(W, dtype=torch.bool)
    columns = W.shape[1]
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        block = W[:, start:end].clone()
        U_block = U[start:end, start:end]
        inverse_diag = torch.diag(U_block)
        if fixed is not None:
            mask = fixed[:, start:end].clone()
        elif nm:
            mask = torch.zeros_like(block, dtype=torch.bool)
        else:
            mask = _block_mask(block, inverse_diag, contract.ratio)
        errors = torch.zeros_like(block)
        for i in range(end - start):
            if fixed is None and nm and i % m == 0:
                saliency = block[:, i : i + m] ** 2 / inverse_diag[i : i + m].reshape(1, -1) ** 2
                mask[:, i : i + m] = nm_mask(saliency, n, m, contract.ties)
            column = block[:, i]
            quantized = column.masked_fill(mask[:, i], 0)
            error = (column - quantized) / U_block[i, i]
            block[:, i:] -= error.unsqueeze(1).matmul(U_block[i, i:].unsqueeze(0))
            block[:, i] = quantized
            errors[:, i] = error
        W[:, start:end] = block
        pruned[:, start:end] = mask
        W[:, end:] -= errors.matmul(U[start:end, end:])
    return pruned, W.to(weight.dtype)
