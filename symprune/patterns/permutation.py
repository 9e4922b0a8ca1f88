"""RIA's input-channel permutation for N:M sparsity (Zhang et al. 2024, §"channel permutation").

N:M blocks are M *consecutive* input columns, so which columns share a block decides how
much score a row can keep. A permutation of the columns is chosen to keep more, the N:M
mask is taken in permuted order and then mapped back to the original columns: the layer's
function is that of the permuted, pruned layer applied to permuted inputs.

- heuristic channel reallocation: sort columns by their total score and deal them to the
  blocks in a zig-zag over M equal slices, so each block gets one column of every slice;
- linear-sum assignment (optional): for each position c in a block, reassign the column at
  position c among all blocks to maximise the total retained score (scipy's solver).

The result is never worse than no permutation: every step is compared with its start.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

GAIN_CHUNK_ELEMENTS = 2**25  # bounds the memory of one slice of the assignment gains


def retained_score(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Total score kept by the N:M pattern: the M−N largest of every block of every row."""
    blocks = scores.reshape(scores.shape[0], -1, m).float()
    return torch.topk(blocks, m - n, dim=-1).values.sum()


def heuristic_reallocation(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Column order that gives every block one column of each of M importance slices (zig-zag)."""
    order = torch.sort(torch.sum(scores, dim=0), stable=True)[1]
    slices = order.reshape(m, -1).clone()  # slice c: the c-th M-quantile of columns by importance
    slices[1::2] = slices[1::2].flip(-1)
    return slices.t().reshape(-1)  # index[b·M + c] = slices[c, b]


def _assignment_gains(blocks: torch.Tensor, position: int, n: int, m: int) -> torch.Tensor:
    """gains[r, b]: score block b keeps when the column at ``position`` comes from block r."""
    rows, groups, _ = blocks.shape
    others = torch.cat([blocks[:, :, :position], blocks[:, :, position + 1 :]], dim=-1)  # (rows, G, M-1)
    candidates = blocks[:, :, position]  # (rows, G): candidate column of each block r
    chunk = max(1, GAIN_CHUNK_ELEMENTS // (rows * groups * m))
    gains = []
    for start in range(0, groups, chunk):
        picked = candidates[:, start : start + chunk].t()  # (R, rows)
        trial = torch.cat(
            [others.unsqueeze(0).expand(picked.shape[0], -1, -1, -1), picked[:, :, None, None].expand(-1, -1, groups, 1)],
            dim=-1,
        )  # (R, rows, G, M)
        gains.append(torch.topk(trial, m - n, dim=-1).values.sum(dim=(1, 3)))
    return torch.cat(gains)


def assignment_refinement(scores: torch.Tensor, index: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """One linear-sum-assignment round per block position, each keeping at least the score it starts from."""
    for position in range(m):
        blocks = scores[:, index].float().reshape(scores.shape[0], -1, m)
        gains = _assignment_gains(blocks, position, n, m)
        donors, receivers = linear_sum_assignment(gains.cpu().numpy(), maximize=True)
        source = torch.empty_like(index[position::m])
        source[torch.as_tensor(receivers)] = index[position::m][torch.as_tensor(donors)]
        candidate = index.clone()
        candidate[position::m] = source
        if retained_score(scores[:, candidate], n, m) >= retained_score(scores[:, index], n, m):
            index = candidate
    return index


def channel_permutation(scores: torch.Tensor, n: int, m: int, assignment: bool) -> torch.Tensor:
    """A column order for the N:M mask; the identity when reallocation would keep less score."""
    identity = torch.arange(scores.shape[1], device=scores.device)
    index = heuristic_reallocation(scores, m)
    if retained_score(scores[:, index], n, m) < retained_score(scores, n, m):
        index = identity
    return assignment_refinement(scores, index, n, m) if assignment else index
