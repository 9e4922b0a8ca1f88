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

from symprune.prune.totals import ordered_total

GAIN_CHUNK_ELEMENTS = 2**25  # bounds the memory of one row chunk of the assignment gains


def retained_score(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Total score kept by the N:M pattern: the M−N largest of every block of every row (float64, summed in an
    order independent of the thread count, so the comparisons between column orders below decide alike
    under any number of threads)."""
    blocks = scores.reshape(scores.shape[0], -1, m).float()
    return ordered_total(torch.topk(blocks, m - n, dim=-1).values)


def heuristic_reallocation(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Column order that gives every block one column of each of M importance slices (zig-zag)."""
    order = torch.sort(torch.sum(scores, dim=0), stable=True)[1]
    slices = order.reshape(m, -1).clone()  # slice c: the c-th M-quantile of columns by importance
    slices[1::2] = slices[1::2].flip(-1)
    return slices.t().reshape(-1)  # index[b·M + c] = slices[c, b]


def assignment_gains(blocks: torch.Tensor, position: int, n: int, m: int) -> torch.Tensor:
    """gains[r, b]: score block b keeps when the column at ``position`` comes from block r.

    With the M−1 other columns of block b fixed, the M−N kept scores of a row are the M−N largest of
    the others, unless the incoming score x beats the (M−N)-th largest of them, t, and replaces it:
    kept(x) = top_{M−N}(others) + max(0, x − t). Summed over rows, gains[r, b] = base[b] + Σ_rows
    relu(x[row, r] − t[row, b]): one (groups × groups) reduction per row chunk instead of a top-k over
    every candidate block.
    """
    rows, groups, _ = blocks.shape
    others = torch.cat([blocks[:, :, :position], blocks[:, :, position + 1 :]], dim=-1)  # (rows, G, M-1)
    largest = torch.topk(others, m - n, dim=-1).values  # (rows, G, M-N), descending
    base = largest.sum(dim=(0, 2))  # (G,)
    threshold = largest[..., -1]  # t: the (M-N)-th largest of the others, (rows, G)
    candidates = blocks[:, :, position]  # (rows, G): the column block r would give
    gains = torch.zeros(groups, groups, dtype=blocks.dtype, device=blocks.device)
    chunk = max(1, GAIN_CHUNK_ELEMENTS // (groups * groups))
    for start in range(0, rows, chunk):
        x, t = candidates[start : start + chunk], threshold[start : start + chunk]
        gains += torch.relu(x.unsqueeze(2) - t.unsqueeze(1)).sum(dim=0)  # [r, b]
    return gains + base.unsqueeze(0)


def assignment_refinement(scores: torch.Tensor, index: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """One linear-sum-assignment round per block position, each keeping at least the score it starts from."""
    from scipy.optimize import linear_sum_assignment  # scipy.optimize takes a second to import: only lsa pays it

    for position in range(m):
        blocks = scores[:, index].float().reshape(scores.shape[0], -1, m)
        gains = assignment_gains(blocks, position, n, m)
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
