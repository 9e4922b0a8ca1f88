"""Masks as artifacts: ``masks.safetensors`` holds one bit-packed boolean mask per pruned linear layer
(True where the final weight is zero), keyed by module name, and ``mask_sha256`` identifies a set of masks.

``mask_sha256`` is defined so that any tool can compute the same bytes: the SHA-256 of the
concatenation, over the pruned linear layers in sorted order of their module names (Python's
``sorted``, e.g. ``model.layers.0.mlp.down_proj`` before ``model.layers.10.mlp.down_proj``), of each
layer's ``weight == 0`` as a row-major array of one byte per entry (0 or 1), in the (d_out, d_in)
layout of ``y = x Wᵀ``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from symprune.errors import ConfigError
from symprune.files import follow_umask

MASKS_NAME = "masks.safetensors"
FORMAT = "symprune-masks"
FORMAT_VERSION = "1"


@dataclass
class MaskSet:
    """Bit-packed masks of a model's pruned linear layers (8 entries per byte, numpy's big bit order)."""

    packed: dict[str, torch.Tensor] = field(default_factory=dict)  # module name -> uint8 (ceil(numel / 8),)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # module name -> (d_out, d_in)

    def add(self, name: str, mask: torch.Tensor) -> None:
        flat = mask.detach().to("cpu", torch.bool).contiguous().numpy().reshape(-1)
        self.packed[name] = torch.from_numpy(np.packbits(flat))
        self.shapes[name] = tuple(mask.shape)

    def mask(self, name: str) -> torch.Tensor:
        """The layer's boolean mask, (d_out, d_in)."""
        d_out, d_in = self.shapes[name]
        bits = np.unpackbits(self.packed[name].numpy(), count=d_out * d_in)
        return torch.from_numpy(bits.astype(bool)).reshape(d_out, d_in)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.shapes):
            digest.update(self.mask(name).numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: Path) -> Path:
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "shapes": json.dumps(self.shapes),
                    "mask_sha256": self.sha256()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        save_file(self.packed, str(partial), metadata=metadata)
        follow_umask(partial)
        partial.replace(path)
        return path


def masks_path(location: str | Path) -> Path:
    """A mask file, or the one in a run directory."""
    location = Path(location).expanduser()
    return location / MASKS_NAME if location.is_dir() else location


def read_shapes(location: str | Path) -> dict[str, tuple[int, int]]:
    """The layer names and shapes of a mask file (its header only), with a clear error for anything else."""
    return {name: tuple(shape) for name, shape in json.loads(_metadata(location)["shapes"]).items()}


def read_mask_sha256(location: str | Path) -> str:
    return _metadata(location)["mask_sha256"]


def _metadata(location: str | Path) -> dict[str, str]:
    path = masks_path(location)
    if not path.is_file():
        raise ConfigError(f"mask file {path} does not exist (expected a run directory holding {MASKS_NAME}, or such a file)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"mask file {path} is not a safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"{path} is a safetensors file but not a symprune mask file (metadata format={metadata.get('format')!r})")
    return metadata


def load_masks(location: str | Path) -> MaskSet:
    path = masks_path(location)
    shapes = read_shapes(path)
    with safe_open(str(path), framework="pt") as handle:
        packed = {name: handle.get_tensor(name) for name in shapes}
    return MaskSet(packed, shapes)


def check_layers(location: str | Path, expected: dict[str, tuple[int, int]]) -> None:
    """A saved mask fits a model when it has exactly the model's pruned layers, with the same shapes."""
    shapes = read_shapes(location)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(name for name in set(shapes) & set(expected) if tuple(shapes[name]) != tuple(expected[name]))
    problems = []
    if missing:
        problems.append(f"no mask for {len(missing)} of the model's layers (e.g. {missing[0]})")
    if extra:
        problems.append(f"masks for {len(extra)} layers the model does not have (e.g. {extra[0]})")
    if wrong:
        problems.append(f"other shapes for {len(wrong)} layers (e.g. {wrong[0]}: mask {tuple(shapes[wrong[0]])}, "
                        f"model {tuple(expected[wrong[0]])})")
    if problems:
        raise ConfigError(f"mask_from={location} does not fit this model: {'; '.join(problems)}")
