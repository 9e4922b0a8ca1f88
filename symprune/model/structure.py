"""The family-agnostic view of a model: its decoder blocks and their prunable matrices.

A prunable matrix is a linear layer's weight, or one expert's matrix inside a fused mixture-of-experts
parameter (``model/experts.py``). Routers are not pruned unless named by ``targets``: within a block holding
fused experts, a linear whose output width is the number of experts (the router) or one (a shared expert's
gate) is left out by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def candidate_matrices(block: nn.Module) -> dict[str, tuple[Matrix, bool]]:
    """Every matrix of ``block`` by name relative to it (each fused expert's as ``<experts>.<e>.<part>``), with
    whether it is pruned by default: every one but the routers."""
    routers = find_routers(block)
    candidates: dict[str, tuple[Matrix, bool]] = {name: (LinearMatrix(layer), name not in routers)
                                                  for name, layer in find_linears(block).items()}
    for name, experts in find_experts(block).items():
        candidates |= {f"{name}.{part}": (matrix, True) for part, matrix in expert_matrices(experts).items()}
    return candidates


def find_matrices(block: nn.Module, select: Callable[[str, bool], bool] | None = None,
                  prefix: str = "") -> dict[str, Matrix]:
    """The matrices of ``block`` that are pruned, by name relative to it: by default its linears but the routers,
    and each fused expert's matrices; ``select(prefix + name, by_default)`` chooses otherwise (prune/targets.py)."""
    return {name: matrix for name, (matrix, by_default) in candidate_matrices(block).items()
            if (select(prefix + name, by_default) if select else by_default)}


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


def linear_shapes(model: nn.Module, select: Callable[[str, bool], bool] | None = None) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of every pruned matrix in the decoder blocks (``select``: as find_matrices), by full name."""
    prefix, blocks = find_blocks(model)
    return {
        f"{prefix}.{index}.{name}": tuple(matrix.weight.shape)
        for index, block in enumerate(blocks)
        for name, matrix in find_matrices(block, select, f"{prefix}.{index}.").items()
    }


def prunable_names(model: nn.Module) -> dict[str, bool]:
    """Every matrix of the decoder blocks by full name, with whether it is pruned by default."""
    prefix, blocks = find_blocks(model)
    return {f"{prefix}.{index}.{name}": by_default for index, block in enumerate(blocks)
            for name, (_, by_default) in candidate_matrices(block).items()}


def linears_outside_blocks(model: nn.Module) -> list[str]:
    """The linear layers outside the decoder blocks (the LM head), by full name."""
    prefix, _ = find_blocks(model)
    return [name for name in find_linears(model) if not name.startswith(prefix + ".")]
