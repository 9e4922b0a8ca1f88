"""Resumable sweeps: a job whose resolved config already has a run record in the sweep is skipped,
a job claims its config while it runs, so two jobs of one sweep never produce the same record, and
a record of the same config in an earlier sweep (``reuse_from``) can stand in for a new run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import typing
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from symprune.config import RunConfig
from symprune.record import RECORD_NAME

# settings that do not change a run's results: tracking, progress bars, where the offline files are
VOLATILE_KEYS = ("logger", "progress", "paths", "resume", "reuse_from")
CLAIMS_DIR = ".claims"


def config_hash(config: dict[str, Any], method: dict[str, Any]) -> str:
    """Hash of what determines a run's results: the resolved config, its score, sparsity and refine
    nodes replaced by the method's validated parameters (so 2 and 2.0, or group auto and the group
    it resolves to, hash alike), without the settings that change nothing (VOLATILE_KEYS). A setting
    that a record written by an earlier version lacks counts as its schema default, so adding an
    option (with a default that keeps the old behaviour) does not orphan earlier records."""
    complete = _with_defaults(config, _schema_defaults(RunConfig))
    kept = {key: value for key, value in {**complete, **method}.items() if key not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _schema_defaults(schema: type) -> dict[str, Any]:
    """Every setting of a structured config that has a default, nested like the config (shared: read only)."""
    defaults: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[field.name]):
            defaults[field.name] = _schema_defaults(hints[field.name])
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
            defaults[field.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        elif field.default is not dataclasses.MISSING and field.default != "???":
            defaults[field.name] = field.default
    return defaults


def _with_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    merged = dict(config)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(merged[key], dict) and isinstance(default, dict):
            merged[key] = _with_defaults(merged[key], default)
    return merged


def find_record(directory: str | Path, digest: str) -> Path | None:
    """A complete run record of the same config anywhere under the directory."""
    for path in sorted(Path(directory).rglob(RECORD_NAME)):
        try:
            data = json.loads(path.read_text())
            if config_hash(data["config"], data["method"]) == digest:
                return path
        except (OSError, KeyError, json.JSONDecodeError):
            continue
    return None


def reused_record(earlier: Path, record: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The earlier run's record as this job's: its numbers; this job's config choices, overrides and
    config hash (the earlier record's may come from a version that hashed differently)."""
    data = json.loads(earlier.read_text())
    return {**data, "choices": record["choices"], "overrides": overrides, "config_hash": record["config_hash"],
            "reused_from": str(earlier)}


def _holder_alive(claim: Path) -> bool:
    try:
        host, pid = claim.read_text().split()
    except (OSError, ValueError):
        return False  # a claim being written, or garbage: treat as stale
    if host != socket.gethostname():
        return True  # another machine's job (e.g. SLURM): trust it; delete .claims/ after a crashed cluster job
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def claim(sweep_dir: str | Path, digest: str) -> Iterator[bool]:
    """Yields True while this process exclusively holds the config, False if a live job holds it.
    A claim left by a killed job on this machine is taken over."""
    claims = Path(sweep_dir) / CLAIMS_DIR
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / digest
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder_alive(path):
                yield False
                return
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(f"{socket.gethostname()} {os.getpid()}")
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False
