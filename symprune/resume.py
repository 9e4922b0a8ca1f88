"""Resumable sweeps: a job whose resolved config already has a run record in the sweep is skipped,
and a job claims its config while it runs, so two jobs of one sweep never produce the same record."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from symprune.record import RECORD_NAME

# settings that do not change a run's results: tracking, progress bars, where the offline files are
VOLATILE_KEYS = ("logger", "progress", "paths", "resume")
CLAIMS_DIR = ".claims"


def config_hash(config: dict[str, Any]) -> str:
    kept = {key: value for key, value in config.items() if key not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_record(sweep_dir: str | Path, digest: str) -> Path | None:
    """A complete run record of the same config anywhere in the sweep directory."""
    for path in sorted(Path(sweep_dir).rglob(RECORD_NAME)):
        try:
            if json.loads(path.read_text()).get("config_hash") == digest:
                return path
        except (OSError, json.JSONDecodeError):
            continue
    return None


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
