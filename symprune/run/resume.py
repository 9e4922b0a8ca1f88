"""Resumable sweeps: a job whose run identity already has a record in the sweep is skipped, a job
claims its config while it runs, so two jobs of one sweep never produce the same record, and a record
of the same identity in an earlier sweep (``reuse_from``) can stand in for a new run."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from symprune.model.masks import MASKS_NAME
from symprune.run.identity import config_hash
from symprune.run.record import RECORD_NAME, RunRecord

log = logging.getLogger("symprune")
CLAIMS_DIR = ".claims"
_reported_without_identity: set[str] = set()


def find_record(directory: str | Path, digest: str) -> Path | None:
    """A complete run record of the same identity anywhere under the directory. Records written before
    run identities existed (schema 1) cannot be matched: they are counted and reported, never reused."""
    without_identity = 0
    for path in sorted(Path(directory).rglob(RECORD_NAME)):
        try:
            identity = json.loads(path.read_text()).get("identity")
        except (OSError, json.JSONDecodeError):
            continue
        if identity is None:
            without_identity += 1
        elif config_hash(identity) == digest:
            return path
    if without_identity and str(directory) not in _reported_without_identity:
        _reported_without_identity.add(str(directory))
        log.info("%d run records under %s were written before run identities (by an earlier version of symprune): "
                 "what produced them is not known exactly, so they are not reused", without_identity, directory)
    return None


def reused_record(earlier: Path, job: dict[str, Any], run_dir: str | Path) -> RunRecord:
    """The earlier run's record as this job's: its numbers (and masks, copied beside it); this job's config,
    choices, overrides, logger and identity (``job``)."""
    data = RunRecord.read(earlier)
    if data.masks_file and (earlier.parent / data.masks_file).is_file():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier.parent / data.masks_file, Path(run_dir) / MASKS_NAME)
    return dataclasses.replace(data, **job, reused_from=str(earlier))


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
