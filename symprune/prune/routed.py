"""Calibration statistics of fused experts: each expert's matrices see only the tokens routed to it.

A hook on the experts module reads what it receives (the hidden states and the router's ``top_k_index``),
and per calibration sequence feeds each expert's matrices with the sequence's tokens routed to that expert
(``model/experts.py`` computes the down projection's inputs). A sequence that routes no token to an expert
does not count for it: its statistics are means over the sequences that did (for Wanda's ‖X_:,j‖ the
count is a constant factor per layer and changes no mask). An expert that no calibration token reached has
no statistics (``n_tokens == 0``) and is pruned by weight magnitude (``method_for_expert``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from torch import nn
from torch.nn import functional as F

from symprune.model.experts import ExpertMatrix, routed_inputs
from symprune.prune.method import PruningMethod
from symprune.prune.stats import LayerStats, StatsAccumulator

log = logging.getLogger("symprune")


def hook_routed_stats(experts: nn.Module, accumulators: list[tuple[ExpertMatrix, StatsAccumulator]], batch: dict):
    """A forward pre-hook on ``experts`` feeding the accumulators of its matrices; ``batch["size"]`` is the
    number of sequences entering the block (the experts see them flattened)."""
    mine = {(matrix.expert, matrix.part): (matrix, accumulator) for matrix, accumulator in accumulators}
    wants_outputs = any("out_sq_norm" in accumulator.wanted for _, accumulator in accumulators)
    signature = inspect.signature(experts.forward)

    def feed(module, args, kwargs):
        hidden, top_k_index = list(signature.bind(*args, **kwargs).arguments.values())[:2]  # tokens, their experts
        hidden = hidden.reshape(batch["size"], -1, hidden.shape[-1])
        top_k_index = top_k_index.reshape(batch["size"], -1, top_k_index.shape[-1])
        for sequence, routes in zip(hidden, top_k_index):
            for expert in routes.unique().tolist():
                if expert >= experts.down_proj.shape[0]:  # expert parallelism's sentinel: not on this rank
                    continue
                tokens = sequence[(routes == expert).any(dim=-1)]
                last_inputs, last_terms = None, None  # gate and up read the same tokens: their terms once
                for part, inputs in routed_inputs(experts, expert, tokens).items():
                    if (expert, part) not in mine:  # a matrix ``targets`` leaves out
                        continue
                    matrix, accumulator = mine[(expert, part)]
                    outputs = F.linear(inputs, matrix.weight, matrix.bias) if wants_outputs else None
                    last_terms = accumulator.add_batch(inputs.unsqueeze(0), None if outputs is None else outputs.unsqueeze(0),
                                                       reuse=last_terms if inputs is last_inputs else None)
                    last_inputs = inputs

    return experts.register_forward_pre_hook(feed, with_kwargs=True)


def method_for_expert(method: PruningMethod, name: str, stats: LayerStats) -> tuple[PruningMethod, dict[str, Any]]:
    """How one expert matrix is pruned, and what its record says about its routing: the configured method on its
    routed tokens' statistics, or, when no calibration token reached the expert, weight magnitude under the
    same pattern (reported as a warning and ``routed_tokens: 0``)."""
    if stats.n_tokens == 0:
        log.warning("%s: no calibration token was routed to this expert; pruned by weight magnitude", name)
        return method.without_statistics(), {"routed_tokens": 0}
    return method, {"routed_tokens": stats.n_tokens}
