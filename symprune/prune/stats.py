"""Streaming calibration statistics of one linear layer's inputs (docs/methods.md §1).

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

STATISTICS = ("sq_norm", "mean_sum", "var", "hessian", "out_sq_norm")


@dataclass
class LayerStats:
    """What a score, pattern or refinement may read about one layer's inputs.

    sq_norm[j]:  mean over sequences of Σ_tokens x_j²  (= ‖X_:,j‖² / n_sequences)
    mean_sum[j]: mean over sequences of Σ_tokens x_j
    var[j]:      token-weighted mean of the within-sequence population variance of x_j
    hessian:     2/n · XᵀX over all n sequences' tokens (SparseGPT's H)
    out_sq_norm[i]: mean over sequences of Σ_tokens y_i² for the layer's (dense) outputs y = x Wᵀ + b
    """

    n_sequences: int = 0
    n_tokens: int = 0
    sq_norm: torch.Tensor | None = None
    mean_sum: torch.Tensor | None = None
    var: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    out_sq_norm: torch.Tensor | None = None

    def permuted(self, order: torch.Tensor) -> LayerStats:
        """The statistics of the layer with its input columns taken in ``order`` (output-side ones unchanged)."""
        def take(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[order]

        hessian = None if self.hessian is None else self.hessian[order][:, order]
        return LayerStats(self.n_sequences, self.n_tokens, take(self.sq_norm), take(self.mean_sum), take(self.var),
                          hessian, self.out_sq_norm)

    def require(self, name: str, who: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{who} needs the calibration statistic '{name}', which was not collected")
        return value


class StatsAccumulator:
    """Accumulates the requested statistics for one linear layer of shape (d_out, d_in)."""

    def __init__(self, d_in: int, wanted: set[str] | frozenset[str], device: torch.device | str, d_out: int = 0):
        unknown = set(wanted) - set(STATISTICS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(STATISTICS)}")
        self.stats = LayerStats()
        self.wanted = frozenset(wanted)
        for name in self.wanted:
            shape = {"hessian": (d_in, d_in), "out_sq_norm": (d_out,)}.get(name, (d_in,))
            setattr(self.stats, name, torch.zeros(shape, dtype=torch.float32, device=device))

    @torch.no_grad()
    def add_batch(self, inputs: torch.Tensor, outputs: torch.Tensor | None = None) -> None:
        """Add a batch of sequences, shaped (batch, tokens, d_in) or (tokens, d_in), and the layer's outputs."""
        if "out_sq_norm" in self.wanted and outputs is None:
            raise ValueError("the statistic 'out_sq_norm' needs the layer's outputs")
        if inputs.dim() == 2:
            inputs = inputs.unsqueeze(0)
        batch = inputs.shape[0]
        inputs = inputs.reshape(batch, -1, inputs.shape[-1])
        outputs = outputs.reshape(batch, -1, outputs.shape[-1]) if outputs is not None else [None] * batch
        for sequence, sequence_out in zip(inputs, outputs):
            self._add_sequence(sequence.t().float(), None if sequence_out is None else sequence_out.t().float())

    def _add_sequence(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """x is (d_in, tokens) and y (d_out, tokens) in float32, as the references lay them out."""
        s = self.stats
        n, tokens = s.n_sequences, x.shape[1]
        if "var" in self.wanted:
            seq_var = torch.var(x, dim=1, unbiased=False)
            s.var = seq_var if s.n_tokens == 0 else (s.var * s.n_tokens + seq_var * tokens) / (s.n_tokens + tokens)
        for name in ("sq_norm", "mean_sum", "hessian", "out_sq_norm"):
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
        if "out_sq_norm" in self.wanted:
            s.out_sq_norm += torch.norm(y, p=2, dim=1) ** 2 / n
        s.n_sequences, s.n_tokens = n, s.n_tokens + tokens
