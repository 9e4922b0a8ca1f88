"""Synthetic models: any causal-LM architecture of transformers built from a config alone, with seeded
random weights, for speed and memory measurements at any scale without a checkpoint.

The shape comes from a preset of a real model's dimensions (``model.size``), from explicit dimensions
(``model.shape.*``), or from a preset with some dimensions replaced. The model is built with its
parameters on the meta device and each parameter is then allocated where the placement wants it, in
the requested dtype, and filled there: a 70B shape never exists twice, nor on the CPU when it is
meant for the accelerator.

Weights: N(0, initializer_range) for matrices and embeddings, 1 for one-dimensional weights (norm
scales), 0 for biases. Each matrix is drawn on the compute device from a generator seeded by
``model.seed`` and the parameter's name, then stored where the placement keeps it (an offloaded
block's on the CPU), so a seed gives the same weights under every placement on one kind of compute
device (CPU and CUDA generators differ). Synthetic models have no tokenizer: they calibrate and
evaluate on token ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import zlib
from dataclasses import dataclass

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from symprune.errors import ConfigError
from symprune.model.placement import CPU, Placement
from symprune.model.structure import find_blocks


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_positions: int


# Real models' dimensions (their config.json on the Hugging Face Hub), and a tiny one for tests.
PRESETS: dict[str, tuple[str, Shape]] = {
    "tiny": ("llama", Shape(64, 128, 2, 4, 2, 256, 2048)),
    "opt_1_3b": ("opt", Shape(2048, 8192, 24, 32, 32, 50272, 2048)),
    "llama2_7b": ("llama", Shape(4096, 11008, 32, 32, 32, 32000, 4096)),
    "mistral_7b": ("mistral", Shape(4096, 14336, 32, 32, 8, 32000, 32768)),
    "llama3_8b": ("llama", Shape(4096, 14336, 32, 32, 8, 128256, 8192)),
    "llama2_13b": ("llama", Shape(5120, 13824, 40, 40, 40, 32000, 4096)),
    "llama2_70b": ("llama", Shape(8192, 28672, 80, 64, 8, 32000, 4096)),
}
TESTED_ARCHITECTURES = ("gpt2", "gpt_neox", "llama", "mistral", "opt", "qwen2")
# Where an architecture's config keeps a dimension, when not under its common name (nor an attribute_map alias).
INTERMEDIATE_KEYS = ("intermediate_size", "ffn_dim", "n_inner")
COMMON_KEYS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "vocab_size": "vocab_size",
    "max_positions": "max_position_embeddings",
}


@dataclass(frozen=True)
class SyntheticModel:
    """A validated synthetic model: architecture, shape and seed."""

    architecture: str
    shape: Shape
    seed: int
    size: str | None = None  # the preset it started from

    def describe(self) -> str:
        s = self.shape
        preset = f" ({self.size} shape)" if self.size else ""
        return (
            f"synthetic {self.architecture}{preset}: hidden {s.hidden_size}, intermediate {s.intermediate_size}, "
            f"{s.num_layers} layers, {s.num_heads} heads ({s.num_kv_heads} kv), vocab {s.vocab_size}, "
            f"{s.max_positions} positions, seed {self.seed}"
        )

    def summary(self) -> dict:
        return {"architecture": self.architecture, "size": self.size, "seed": self.seed, "shape": dataclasses.asdict(self.shape)}

    def config(self) -> PretrainedConfig:
        """The transformers config of this architecture with this shape (checked by reading it back)."""
        default = AutoConfig.for_model(self.architecture)
        aliases = default.attribute_map
        values = {aliases.get(key, key): getattr(self.shape, field) for field, key in COMMON_KEYS.items()}
        intermediate = next((key for key in INTERMEDIATE_KEYS if hasattr(default, key)), None)
        if intermediate is None:
            raise ConfigError(f"model.architecture={self.architecture}: its config has no intermediate (MLP) width to set")
        values[intermediate] = self.shape.intermediate_size
        if hasattr(default, "num_key_value_heads"):
            values["num_key_value_heads"] = self.shape.num_kv_heads
        elif self.shape.num_kv_heads != self.shape.num_heads:
            raise ConfigError(
                f"model.architecture={self.architecture} has no grouped-query attention: model.shape.num_kv_heads "
                f"({self.shape.num_kv_heads}) must equal num_heads ({self.shape.num_heads})"
            )
        if hasattr(default, "head_dim"):
            values["head_dim"] = self.shape.hidden_size // self.shape.num_heads
        if hasattr(default, "word_embed_proj_dim"):  # OPT: no projection between embeddings and blocks
            values["word_embed_proj_dim"] = self.shape.hidden_size
        for token in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(getattr(default, token, None), int) and getattr(default, token) >= self.shape.vocab_size:
                values[token] = None
        config = AutoConfig.for_model(self.architecture, **values, use_cache=False)
        for key, value in values.items():
            if getattr(config, key) != value:
                raise ConfigError(f"model.architecture={self.architecture}: its config does not take {key}={value}")
        return config

    def build(self, dtype: torch.dtype, placement: Placement) -> nn.Module:
        """The model in eval mode, every parameter allocated and filled where ``placement`` wants it."""
        from accelerate import dispatch_model, init_empty_weights

        with init_empty_weights(include_buffers=False):  # parameters on meta; small buffers (rotary tables) real
            model = AutoModelForCausalLM.from_config(self.config(), dtype=dtype)
        homes = _device_map(model, dtype, placement)
        std = weight_std(model.config)
        for name, parameter in list(model.named_parameters()):
            module_name, _, leaf = name.rpartition(".")
            filled = self._fill(name, parameter.shape, dtype, std, placement.compute, _home(name, homes))
            model.get_submodule(module_name)._parameters[leaf] = nn.Parameter(filled, requires_grad=False)
        model.tie_weights()
        for name, buffer in list(model.named_buffers()):
            module_name, _, leaf = name.rpartition(".")
            model.get_submodule(module_name)._buffers[leaf] = buffer.to(_home(name, homes))
        if any(parameter.is_meta for parameter in model.parameters()):
            raise RuntimeError(f"synthetic {self.architecture}: a parameter was left unallocated")
        if placement.device_map is not None:
            dispatch_model(model, device_map=homes)
        model.config.use_cache = False
        return model.eval()

    def _fill(self, name: str, shape: torch.Size, dtype: torch.dtype, std: float, draw: torch.device, home: torch.device):
        """One parameter's values at ``home``: drawn on ``draw`` (the compute device, fast) and moved there."""
        if name.endswith("bias"):
            return torch.zeros(shape, dtype=dtype, device=home)
        if len(shape) == 1:
            return torch.ones(shape, dtype=dtype, device=home)
        generator = torch.Generator(device=draw).manual_seed((self.seed * 1_000_003 + zlib.crc32(name.encode())) % 2**62)
        return torch.empty(shape, dtype=dtype, device=draw).normal_(0, std, generator=generator).to(home)


