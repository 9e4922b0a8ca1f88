"""A run's identity: everything that decides its numbers, and ``config_hash``, its hash.

Two records with the same hash are interchangeable: resuming skips a job whose hash has a record,
``reuse_from`` copies such a record, and ``symprune-tables`` keeps one record per hash. The identity is

- the resolved config without what changes no number (tracking, progress bars, output paths, sweep
  handling, where the model and the offline files are, the placement: every placement computes the
  same masks), its score, sparsity and refine nodes replaced by the method's validated parameters
  (so ``2`` and ``2.0``, or ``group: auto`` and the group it resolves to, hash alike);
- the model's identity (a hub id and revision, or the SHA-256 of its local files, or a synthetic
  model's shape and seed), the resolved device type and the dtype;
- the machine's numerics (``symprune.provenance.numerics``): on the CPU torch's vector instruction set
  and thread count, on a GPU its name; the same config gives other floating-point sums, hence other
  masks at exact score ties, on another of either;
- where every split's text comes from (a hub dataset id, or a local file and its SHA-256): offline
  WikiText-2 calibration reads the validation split where the hub path reads train, and offline C4
  is a C4-like substitute, so they are other runs;
- the zero-shot tasks' definitions and files, and a ``mask_from`` mask's ``mask_sha256``.

A setting that a record written by an earlier version lacks counts as its schema default, so adding
an option whose default keeps the old behaviour does not orphan earlier records. What only might change
the numbers, the library versions and symprune's own code (commit and diff), is not hashed but compared:
a record made with others is reused only with ``reuse_accept_env=true`` (``environment_differences``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from functools import lru_cache
from typing import Any

from symprune.config import RunConfig
from symprune.prune.allocation import ALLOCATIONS
from symprune.prune.scores import ScoreOptions

# settings that change no number, or whose effect the identity records otherwise
NOT_IN_IDENTITY = (
    "logger", "progress", "paths", "resume", "reuse_from", "reuse_accept_env", "allow_dirty", "continue_on_error",
    "save_model", "save_semi_structured",
    "save_masks", "placement",
    "device",  # replaced by the resolved device type
    "mask_from",  # replaced by the mask's mask_sha256
    "score", "sparsity", "refine",  # replaced by the method's validated parameters
)
MODEL_LOCATION_KEYS = ("name", "pretrained", "package", "requirement", "gguf_file", "gguf_parts", "gguf_sha256",
                       "keep_files", "revision", "trust_remote_code")


def run_identity(config: dict[str, Any], method: dict[str, Any], model: dict[str, Any], device: str,
                 numerics: dict[str, Any], data: dict[str, Any], zeroshot: dict[str, Any] | None,
                 mask_from: str | None) -> dict[str, Any]:
    """The identity of a planned run (``config``: the resolved config; the rest: the plan's resolved parts)."""
    kept = {key: value for key, value in config.items() if key not in NOT_IN_IDENTITY}
    kept["model"] = {key: value for key, value in config["model"].items() if key not in MODEL_LOCATION_KEYS}
    return {"config": kept, "method": method, "model": model, "device": device, "numerics": numerics, "data": data,
            "zeroshot": zeroshot, "mask_from": mask_from}


# the record fields compared (not hashed) before a record of the same identity is reused
COMPARED_VERSIONS = ("symprune", "torch", "transformers", "datasets", "accelerate", "lm_eval", "gguf")


def environment_differences(record_versions: dict[str, Any], current_versions: dict[str, Any]) -> list[str]:
    """What differs between the software a record was made with and this one's (``symprune`` carries the
    commit and the diff of the code): ``name: recorded -> now`` each."""
    return [f"{name}: {record_versions.get(name)} -> {current_versions.get(name)}" for name in COMPARED_VERSIONS
            if record_versions.get(name) != current_versions.get(name)]


def config_hash(identity: dict[str, Any]) -> str:
    filled = _with_defaults(identity["config"], _schema_defaults(RunConfig))
    allocation = filled.get("allocation")
    if isinstance(allocation, dict) and allocation.get("name") in ALLOCATIONS.names():  # its options, as any setting's
        filled["allocation"] = _with_defaults(allocation, _schema_defaults(ALLOCATIONS.schema(allocation["name"])))
    config = {key: value for key, value in filled.items() if key not in NOT_IN_IDENTITY}
    method = identity.get("method")
    if isinstance(method, dict) and isinstance(method.get("score"), dict):  # score options newer than the record
        identity = {**identity, "method": {**method, "score": _with_defaults(method["score"], _schema_defaults(ScoreOptions))}}
    config["model"] = {key: value for key, value in filled["model"].items() if key not in MODEL_LOCATION_KEYS}
    complete = {**identity, "config": config}
    return hashlib.sha256(json.dumps(complete, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
