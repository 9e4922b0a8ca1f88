"""The run record: ``results.json`` in the run directory, written atomically at the end of a run.

A run that fails never writes it, so a ``results.json`` always stands for a complete run. ``RunRecord``
is the one place a record is built and read: the command writes it, resuming, ``symprune-tables``
and the plots read it back (records of every earlier version included, upgraded on reading).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symprune.errors import ConfigError
from symprune.files import write_json_atomic

RECORD_NAME = "results.json"
# 1: records written before run identities, provenance and masks (no schema_version key); 2: before the
# machine's numerics in the identity, the environment and the code's diff hash
SCHEMA_VERSION = 3


@dataclass
class RunRecord:
    """Everything that produced a run's numbers, and the numbers (docs/records.md, "The run record", has a field table)."""

    config: dict[str, Any]  # the resolved run config
    choices: dict[str, str]  # the option chosen in every config group (Hydra's choices)
    overrides: list[str]  # the command line's overrides of this job
    config_hash: str  # the hash of `identity`: records with the same hash are interchangeable
    identity: dict[str, Any] | None  # what decides the numbers (symprune/run/identity.py); None: schema 1
    method: dict[str, Any]  # score, sparsity pattern and refinement with every resolved parameter
    model: dict[str, Any]  # source, where it was loaded from, dtype, device, placement, weights' SHA-256
    data: dict[str, Any]  # per split: where the text came from, SHA-256 of its tokens, counts, seed, BOS
    metrics: dict[str, Any]  # perplexity (dense and pruned) per set, sparsity, zero-shot scores
    layers: list[dict[str, Any]]  # per pruned linear: name, shape, zeros, sparsity, the method's numbers
    timings: dict[str, float]  # seconds per phase
    started: float
    finished: float
    versions: dict[str, str | None]  # Python and the libraries that change numbers
    git: dict[str, Any]  # the checkout's commit, whether its code differed from it and the difference's hash
    environment: dict[str, Any] = field(default_factory=dict)  # device, dtype, threads, CPU capability, BLAS
    logger: dict[str, Any] = field(default_factory=dict)  # tracking backend, W&B group and run name
    mask_sha256: str | None = None  # symprune/model/masks.py defines it
    masks_file: str | None = None  # the masks' file name beside results.json (None: save_masks=false)
    caches: dict[str, Any] = field(default_factory=dict)  # what came from a cache (dense results, spectra), where
    saved_model: str | None = None
    save_error: str | None = None  # saving the model failed after the results were measured
    reused_from: str | None = None  # a copy of an earlier run's record (reuse_from), with this job's config
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """A record of any schema version as today's: fields a version did not have are left empty."""
        known = {item.name for item in dataclasses.fields(cls)}
        upgraded = {"identity": None, "choices": {}, "overrides": [], "config_hash": "", "layers": [], "timings": {},
                    "started": 0.0, "finished": 0.0, "versions": {}, "git": {}, "model": {}, "data": {}, "method": {},
                    "metrics": {}, "schema_version": 1}
        upgraded |= {key: value for key, value in data.items() if key in known}
        if upgraded["schema_version"] == 1:  # schema 1 kept the data origins as strings and dense caches in zeroshot
            upgraded["data"] = {key: value if isinstance(value, dict) else {"origin": value}
                                for key, value in upgraded["data"].items()}
            if isinstance(data.get("zeroshot"), dict):
                upgraded["caches"] = {"zeroshot_dense": data["zeroshot"]}
        return cls(**upgraded)

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_json(json.loads(Path(path).read_text()))

    def write(self, run_dir: str | Path) -> Path:
        """``results.json`` atomically (a temporary file, then a rename); never over another identity's record."""
        check_no_other_record(run_dir, self.config_hash)
        target = Path(run_dir) / RECORD_NAME
        write_json_atomic(target, self.to_json())
        return target


class OtherRecordError(ConfigError):
    """A run directory holds the record of another config."""


def check_no_other_record(run_dir: str | Path, digest: str) -> None:
    """Refuse a run directory whose ``results.json`` belongs to another identity: writing there would replace
    that config's record and masks with this one's."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text()).get("config_hash")
    except (OSError, json.JSONDecodeError):
        recorded = None
    if recorded != digest:
        raise OtherRecordError(
            f"{path} is the record of another config (config_hash {recorded}, this run's {digest}); it would be "
            "overwritten: choose another run directory (hydra.run.dir=...) or move that one away")
