"""The family-agnostic view of a model: its decoder blocks and their prunable matrices.

A prunable matrix is a linear layer's weight, or one expert's matrix inside a fused mixture-of-experts
parameter (``model/experts.py``). Routers are never pruned: within a block holding fused experts, a
linear whose output width is the number of experts (the router) or one (a shared expert's gate) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from symprune.model.experts import ExpertMatrix, expert_matrices, is_fused_experts

PRUNABLE = (nn.Linear, Conv1D)


def skeleton(config: PretrainedConfig, trust_remote_code: bool = False) -> nn.Module:
    """The model's module tree on the meta device: shapes without memory, for checks before loading."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a (d_out, d_in) view; GPT-2's Conv1D stores it transposed."""
    return layer.weight.t() if isinstance(layer, Conv1D) else layer.weight


def find_linears(module: nn.Module) -> dict[str, nn.Module]:
    """Every prunable linear layer inside ``module``, by its name relative to it."""
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, PRUNABLE)}


@dataclass(frozen=True)
class LinearMatrix:
    """A linear layer's weight as (d_out, d_in)."""

    layer: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return weight_matrix(self.layer)


Matrix = LinearMatrix | ExpertMatrix


def find_experts(module: nn.Module) -> dict[str, nn.Module]:
    """Every fused mixture-of-experts module inside ``module``, by its name relative to it."""
    return {name: experts for name, experts in module.named_modules() if is_fused_experts(experts)}


def find_routers(block: nn.Module) -> set[str]:
    """The linears that route tokens to experts (or gate a shared expert): in the module holding fused experts,
    those whose output width is the number of experts or one."""
    routers = set()
    for name, experts in find_experts(block).items():
        parent = name.rpartition(".")[0]
        widths = (experts.down_proj.shape[0], 1)
        routers |= {
            f"{parent}.{linear}" if parent else linear
            for linear, layer in find_linears(block.get_submodule(parent)).items()
            if weight_matrix(layer).shape[0] in widths
        }
    return routers


def find_matrices(block: nn.Module) -> dict[str, Matrix]:
    """Every matrix of ``block`` that is pruned, by name relative to it: its linears but the routers, and each
    fused expert's matrices as ``<experts>.<e>.<part>``."""
    routers = find_routers(block)
    matrices: dict[str, Matrix] = {name: LinearMatrix(layer) for name, layer in find_linears(block).items()
                                   if name not in routers}
    for name, experts in find_experts(block).items():
        matrices |= {f"{name}.{part}": matrix for part, matrix in expert_matrices(experts).items()}
    return matrices


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the module list, each of whose entries holds linear layers, with the most parameters.

    This finds ``model.layers`` (LLaMA, Mistral, Qwen, Gemma), ``model.decoder.layers``
    (OPT), ``gpt_neox.layers`` and ``transformer.h`` (GPT-2) without naming any family.
    """
    candidates = [
        (sum(p.numel() for p in module.parameters()), name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and all(find_linears(block) for block in module)
    ]
    if not candidates:
        raise ValueError(f"no list of decoder blocks with linear layers found in {type(model).__name__}")
    _, name, blocks = max(candidates, key=lambda candidate: candidate[0])
    return name, blocks


def linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of every prunable matrix in the decoder blocks, by full name."""
    prefix, blocks = find_blocks(model)
    return {
        f"{prefix}.{index}.{name}": tuple(matrix.weight.shape)
        for index, block in enumerate(blocks)
        for name, matrix in find_matrices(block).items()
    }
