"""Run records as read by the report layer: from run directories or from W&B runs, one per config."""

from __future__ import annotations

import json
import math
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
    def synthetic(self) -> bool:
        """A run on a synthetic model (random weights: speed and memory only), by its record or its config."""
        model = self.data.get("config", {}).get("model", {})
        return bool(dotted(self.data, "model.synthetic") or model.get("size") or model.get("architecture"))


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
