"""Norms of the weight's rows and columns, shared by the relative-importance scores and refinements."""

import math

import torch


def weight_lp_norm(weight: torch.Tensor, p: float, dim: int) -> torch.Tensor:
    """ℓp norm of |W| along ``dim`` (0: one value per input column j, 1: one per output row i).

    p = 1 is computed as the plain sum of |W| — the references' RIA op order — and
    p = ∞ as the largest |W|.
    """
    magnitude = torch.abs(weight)
    if p == 1:
        return torch.sum(magnitude, dim=dim)
    if math.isinf(p):
        return torch.amax(magnitude, dim=dim)
    return torch.linalg.vector_norm(magnitude, ord=p, dim=dim)
