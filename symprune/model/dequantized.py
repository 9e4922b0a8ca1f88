"""A float copy of a GGUF model, cached on disk: dequantising GGUF takes ~15 s per load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import transformers

from symprune.model.loading import ModelSource, load_model, load_tokenizer
from symprune.model.saving import save_pruned


def dequantized_copy(source: ModelSource, dtype: str, cache_dir: str | None) -> ModelSource:
    """Where to load a GGUF model from quickly: dequantising GGUF takes ~15 s per load, so the first
    run saves the float model and its tokenizer under ``<cache_dir>/dequantized/`` and later runs
    load that copy (the same weights and the same tokens). Other sources are returned unchanged."""
    if not (source.gguf_file and source.local and cache_dir):
        return source
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{transformers.__version__}"
    target = Path(cache_dir) / "dequantized" / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (target / "config.json").exists():
        save_pruned(load_model(source, dtype), load_tokenizer(source), target)
    return ModelSource(str(target), None, True, trust_remote_code=source.trust_remote_code)
