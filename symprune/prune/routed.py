"""Calibration statistics of fused experts: each expert's matrices see only the tokens routed to it.

A hook on the experts module reads what it receives (the hidden states and the router's ``top_k_index``),
and per calibration sequence feeds each expert's matrices with the sequence's tokens routed to that expert
(``model/experts.py`` computes the down projection's inputs). A sequence that routes no token to an expert
does not count for it: its statistics are means over the sequences that did (for Wanda's ‖X_:,j‖ the
count is a constant factor per layer and changes no mask). An expert that no calibration token reached has
no statistics (``n_tokens == 0``) and is pruned by weight magnitude (``method_for_expert``).

``score.routing=gate`` weighs the statistics by the router as MoE-Pruner does: each routed token's inputs
(to the gate and up projections, and its activations to the down projection) are scaled by the token's
routing weight for the expert. Experts stored as a list of modules (``model/structure.py``) are hooked as
ordinary linears, which only their routed tokens reach; the routing weights are not visible there.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from symprune.model.experts import ExpertMatrix, routed_inputs
from symprune.prune.method import PruningMethod
from symprune.prune.stats import LayerStats, StatsAccumulator

log = logging.getLogger("symprune")


def hook_routed_stats(experts: nn.Module, accumulators: list[tuple[ExpertMatrix, StatsAccumulator]], batch: dict,
                      routing: str = "none"):
    """A forward pre-hook on ``experts`` feeding the accumulators of its matrices; ``batch["size"]`` is the
    number of sequences entering the block (the experts see them flattened). ``routing="gate"``: every input a
    routed token gives an expert's matrices is scaled by the token's routing weight for that expert."""
    mine = {(matrix.expert, matrix.part): (matrix, accumulator) for matrix, accumulator in accumulators}
    wants_outputs = any("out_sq_norm" in accumulator.wanted for _, accumulator in accumulators)
    signature = inspect.signature(experts.forward)

    def feed(module, args, kwargs):
        # the interface's arguments: the tokens, the experts each is routed to, and its routing weights for them
        hidden, top_k_index, top_k_weights = list(signature.bind(*args, **kwargs).arguments.values())[:3]
        hidden = hidden.reshape(batch["size"], -1, hidden.shape[-1])
        top_k_index = top_k_index.reshape(batch["size"], -1, top_k_index.shape[-1])
        top_k_weights = top_k_weights.reshape(batch["size"], -1, top_k_weights.shape[-1])
        for sequence, routes, weights in zip(hidden, top_k_index, top_k_weights):
            for expert in routes.unique().tolist():
                if expert >= experts.down_proj.shape[0]:  # expert parallelism's sentinel: not on this rank
                    continue
                chosen = routes == expert
                tokens = sequence[chosen.any(dim=-1)]
                parts = routed_inputs(experts, expert, tokens)
                if routing == "gate":
                    parts = gate_weighted(parts, (weights * chosen).sum(dim=-1)[chosen.any(dim=-1)])
                last_inputs, last_terms = None, None  # gate and up read the same tokens: their terms once
                for part, inputs in parts.items():
                    if (expert, part) not in mine:  # a matrix ``targets`` leaves out
                        continue
                    matrix, accumulator = mine[(expert, part)]
                    outputs = F.linear(inputs, matrix.weight, matrix.bias) if wants_outputs else None
                    last_terms = accumulator.add_batch(inputs.unsqueeze(0), None if outputs is None else outputs.unsqueeze(0),
                                                       reuse=last_terms if inputs is last_inputs else None)
                    last_inputs = inputs

    return experts.register_forward_pre_hook(feed, with_kwargs=True)


def gate_weighted(parts: dict[str, torch.Tensor], gates: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each part's inputs with every token's row scaled by its routing weight (``gates``: one per token); parts
    that read the same tensor still read one tensor."""
    scaled: dict[int, torch.Tensor] = {}
    return {part: scaled.setdefault(id(inputs), inputs * gates.unsqueeze(-1).to(inputs.dtype))
            for part, inputs in parts.items()}


def method_for_expert(method: PruningMethod, name: str, stats: LayerStats) -> tuple[PruningMethod, dict[str, Any]]:
    """How one expert matrix is pruned, and what its record says about its routing: the configured method on its
    routed tokens' statistics, or, when no calibration token reached the expert, weight magnitude under the
    same pattern (reported as a warning and ``routed_tokens: 0``)."""
    if stats.n_tokens == 0:
        log.warning("%s: no calibration token was routed to this expert; pruned by weight magnitude", name)
        return method.without_statistics(), {"routed_tokens": 0}
    return method, {"routed_tokens": stats.n_tokens}
