"""What produced a result: software versions, the git state of the symprune checkout, and the machine's
numerics (device, threads, vector instructions)."""

from __future__ import annotations

import hashlib
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

TRACKED_PACKAGES = ("symprune", "torch", "transformers", "datasets", "accelerate", "hydra-core", "lm_eval", "wandb", "gguf")


CODE_PATHS = ("symprune", "conf", "hydra_plugins")  # what decides a run's numbers in the checkout


def software_versions() -> dict[str, str | None]:
    """Python and the tracked packages; symprune's own version carries the commit (and the diff) it ran from."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["symprune"] = symprune_version(versions["symprune"], git_state())
    return versions


def symprune_version(release: str | None, state: dict[str, Any]) -> str | None:
    """The release with the commit as a local version label (PEP 440): ``0.1.0+g0123456789ab``, and
    ``.d<diff hash>`` when symprune/, conf/ or hydra_plugins/ differed from that commit."""
    if release is None or not state.get("commit"):
        return release
    label = f"g{state['commit'][:12]}"
    if state.get("dirty"):
        label += f".d{(state.get('diff_sha256') or 'unknown')[:8]}"
    return f"{release}+{label}"


def _git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


_ROOT = Path(__file__).resolve().parents[1]


def git_state(root: Path = _ROOT) -> dict[str, Any]:
    """The commit of the checkout that ran; ``dirty``: whether its code or configs (``CODE_PATHS``, untracked
    files there included) differed from that commit, and ``diff_sha256``, a hash of that difference (the diff
    and every untracked file's path and bytes), so two modified trees can be told apart. All None outside a
    git checkout (an installed wheel)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None or not (root / "symprune").is_dir():
        return {"commit": None, "dirty": None, "diff_sha256": None}
    diff = _git(root, "diff", "HEAD", "--binary", "--", *CODE_PATHS) or b""
    untracked = (_git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS) or b"").split(b"\0")
    digest = hashlib.sha256(diff)
    for name in sorted(filter(None, untracked)):
        digest.update(name + b"\0")
        path = root / name.decode()
        digest.update(path.read_bytes() if path.is_file() else b"")
    dirty = bool(diff) or any(untracked)
    return {"commit": commit.decode().strip(), "dirty": dirty, "diff_sha256": digest.hexdigest() if dirty else None}


def numerics(device: torch.device) -> dict[str, Any]:
    """What besides the config decides a run's floating-point results on this machine: on the CPU torch's
    vector instruction set and its thread count (reductions and matrix products split their work by both),
    on a GPU the device's name. Part of the run identity."""
    if device.type == "cuda":
        return {"gpu": torch.cuda.get_device_name(device)}
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def environment(device: torch.device, dtype: str) -> dict[str, Any]:
    """Where a run ran, for its record: device, dtype, threads, the CPU's vector instructions and its model,
    and the BLAS torch was built with."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\S+)", config)
    return {"device": device.type, "device_name": _device_name(device), "dtype": dtype,
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": blas.group(1).rstrip(",") if blas else None}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
