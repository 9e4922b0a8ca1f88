"""Run records as read by the report layer: from run directories or from W&B runs, one per config."""

from __future__ import annotations

import copy
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from symprune.errors import ConfigError
from symprune.run.record import RECORD_NAME, RunRecord


@dataclass(frozen=True)
class Record:
    source: str  # a path, or a W&B run path
    data: dict[str, Any]

    def value(self, key: str) -> Any:
        """A group choice, else a dotted path into the config, else into the whole record."""
        if key.startswith("overrides:"):
            prefix = key.removeprefix("overrides:")
            return " ".join(o for o in self.data.get("overrides", []) if o.startswith(prefix))
        if key in self.data.get("choices", {}):
            return self.data["choices"][key]
        for root in (self.data.get("config", {}), self.data):
            found = dotted(root, key)
            if found is not None:
                return found
        return None

    def known_keys(self) -> list[str]:
        """The keys ``value`` can read: group choices and dotted paths into the config (suggestions for typos)."""
        return [*self.data.get("choices", {}), *_paths(self.data.get("config", {}))]

    def known_metrics(self) -> list[str]:
        return _paths(self.data.get("metrics", {}), "metrics.")

    def label(self, keys: Sequence[str]) -> str:
        return ", ".join(str(value) for value in map(self.value, keys) if value not in (None, ""))

    @property
    def finished(self) -> float:
        return float(self.data.get("finished", 0.0))

    @property
    def origin(self) -> Origin:
        """The code state and the environment that produced the record's numbers."""
        return Origin(code_state(self.data.get("git") or {}), environment(self.data))

    @property
    def calibration_seed(self) -> Any:
        root = self.data["identity"] if isinstance(self.data.get("identity"), dict) else self.data
        return dotted(root, "config.calibration.seed")

    def seedless_identity(self) -> str | None:
        """The record's identity without the calibration seed, as canonical JSON: records where it is equal
        differ in their calibration samples only. None without an identity (records of earlier versions,
        W&B runs): such a record is compared with no other."""
        identity = self.data.get("identity")
        if not isinstance(identity, dict):
            return None
        identity = copy.deepcopy(identity)
        calibration = dotted(identity, "config.calibration")
        if isinstance(calibration, dict):
            calibration.pop("seed", None)
        for split, described in (identity.get("data") or {}).items():
            if str(split).startswith("calibration"):
                _drop_seeds(described)
        return json.dumps(identity, sort_keys=True, default=str)

    @property
    def synthetic(self) -> bool:
        """A run on a synthetic model (random weights: speed and memory only), by its record or its config."""
        model = self.data.get("config", {}).get("model", {})
        return bool(dotted(self.data, "model.synthetic") or model.get("size") or model.get("architecture"))


def _drop_seeds(node: Any) -> None:
    """Remove every ``seed`` key below a calibration split's description (where the samples were drawn)."""
    if isinstance(node, dict):
        node.pop("seed", None)
        for value in node.values():
            _drop_seeds(value)
    elif isinstance(node, list):
        for value in node:
            _drop_seeds(value)


@dataclass(frozen=True)
class Origin:
    """Where a number comes from: the code state (commit, clean or modified, the modification's hash) and
    the environment (device, CPU instruction set or GPU, dtype, threads, torch)."""

    code: str
    environment: str

    def __str__(self) -> str:
        return f"{self.code}; {self.environment}"


def code_state(git: dict[str, Any]) -> str:
    """``commit <12 hex> clean``, ``... modified (diff <8 hex>)``; what a record does not say is "unknown"."""
    commit = git.get("commit")
    if not commit:
        return "commit unknown"
    text = f"commit {commit[:12]}"
    dirty = git.get("dirty")
    if dirty is None:
        return f"{text} (clean or modified: unknown)"
    if not dirty:
        return f"{text} clean"
    diff = git.get("diff_sha256")
    return f"{text} modified (diff {diff[:8] if diff else 'unknown'})"


def environment(data: dict[str, Any]) -> str:
    """``cpu AVX512, float32, 2 threads, torch 2.5.1`` or ``cuda <GPU name>, ...``; records written before the
    environment was recorded give the device and dtype of their model, the rest "unknown"."""
    env = data.get("environment") or {}
    model = data.get("model") or {}
    device = str(env.get("device") or model.get("device") or "").split(":")[0]
    if not device:
        device = "device unknown"
    elif device == "cuda":
        device += f" {env.get('device_name') or '(GPU unknown)'}"
    else:
        device += f" {env.get('cpu_capability') or '(capability unknown)'}"
    dtype = env.get("dtype") or model.get("dtype") or "dtype unknown"
    threads = env.get("threads")
    threads = f"{threads} thread{'' if threads == 1 else 's'}" if isinstance(threads, int) else "threads unknown"
    torch = (data.get("versions") or {}).get("torch") or "unknown"
    return f"{device}, {dtype}, {threads}, torch {torch}"


