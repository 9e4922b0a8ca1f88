"""Saving the pruned model: ``save_pretrained`` (safetensors) plus the tokenizer (when the model has
one), loadable by plain transformers; optionally PyTorch's 2:4 semi-structured sparse format of every
pruned linear, which ``load_semi_structured`` turns back into sparse tensors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from symprune.errors import ConfigError
from symprune.files import check_free_space, check_writable, follow_umask
from symprune.model.structure import find_blocks, find_matrices

SEMI_STRUCTURED_FILE = "semi_structured_2of4.pt"
SAVE_MARGIN = 1.05  # tokenizer, config and safetensors headers on top of the weights


def check_save_target(directory: str | None, semi_structured: bool, method, weight_bytes: int) -> None:
    """Refuse before any work: overwriting a non-empty directory, a directory that cannot be written or
    a disk without room for the weights (``weight_bytes``), or a semi-structured export that cannot be made."""
    if semi_structured:
        if directory is None:
            raise ConfigError("save_semi_structured=true needs save_model=<directory>")
        contract = method.contract
        if (contract.block, contract.pruned_per_block) != (4, 2) or method.pattern.params.permutes:
            raise ConfigError("save_semi_structured needs the 2:4 pattern without channel permutation (sparsity=nm_2_4)")
        if not torch.cuda.is_available():
            raise ConfigError("save_semi_structured needs a CUDA device (PyTorch's semi-structured kernels); none is available")
    if directory is None:
        return
    if Path(directory).exists() and any(Path(directory).iterdir()):
        raise ConfigError(f"save_model directory {directory} exists and is not empty; choose a new one")
    check_writable(Path(directory), "save_model directory")
    check_free_space(Path(directory), int(weight_bytes * SAVE_MARGIN), "save_model directory")


def save_pruned(model: nn.Module, tokenizer, directory: str | Path, semi_structured: bool = False) -> Path:
    """Write everything to a temporary ``<directory>.partial-*`` first and rename it at the end, so a
    directory under the requested name is always complete. If another process completed the same
    directory meanwhile (a shared cache), its copy is kept."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    follow_umask(partial, directory=True)
    try:
        model.save_pretrained(partial, safe_serialization=True)
        if tokenizer is not None:  # synthetic models have none
            tokenizer.save_pretrained(partial)
        if semi_structured:
            torch.save(semi_structured_weights(model), partial / SEMI_STRUCTURED_FILE)
        for path in partial.rglob("*"):  # safetensors writes its files private (0600)
            follow_umask(path, directory=path.is_dir())
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
    """Every pruned matrix's weight (linears, experts' matrices) in PyTorch's 2:4 semi-structured format (CUDA; in the weights'
    dtype when it is float16 or bfloat16, else float16), as the inner tensors
    ``torch.sparse.SparseSemiStructuredTensor`` flattens to, keyed by module name."""
    from torch.sparse import to_sparse_semi_structured

    prefix, blocks = find_blocks(model)
    exported = {}
    for index, block in enumerate(blocks):
        for name, matrix in find_matrices(block).items():
            weight = matrix.weight.detach()
            dtype = weight.dtype if weight.dtype in (torch.float16, torch.bfloat16) else torch.float16
            sparse = to_sparse_semi_structured(weight.to("cuda", dtype))
            inner_names, context = sparse.__tensor_flatten__()
            exported[f"{prefix}.{index}.{name}"] = {
                "tensors": {inner: getattr(sparse, inner).cpu() for inner in inner_names},
                "context": context,
                "class": type(sparse).__name__,
            }
    return exported


def load_semi_structured(path: str | Path, device: torch.device | str = "cuda") -> dict[str, torch.Tensor]:
    """The semi-structured export (``semi_structured_weights``, as saved to ``SEMI_STRUCTURED_FILE``)
    as sparse tensors on ``device``, keyed by module name: ``sparse @ x.t()`` is the pruned layer's
    matmul with 2:4 kernels."""
    import torch.sparse

    exported = torch.load(path, weights_only=True)
    tensors = {}
    for name, entry in exported.items():
        cls = getattr(torch.sparse, entry["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, torch.sparse.SparseSemiStructuredTensor)):
            raise ValueError(f"{path}: '{entry['class']}' of {name} is not a semi-structured sparse tensor class")
        inner = {key: tensor.to(device) for key, tensor in entry["tensors"].items()}
        tensors[name] = cls.__tensor_unflatten__(inner, entry["context"], entry["context"][0], None)
    return tensors
