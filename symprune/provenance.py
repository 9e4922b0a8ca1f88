"""What produced a result: software versions and the git state of the symprune checkout."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

TRACKED_PACKAGES = ("symprune", "torch", "transformers", "datasets", "accelerate", "hydra-core", "lm_eval", "wandb", "gguf")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict[str, Any]:
    """The commit of the symprune checkout that ran, and whether it had uncommitted changes."""
    root = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tokens_sha256(ids: torch.Tensor) -> str:
    """SHA-256 of token ids as little-endian int64, row-major (any tool can compute the same bytes)."""
    return hashlib.sha256(ids.detach().to("cpu", torch.int64).contiguous().numpy().astype("<i8").tobytes()).hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict in sorted order of its keys: each key, then the tensor's raw
    bytes (its dtype's native layout), so two loads of the same weights agree whatever the placement."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
