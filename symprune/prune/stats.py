"""Streaming calibration statistics of one linear layer's inputs (docs/methods.md §1).

Every statistic is a running mean over calibration *sequences*, updated one
sequence at a time with the reference implementations' recurrence and op order
(``s ← s·n/(n+1); n ← n+1; s += f(x)/n``) in float32, whatever the model dtype.
Updating per sequence keeps the masks bit-identical to the references when the
block runs one sequence at a time; a larger forward batch only changes the
forward pass's own rounding, never the recurrence.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

STATISTICS = ("sq_norm", "mean_sum", "var", "hessian", "out_sq_norm")
TOKEN_SUMS = ("sq_norm", "mean_sum", "hessian")  # per sequence, sums over its tokens (var: a per-token mean)


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


@dataclass(frozen=True)
class InputTerms:
    """What a batch of input sequences adds to one layer's input statistics, per sequence (``first``: the
    first sequence's number, from 1, as the running means divide by it)."""

    first: int
    wanted: frozenset[str]
    per_sequence: list[dict[str, torch.Tensor]]


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
    def add_batch(self, inputs: torch.Tensor, outputs: torch.Tensor | None = None,
                  reuse: InputTerms | None = None) -> InputTerms:
        """Add a batch of sequences, shaped (batch, tokens, d_in) or (tokens, d_in), and the layer's outputs.

        Returns what the inputs added to the input statistics. ``reuse``: what another accumulator returned for
        these same inputs (layers that read one tensor, such as q/k/v or gate/up); it is added as it is when it
        was computed for the same statistics and sequence numbers, which is what computing it again would
        add, bit for bit.
        """
        if "out_sq_norm" in self.wanted and outputs is None:
            raise ValueError("the statistic 'out_sq_norm' needs the layer's outputs")
        if inputs.dim() == 2:
            inputs = inputs.unsqueeze(0)
        batch = inputs.shape[0]
        inputs = inputs.reshape(batch, -1, inputs.shape[-1])
        outputs = outputs.reshape(batch, -1, outputs.shape[-1]) if outputs is not None else [None] * batch
        first = self.stats.n_sequences + 1
        terms = reuse
        if terms is None or (terms.first, terms.wanted, len(terms.per_sequence)) != (first, self.wanted, batch):
            terms = InputTerms(first, self.wanted, [self._input_terms(sequence.t().float(), first + index)
                                                    for index, sequence in enumerate(inputs)])
        for sequence_terms, sequence_out in zip(terms.per_sequence, outputs):
            self._add_sequence(sequence_terms, inputs.shape[1], None if sequence_out is None else sequence_out.t().float())
        return terms

    def _input_terms(self, x: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """What sequence number ``n`` (from 1), x of shape (d_in, tokens) in float32 as the references lay it
        out, adds to each input statistic: f(x)/n for the running means, its own variance for ``var``."""
        terms = {}
        if "var" in self.wanted:
            terms["var"] = torch.var(x, dim=1, unbiased=False)
        if "sq_norm" in self.wanted:
            terms["sq_norm"] = token_norms(x) ** 2 / n
        if "mean_sum" in self.wanted:
            terms["mean_sum"] = torch.sum(x, dim=1) / n
        if "hessian" in self.wanted:
            scaled = math.sqrt(2 / n) * x
            terms["hessian"] = scaled.matmul(scaled.t())
        return terms

    def _add_sequence(self, terms: dict[str, torch.Tensor], tokens: int, y: torch.Tensor | None) -> None:
        """The references' recurrence; y is the layer's output, (d_out, tokens) in float32."""
        s = self.stats
        n = s.n_sequences
        if "var" in self.wanted:
            seq_var = terms["var"]
            s.var = seq_var.clone() if s.n_tokens == 0 else (s.var * s.n_tokens + seq_var * tokens) / (s.n_tokens + tokens)
        for name in ("sq_norm", "mean_sum", "hessian", "out_sq_norm"):
            if name in self.wanted:
                getattr(s, name).mul_(n / (n + 1))
        n += 1
        for name in ("sq_norm", "mean_sum", "hessian"):
            if name in self.wanted:
                getattr(s, name).add_(terms[name])
        if "out_sq_norm" in self.wanted:
            s.out_sq_norm += token_norms(y) ** 2 / n
        s.n_sequences, s.n_tokens = n, s.n_tokens + tokens


def token_norms(x: torch.Tensor) -> torch.Tensor:
    """``torch.norm(x, p=2, dim=1)`` for x of shape (features, tokens) viewed from a (tokens, features) tensor, as
    the references lay a layer's inputs out: the same bits, several times faster on the CPU.

    There torch's norm walks the strided token axis one element at a time, ``acc + x²`` in float32, and takes
    a correctly rounded square root. ``index_add_`` onto one row adds the token rows in that order, vectorised
    across features, and float64's square root rounded to float32 is the correctly rounded one. A check on
    the first call confirms that this torch build agrees; elsewhere (CUDA, another layout, a disagreeing
    build) torch.norm itself runs.
    """
    token_major = x.t().is_contiguous()
    if x.device.type == "cpu" and x.dtype == torch.float32 and token_major and _sequential_sum_is_torch_norm():
        return _sequential_norms(x.t())
    return torch.norm(x, p=2, dim=1)


def _sequential_norms(rows: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each column of ``rows`` (tokens, features): squares summed row after row."""
    one_index = torch.zeros(rows.shape[0], dtype=torch.long)
    sums = torch.zeros(1, rows.shape[1]).index_add_(0, one_index, rows * rows)[0]
    return sums.double().sqrt().float()


@functools.cache
def _sequential_sum_is_torch_norm() -> bool:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(300, 70, generator=generator) * torch.logspace(-8, 8, 70)
    return torch.equal(_sequential_norms(rows), torch.norm(rows.t(), p=2, dim=1))
