"""Architectures the layer-wise driver cannot prune as the model computes, refused at plan time.

The driver runs each decoder block on the hidden states entering it plus arguments that depend only on
the batch size and the block (masks, rotary tables, flags). Blocks that read anything else cannot be
replayed one at a time: per-layer token embeddings (Gemma 3n, Gemma 4 E2B/E4B), or keys and values
computed by an earlier block (KV sharing). Fused experts must follow transformers' experts interface
(model/experts.py). A block whose parameters lie mostly outside the matrices symprune can prune (an experts
layout it does not know) is refused rather than left dense.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

from symprune.errors import ConfigError
from symprune.model.experts import missing_interface
from symprune.model.structure import LinearMatrix, candidate_matrices, find_blocks, find_experts

COVERED_AT_LEAST = 0.5  # the share of a block's parameters that must lie in matrices symprune can prune

# config setting -> why a non-zero value cannot be pruned layer by layer
CROSS_BLOCK_INPUTS = {
    "hidden_size_per_layer_input": "its blocks also receive per-layer token embeddings (per-layer inputs), which "
                                   "depend on the tokens and are not the previous block's output",
    "num_kv_shared_layers": "its last blocks reuse the keys and values computed by earlier blocks (KV sharing)",
}


def check_architecture(config: PretrainedConfig, model: nn.Module) -> None:
    """Refuse an architecture the layer-wise driver cannot prune exactly (``model``: its skeleton)."""
    text = config.get_text_config()
    for key, why in CROSS_BLOCK_INPUTS.items():
        value = getattr(text, key, None)
        if value:
            raise ConfigError(
                f"model type '{text.model_type}' with {key}={value} is not supported: {why}. The layer-wise driver "
                f"replays each block on its captured inputs; supported are blocks that read only the hidden states and "
                f"per-batch arguments ({key}=0 or a model without it)"
            )
    for name, experts in find_experts(model).items():
        missing = missing_interface(experts)
        if missing:
            raise ConfigError(
                f"model type '{text.model_type}': the fused experts {name} ({type(experts).__name__}) lack "
                f"{', '.join(missing)} of transformers' experts interface, which symprune reads to give each expert "
                f"its routed tokens; supported: experts classes decorated with use_experts_implementation"
            )
    _check_coverage(text.model_type, model)


def _matrix_parameters(block: nn.Module) -> set[int]:
    """The ids of the parameters holding the block's candidate matrices (a fused experts parameter once)."""
    return {id(matrix.layer.weight) if isinstance(matrix, LinearMatrix) else id(getattr(matrix.experts, matrix.parameter))
            for matrix, _ in candidate_matrices(block).values()}


def _check_coverage(model_type: str, model: nn.Module) -> None:
    """Refuse blocks whose parameters lie mostly outside the matrices symprune prunes, naming the largest ones."""
    prefix, blocks = find_blocks(model)
    for index, block in enumerate(blocks):
        covered = _matrix_parameters(block)
        parameters = dict(block.named_parameters())
        total = sum(parameter.numel() for parameter in parameters.values())
        outside = sorted(((name, parameter) for name, parameter in parameters.items() if id(parameter) not in covered),
                         key=lambda item: -item[1].numel())
        uncovered = sum(parameter.numel() for _, parameter in outside)
        if total and uncovered > (1 - COVERED_AT_LEAST) * total:
            largest = ", ".join(f"{name} {tuple(parameter.shape)}" for name, parameter in outside[:3])
            raise ConfigError(
                f"model type '{model_type}': {uncovered / total:.0%} of the parameters of block {prefix}.{index} lie "
                f"outside the matrices symprune prunes (linear layers, fused experts with transformers' experts "
                f"interface, lists of expert modules), e.g. {largest}; this layout is not supported, and pruning the "
                f"rest would leave most of the block dense"
            )
