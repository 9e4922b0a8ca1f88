"""Saving the pruned model: ``save_pretrained`` (safetensors) plus the tokenizer, loadable by plain
transformers; optionally PyTorch's 2:4 semi-structured sparse format of every pruned linear."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from symprune.models import find_blocks, find_linears, weight_matrix
from symprune.registry import ConfigError

SEMI_STRUCTURED_FILE = "semi_structured_2of4.pt"


def check_save_target(directory: str | None, semi_structured: bool, method) -> None:
    """Refuse before any work: overwriting a non-empty directory, or a semi-structured export that cannot be made."""
    if semi_structured:
        if directory is None:
            raise ConfigError("save_semi_structured=true needs save_model=<directory>")
        params = method.pattern.params
        if method.pattern.name != "nm" or (params.n, params.m) != (2, 4) or params.permutation != "none":
            raise ConfigError("save_semi_structured needs the 2:4 pattern without channel permutation (sparsity=nm_2_4)")
        if not torch.cuda.is_available():
            raise ConfigError("save_semi_structured needs a CUDA device (PyTorch's semi-structured kernels); none is available")
    if directory is not None and Path(directory).exists() and any(Path(directory).iterdir()):
        raise ConfigError(f"save_model directory {directory} exists and is not empty; choose a new one")


def save_pruned(model: nn.Module, tokenizer, directory: str | Path, semi_structured: bool = False) -> Path:
    """Write everything to a temporary ``<directory>.partial-*`` first and rename it at the end, so a
    directory under the requested name is always complete. If another process completed the same
    directory meanwhile (a shared cache), its copy is kept."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        if semi_structured:
            torch.save(semi_structured_weights(model), partial / SEMI_STRUCTURED_FILE)
        if target.exists() and not any(target.iterdir()):
            target.rmdir()  # an empty directory (checked before the run)
        partial.rename(target)
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def semi_structured_weights(model: nn.Module) -> dict[str, dict]:
    """Every pruned linear's weight in PyTorch's 2:4 semi-structured format (fp16, CUDA), as the
    inner tensors ``torch.sparse.SparseSemiStructuredTensor`` flattens to, keyed by module name."""
    from torch.sparse import to_sparse_semi_structured

    prefix, blocks = find_blocks(model)
    exported = {}
    for index, block in enumerate(blocks):
        for name, layer in find_linears(block).items():
            sparse = to_sparse_semi_structured(weight_matrix(layer).detach().to("cuda", torch.float16))
            inner_names, context = sparse.__tensor_flatten__()
            exported[f"{prefix}.{index}.{name}"] = {
                "tensors": {inner: getattr(sparse, inner).cpu() for inner in inner_names},
                "context": context,
                "class": type(sparse).__name__,
            }
    return exported
