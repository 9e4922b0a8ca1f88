"""The family-agnostic view of a model: its decoder blocks and their prunable matrices.

A prunable matrix is a linear layer's weight, or one expert's matrix inside a fused mixture-of-experts
parameter (``model/experts.py``). Mixture-of-experts layers come in two layouts: fused experts (3-D parameters,
transformers 5) and a list of expert modules with their own linears (an ``nn.ModuleList`` of two or more modules
of one class, as transformers 4 stores Mixtral's or Qwen-MoE's experts). Either way an expert's matrices are
``routed``: they see only the tokens routed to that expert. Routers are not pruned unless named by ``targets``:
in the module holding the experts, a linear whose output width is the number of experts (the router) or one (a
shared expert's gate) is left out by default.
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
    """A linear layer's weight as (d_out, d_in); ``routed``: the layer belongs to one expert of a list of experts."""

    layer: nn.Module
    routed: bool = False

    @property
    def weight(self) -> torch.Tensor:
        return weight_matrix(self.layer)


Matrix = LinearMatrix | ExpertMatrix


def find_experts(module: nn.Module) -> dict[str, nn.Module]:
    """Every fused mixture-of-experts module inside ``module``, by its name relative to it."""
    return {name: experts for name, experts in module.named_modules() if is_fused_experts(experts)}


def is_expert_list(module: nn.Module) -> bool:
    """A list of two or more modules of one class, each holding linears: the experts of a mixture-of-experts
    layer stored as modules (a decoder block holds no other such list)."""
    return (isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(entry) for entry in module}) == 1
            and all(find_linears(entry) for entry in module))


def find_expert_lists(module: nn.Module) -> dict[str, nn.ModuleList]:
    """Every list of expert modules inside ``module``, by its name relative to it."""
    return {name: experts for name, experts in module.named_modules() if is_expert_list(experts)}


def find_routers(block: nn.Module) -> set[str]:
    """The linears that route tokens to experts (or gate a shared expert): in the module holding the experts
    (fused or a list), outside the experts, those whose output width is the number of experts or one."""
    counts = {name: experts.down_proj.shape[0] for name, experts in find_experts(block).items()}
    counts |= {name: len(experts) for name, experts in find_expert_lists(block).items()}
    routers = set()
    for name, count in counts.items():
        parent = name.rpartition(".")[0]
        for linear, layer in find_linears(block.get_submodule(parent)).items():
            full_name = f"{parent}.{linear}" if parent else linear
            if not full_name.startswith(f"{name}.") and weight_matrix(layer).shape[0] in (count, 1):
                routers.add(full_name)
    return routers


def routed_linears(block: nn.Module) -> set[str]:
    """The linears inside a list of experts, by name relative to ``block``."""
    return {f"{name}.{linear}" for name, experts in find_expert_lists(block).items() for linear in find_linears(experts)}


def candidate_matrices(block: nn.Module) -> dict[str, tuple[Matrix, bool]]:
    """Every matrix of ``block`` by name relative to it (each fused expert's as ``<experts>.<e>.<part>``), with
    whether it is pruned by default: every one but the routers."""
    routers, routed = find_routers(block), routed_linears(block)
    candidates: dict[str, tuple[Matrix, bool]] = {name: (LinearMatrix(layer, name in routed), name not in routers)
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