@dataclass(frozen=True)
class Aggregate:
    """The value of a table cell or a plotted point: the mean over the records that differ only in their
    calibration seed (one record: its value)."""

    mean: float
    std: float | None  # sample standard deviation (ddof=1); None for one record
    records: tuple[Record, ...]

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def origins(self) -> frozenset[Origin]:
        return frozenset(record.origin for record in self.records)


def combine(claims: Sequence[tuple[Record, float]]) -> Aggregate:
    """One value from the (record, value) pairs that claim a place, oldest first: the newest record's, averaged
    with those of the records that differ from it only in ``calibration.seed`` (the newest of each seed)."""
    newest = claims[-1][0]
    identity = newest.seedless_identity()
    if identity is None:
        group = [claims[-1]]
    else:
        by_seed = {}
        for record, value in claims:
            if record.seedless_identity() == identity:
                by_seed[json.dumps(record.calibration_seed, default=str)] = (record, value)
        group = list(by_seed.values())
    values = [float(value) for _, value in group]
    return Aggregate(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                     tuple(record for record, _ in group))


class MixedRecordsError(ConfigError):
    """Records of synthetic models (random weights) and of real ones in one table."""


def check_not_mixed(records: Sequence[Record]) -> None:
    """Refuse to put synthetic-model records (random weights: their quality numbers mean nothing) next
    to real-model ones."""
    synthetic = [record.source for record in records if record.synthetic]
    real = [record.source for record in records if not record.synthetic]
    if synthetic and real:
        raise MixedRecordsError(
            f"{len(synthetic)} records of synthetic models (random weights, for speed and memory only) and "
            f"{len(real)} of real models cannot share a table; select one kind of directory. "
            f"Synthetic: {', '.join(synthetic)}. Real: {', '.join(real)}"
        )


def _paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in node.items():
        paths.append(prefix + str(key))
        if isinstance(value, dict):
            paths += _paths(value, f"{prefix}{key}.")
    return paths


def dotted(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_exported(directory: str | Path) -> list[Record]:
    """The records ``symprune-tables export`` wrote (``*.jsonl``), each named ``<file>:<line>``."""
    records = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            data = json.loads(line)
            if "generated_by" not in data:
                records.append(Record(f"{path.name}:{number}", RunRecord.from_json(data).to_json()))
    return records


def find_records(directories: Iterable[str | Path]) -> list[Record]:
    """Every run record under the directories, of any schema version, read as today's (``RunRecord``)."""
    records = []
    for directory in directories:
        for path in sorted(Path(directory).rglob(RECORD_NAME)):
            records.append(Record(str(path), RunRecord.read(path).to_json()))
    return records


def wandb_records(path: str, api=None) -> list[Record]:
    """Finished W&B runs of ``ENTITY/PROJECT`` as records: the run config symprune logs carries the
    resolved config (under ``config``; at the top level in runs of earlier versions) plus ``method``,
    ``choices``, ``overrides`` and ``config_hash``; metrics come from the summary."""
    if api is None:
        import wandb

        api = wandb.Api()
    records = []
    for run in api.runs(path, filters={"state": "finished"}):
        config = dict(run.config)
        extra = {key: config.pop(key) for key in ("choices", "overrides", "config_hash") if key in config}
        if isinstance(config.get("config"), dict):
            extra["method"] = config.get("method")
            config = config["config"]
        metrics: dict[str, Any] = {}
        for key, value in dict(run.summary).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith("_"):
                node = metrics
                *parents, leaf = key.split("/")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        timings = metrics.pop("time", {})
        finished = getattr(run, "summary", {}).get("_timestamp", 0.0)
        data = {"config": config, **extra, "metrics": metrics, "timings": timings, "finished": finished}
        records.append(Record(f"wandb:{path}/{run.id}", data))
    return records


def newest_per_config(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """One record per config hash (the newest), and a note for every config that had several."""
    by_hash: dict[str, list[Record]] = {}
    for record in records:
        by_hash.setdefault(record.data.get("config_hash") or record.source, []).append(record)
    kept, notes = [], []
    for digest, group in by_hash.items():
        group = sorted(group, key=lambda r: r.finished)
        kept.append(group[-1])
        if len(group) > 1:
            notes.append(f"{len(group)} records of one config ({digest}): using the newest, {group[-1].source}")
    return kept, notes


def numeric_order(values: list[Any]) -> list[Any]:
    """Numbers (or labels that read as numbers) in increasing order, ∞ last; anything else as given."""
    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    if values and all(number(value) is not None for value in values):
        return sorted(values, key=lambda value: (math.isinf(float(value)), float(value)))
    return values
