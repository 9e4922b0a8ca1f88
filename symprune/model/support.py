"""Architectures the layer-wise driver cannot prune as the model computes, refused at plan time.

The driver runs each decoder block on the hidden states entering it plus arguments that depend only on
the batch size and the block (masks, rotary tables, flags). Blocks that read anything else cannot be
replayed one at a time: per-layer token embeddings (Gemma 3n, Gemma 4 E2B/E4B), or keys and values
computed by an earlier block (KV sharing). Fused experts must follow transformers' experts interface
(model/experts.py).
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

from symprune.errors import ConfigError
from symprune.model.experts import missing_interface
from symprune.model.structure import find_experts

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