def weight_std(config: PretrainedConfig) -> float:
    """The standard deviation of the architecture's own initialisation (OPT calls it init_std)."""
    return next((getattr(config, key) for key in ("initializer_range", "init_std") if hasattr(config, key)), 0.02)


def _device_map(model: nn.Module, dtype: torch.dtype, placement: Placement) -> dict[str, torch.device]:
    """Module name prefix → device: the compute device; offloaded blocks on the CPU; or accelerate's map."""
    if placement.device_map is not None:
        from accelerate.utils import get_balanced_memory, get_max_memory, infer_auto_device_map

        no_split = model._no_split_modules
        memory = (
            get_max_memory() if placement.device_map == "sequential"
            else get_balanced_memory(model, dtype=dtype, no_split_module_classes=no_split, low_zero=placement.device_map == "balanced_low_0")
        )
        mapped = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
        if "disk" in mapped.values():
            raise ConfigError("placement.device_map: the synthetic model does not fit in GPU and CPU memory (accelerate put parts on disk)")
        return {prefix: torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
                for prefix, device in mapped.items()}
    homes = {"": placement.compute}
    if placement.offload_blocks:
        homes[find_blocks(model)[0]] = CPU
    return homes


def _home(name: str, homes: dict[str, torch.device]) -> torch.device:
    """The device of the longest module prefix that contains ``name``."""
    matches = [prefix for prefix in homes if prefix == "" or name == prefix or name.startswith(prefix + ".")]
    return homes[max(matches, key=len)]


def synthetic_model(model_cfg) -> SyntheticModel:
    """The synthetic model a config asks for, every value checked (ConfigError names the bad one)."""
    explicit = {key: value for key, value in dataclasses.asdict(model_cfg.shape).items() if value is not None}
    if model_cfg.size is not None and model_cfg.size not in PRESETS:
        raise ConfigError(f"unknown model.size '{model_cfg.size}'; valid sizes: {', '.join(PRESETS)}")
    preset_architecture, preset = PRESETS.get(model_cfg.size, (None, None))
    architecture = model_cfg.architecture or preset_architecture
    _check_architecture(architecture)
    if preset is None:
        missing = [field.name for field in dataclasses.fields(Shape) if field.name not in explicit]
        if missing:
            raise ConfigError(
                f"a synthetic model without model.size needs every dimension: model.shape.{', model.shape.'.join(missing)} "
                f"missing (or choose a preset: model.size={'|'.join(PRESETS)})"
            )
        shape = Shape(**explicit)
    else:
        if "num_kv_heads" not in explicit and not _grouped_query(architecture):
            explicit["num_kv_heads"] = explicit.get("num_heads", preset.num_heads)  # the preset's GQA does not apply
        shape = dataclasses.replace(preset, **explicit)
    _check_shape(shape)
    model = SyntheticModel(architecture, shape, 0 if model_cfg.seed is None else model_cfg.seed, model_cfg.size)
    model.config()  # the architecture takes every dimension
    return model


def _grouped_query(architecture: str) -> bool:
    return hasattr(AutoConfig.for_model(architecture), "num_key_value_heads")


def _check_architecture(architecture: str) -> None:
    known = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    if architecture in known:
        return
    close = difflib.get_close_matches(architecture, known, n=3)
    suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"unknown model.architecture '{architecture}'{suggestion}. Valid: a causal-LM model type of transformers "
        f"{transformers.__version__} (tested with symprune: {', '.join(TESTED_ARCHITECTURES)}); all {len(known)}: "
        f"{', '.join(known)}"
    )


def _check_shape(shape: Shape) -> None:
    for field in dataclasses.fields(Shape):
        value = getattr(shape, field.name)
        if value < 1:
            raise ConfigError(f"model.shape.{field.name}={value} must be a positive integer")
    if shape.hidden_size % shape.num_heads:
        raise ConfigError(
            f"model.shape.num_heads={shape.num_heads} does not divide model.shape.hidden_size={shape.hidden_size}"
        )
    if shape.num_heads % shape.num_kv_heads:
        raise ConfigError(
            f"model.shape.num_kv_heads={shape.num_kv_heads} does not divide model.shape.num_heads={shape.num_heads}"
        )
