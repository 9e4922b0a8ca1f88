"""Resumable sweeps: a job whose run identity already has a record in the sweep is skipped, and a record
of the same identity in an earlier sweep (``reuse_from``) can stand in for a new run. Either only when the
record was made with the same library versions and symprune code, or when the user accepts the difference
(``reuse_accept_env=true``): otherwise the job is refused before any work, naming what differs."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from symprune.model.masks import MASKS_NAME
from symprune.errors import ConfigError
from symprune.run.identity import config_hash, environment_differences
from symprune.run.record import RECORD_NAME, RunRecord

log = logging.getLogger("symprune")
_reported_without_identity: set[str] = set()


def find_records(directory: str | Path, digest: str) -> list[Path]:
    """The complete run records of the same identity anywhere under the directory. Records written before
    run identities existed (schema 1) cannot be matched: they are counted and reported, never reused."""
    without_identity, found = 0, []
    for path in sorted(Path(directory).rglob(RECORD_NAME)):
        try:
            identity = json.loads(path.read_text()).get("identity")
        except (OSError, json.JSONDecodeError):
            continue
        if identity is None:
            without_identity += 1
        elif config_hash(identity) == digest:
            found.append(path)
    if without_identity and str(directory) not in _reported_without_identity:
        _reported_without_identity.add(str(directory))
        log.info("%d run records under %s were written before run identities (by an earlier version of symprune): "
                 "what produced them is not known exactly, so they are not reused", without_identity, directory)
    return found


@dataclass(frozen=True)
class Found:
    path: Path
    in_sweep: bool  # the sweep's own record (skip the job) rather than an earlier sweep's (copy it)


def reusable_record(sweep_dir: str | Path, reuse_from: Sequence[str], digest: str, versions: dict[str, Any],
                    accept_env: bool) -> Found | None:
    """The record that stands for a job: the sweep's own, else one of ``reuse_from``'s, of the same identity
    and made with the same software (``versions``: this run's), or with other software when ``accept_env``.
    A record of the same identity made with other software, not accepted, is a ``ConfigError``."""
    places = [(sweep_dir, True), *((directory, False) for directory in reuse_from)]
    candidates = [Found(path, in_sweep) for directory, in_sweep in places for path in find_records(directory, digest)]
    differing = []
    for candidate in candidates:
        differences = environment_differences(RunRecord.read(candidate.path).versions, versions)
        if not differences or accept_env:
            return candidate
        differing.append((candidate.path, differences))
    if differing:
        path, differences = differing[0]
        raise ConfigError(
            f"the run record of this config at {path} was made with other software ({'; '.join(differences)}); "
            "its numbers may differ from this version's. Set reuse_accept_env=true to reuse it anyway, or rerun: "
            "move that record away (or resume=false / another sweep directory for the sweep's own records)")
    return None


def reused_record(earlier: Path, job: dict[str, Any], run_dir: str | Path) -> RunRecord:
    """The earlier run's record as this job's: its numbers (and masks, copied beside it); this job's config,
    choices, overrides, logger and identity (``job``)."""
    data = RunRecord.read(earlier)
    if data.masks_file and (earlier.parent / data.masks_file).is_file():
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier.parent / data.masks_file, Path(run_dir) / MASKS_NAME)
    return dataclasses.replace(data, **job, reused_from=str(earlier))
