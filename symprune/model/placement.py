"""Where weights and calibration activations live while a model is pruned and evaluated.

- default: the whole model and the activations on the compute device;
- ``offload_blocks``: the decoder blocks wait on the CPU and visit the compute device one
  at a time (pruning and evaluation); everything else (embeddings, final norm, LM head)
  stays on the compute device;
- ``activations``: the calibration activations (two buffers of samples × tokens × hidden)
  wait on the compute device, on the CPU, or in memory-mapped files on disk;
- ``device_map``: accelerate spreads the model over several devices at load time; each
  block then runs where it lives.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATION_HOMES = ("compute", "cpu", "disk")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Placement:
    compute: torch.device
    offload_blocks: bool = False
    activations: str = "compute"
    disk_dir: str | None = None
    device_map: str | None = None

    def block_device(self, block: nn.Module) -> torch.device:
        """Where a block runs: the compute device, or (device_map) wherever its weights live."""
        return self.compute if self.device_map is None else next(block.parameters()).device

    def activation_device(self) -> torch.device:
        return self.compute if self.activations == "compute" else CPU


def place_model(model: nn.Module, blocks_prefix: str, placement: Placement) -> None:
    """Move a freshly loaded (CPU) model where the placement wants it; no-op under a device_map."""
    if placement.device_map is not None:
        return
    if not placement.offload_blocks:
        model.to(placement.compute)
        return
    in_blocks = blocks_prefix + "."
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not name.startswith(in_blocks):
            tensor.data = tensor.data.to(placement.compute)


@contextmanager
def visiting(block: nn.Module, placement: Placement):
    """With offloaded blocks: the block on the compute device for the with-body, then back on the CPU."""
    if not placement.offload_blocks:
        yield
        return
    block.to(placement.compute)
    try:
        yield
    finally:
        block.to(CPU)


@contextmanager
def streamed(blocks: nn.ModuleList, placement: Placement):
    """For whole-model forwards (evaluation) with offloaded blocks: each block visits the compute
    device only during its own forward."""
    if not placement.offload_blocks:
        yield
        return
    def arrive(module, args):
        module.to(placement.compute)

    def leave(module, args, output):
        module.to(CPU)

    handles = []
    for block in blocks:
        handles += [block.register_forward_pre_hook(arrive), block.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class ActivationStore:
    """Allocates the calibration activation buffers where the placement keeps them."""

    def __init__(self, placement: Placement):
        self.placement = placement
        self._directory = None
        if placement.activations == "disk":
            self._directory = tempfile.TemporaryDirectory(prefix="symprune-activations-", dir=placement.disk_dir)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if self._directory is None:
            return torch.empty(shape, dtype=dtype, device=self.placement.activation_device())
        numel = 1
        for size in shape:
            numel *= size
        path = tempfile.NamedTemporaryFile(dir=self._directory.name, suffix=".bin", delete=False).name
        return torch.from_file(path, shared=True, size=numel, dtype=dtype).view(shape)

    def close(self) -> None:
        if self._directory is not None:
            self._directory.cleanup()

    def __enter__(self) -> "ActivationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def move(value, device: torch.device):
    """Tensors inside nested tuples / lists / dicts moved to ``device`` (block keyword arguments)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(move(item, device) for item in value)
    if isinstance(value, dict):
        return {key: move(item, device) for key, item in value.items()}
    return value

