"""Streaming calibration statistics of one linear layer's inputs (algorithms.md §1).

Every statistic is a running mean over calibration *sequences*, updated one
sequence at a time with the reference implementations' recurrence and op order
(``s ← s·n/(n+1); n ← n+1; s += f(x)/n``) in float32, whatever the model dtype.
Updating per sequence keeps the masks bit-identical to the references when the
block runs one sequence at a time; a larger forward batch only changes the
forward pass's own rounding, never the recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

STATISTICS = ("sq_norm", "mean_sum", "var", "hessian")


@dataclass
class LayerStats:
    """What a score, pattern or refinement may read about one layer's inputs.

    sq_norm[j]:  mean over sequences of Σ_tokens x_j²  (= ‖X_:,j‖² / n_sequences)
    mean_sum[j]: mean over sequences of Σ_tokens x_j
    var[j]:      token-weighted mean of the within-sequence population variance of x_j
    hessian:     2/n · XᵀX over all n sequences' tokens (SparseGPT's H)
    """

    n_sequences: int = 0
    n_tokens: int = 0
    sq_norm: torch.Tensor | None = None
    mean_sum: torch.Tensor | None = None
    var: torch.Tensor | None = None
    hessian: torch.Tensor | None = None

    def require(self, name: str, who: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{who} needs the calibration statistic '{name}', which was not collected")
        return value


class StatsAccumulator:
    """Accumulates the requested statistics for one linear layer of input width ``d_in``."""

    def __init__(self, d_in: int, wanted: set[str] | frozenset[str], device: torch.device | str):
        unknown = set(wanted) - set(STATISTICS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(STATISTICS)}")
        self.stats = LayerStats()
        self.wanted = frozenset(wanted)
        for name in self.wanted:
            shape = (d_in, d_in) if name == "hessian" else (d_in,)
            setattr(self.stats, name, torch.zeros(shape, dtype=torch.float32, device=device))

    @torch.no_grad()
    def add_batch(self, inputs: torch.Tensor) -> None:
        """Add a batch of sequences, shaped (batch, tokens, d_in) or (tokens, d_in)."""
        if inputs.dim() == 2:
            inputs = inputs.unsqueeze(0)
        for sequence in inputs.reshape(inputs.shape[0], -1, inputs.shape[-1]):
            self._add_sequence(sequence.t().float())

    def _add_sequence(self, x: torch.Tensor) -> None:
        """x is (d_in, tokens) in float32, as the references lay it out."""
        s = self.stats
        n, tokens = s.n_sequences, x.shape[1]
        if "var" in self.wanted:
            seq_var = torch.var(x, dim=1, unbiased=False)
            s.var = seq_var if s.n_tokens == 0 else (s.var * s.n_tokens + seq_var * tokens) / (s.n_tokens + tokens)
        for name in ("sq_norm", "mean_sum", "hessian"):
            if name in self.wanted:
                getattr(s, name).mul_(n / (n + 1))
        n += 1
        if "sq_norm" in self.wanted:
            s.sq_norm += torch.norm(x, p=2, dim=1) ** 2 / n
        if "mean_sum" in self.wanted:
            s.mean_sum += torch.sum(x, dim=1) / n
        if "hessian" in self.wanted:
            scaled = math.sqrt(2 / n) * x
            s.hessian += scaled.matmul(scaled.t())
        s.n_sequences, s.n_tokens = n, s.n_tokens + tokens
