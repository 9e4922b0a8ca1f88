"""Mixture-of-experts layers whose experts are stored fused: 3-D parameters (experts × d_out × d_in) behind
transformers' experts interface (``gate_up_proj`` or ``up_proj``, ``down_proj``, optional ``*_bias``, the flags
``is_transposed``, ``is_concatenated``, ``has_gate``, ``has_bias`` and the module's own ``_apply_gate``).

Each expert's matrices are pruned as separate linear layers (``<experts>.<e>.gate_proj``, ``.up_proj``,
``.down_proj``, the names transformers used when experts were ``nn.Linear`` modules), with statistics from the
tokens routed to that expert only (``routed_inputs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

INTERFACE = ("has_gate", "is_transposed", "is_concatenated", "has_bias")


def is_fused_experts(module: nn.Module) -> bool:
    down = getattr(module, "down_proj", None)
    return isinstance(down, nn.Parameter) and down.dim() == 3


def missing_interface(module: nn.Module) -> list[str]:
    """What a fused experts module lacks of the interface symprune reads (empty: supported)."""
    missing = [name for name in INTERFACE if not hasattr(module, name)]
    activation = "_apply_gate" if getattr(module, "has_gate", True) else "act_fn"
    return missing + ([] if hasattr(module, activation) else [activation])


@dataclass(frozen=True)
class ExpertMatrix:
    """One expert's matrix as a (d_out, d_in) view of the fused parameter, the layout of ``y = x Wᵀ``; ``rows``
    picks the gate or the up half of a fused ``gate_up_proj``."""

    experts: nn.Module
    parameter: str
    expert: int
    part: str  # gate_proj, up_proj or down_proj
    rows: slice | None = None
    routed = True  # it sees only the tokens routed to its expert

    @property
    def weight(self) -> torch.Tensor:
        matrix = expert_weight(self.experts, self.parameter, self.expert)
        return matrix if self.rows is None else matrix[self.rows]

    @property
    def bias(self) -> torch.Tensor | None:
        bias = _expert_bias(self.experts, self.parameter, self.expert)
        return bias if bias is None or self.rows is None else bias[self.rows]


def expert_weight(experts: nn.Module, parameter: str, expert: int) -> torch.Tensor:
    matrix = getattr(experts, parameter)[expert]
    return matrix.t() if experts.is_transposed else matrix


def _expert_bias(experts: nn.Module, parameter: str, expert: int) -> torch.Tensor | None:
    return getattr(experts, f"{parameter}_bias")[expert] if experts.has_bias else None


def _first_parameter(experts: nn.Module) -> str:
    return "gate_up_proj" if experts.has_gate else "up_proj"


def expert_matrices(experts: nn.Module) -> dict[str, ExpertMatrix]:
    """Every expert's matrices, by ``<e>.<part>``."""
    matrices = {}
    for expert in range(experts.down_proj.shape[0]):
        if experts.has_gate:
            halves = (slice(0, None, 2), slice(1, None, 2))
            if experts.is_concatenated:
                width = expert_weight(experts, "gate_up_proj", expert).shape[0] // 2
                halves = (slice(0, width), slice(width, None))
            matrices[f"{expert}.gate_proj"] = ExpertMatrix(experts, "gate_up_proj", expert, "gate_proj", halves[0])
            matrices[f"{expert}.up_proj"] = ExpertMatrix(experts, "gate_up_proj", expert, "up_proj", halves[1])
        else:
            matrices[f"{expert}.up_proj"] = ExpertMatrix(experts, "up_proj", expert, "up_proj")
        matrices[f"{expert}.down_proj"] = ExpertMatrix(experts, "down_proj", expert, "down_proj")
    return matrices


def routed_inputs(experts: nn.Module, expert: int, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each matrix of ``expert`` receives for the routed ``tokens`` (tokens × hidden): the tokens themselves
    for the gate and up projections, the gated activations (before the routing weight) for the down projection,
    computed with the module's own gating."""
    first = _first_parameter(experts)
    projected = F.linear(tokens, expert_weight(experts, first, expert), _expert_bias(experts, first, expert))
    hidden = experts._apply_gate(projected) if experts.has_gate else experts.act_fn(projected)
    inputs = {"gate_proj": tokens, "up_proj": tokens} if experts.has_gate else {"up_proj": tokens}
    return {**inputs, "down_proj": hidden}
