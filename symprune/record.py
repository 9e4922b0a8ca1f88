"""The run record: ``results.json`` in the run directory, written atomically at the end of a run.

A run that fails never writes it, so a ``results.json`` always stands for a
complete run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

RECORD_NAME = "results.json"
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
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically (see ``write_json_atomic``)."""
    target = Path(run_dir) / RECORD_NAME
    write_json_atomic(target, record)
    return target


def write_json_atomic(target: Path, data: Any) -> None:
    """A temporary file in the same directory, then a rename: readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".json.tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=False, default=str)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
