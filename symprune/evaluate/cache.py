"""Results of the dense model, cached across runs: a sweep evaluates the dense model once per model and
protocol, and every later run with the same key reads the stored numbers.

An entry is a JSON file under ``<paths.cache>/<kind>/`` named by the hash of its key, the key stored
with the result; the key holds everything that determines the result (the model's identity, dtype,
device type, the evaluated data's identity, the protocol's settings, the software versions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symprune.files import write_json_atomic


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    key: dict[str, Any]

    def read(self) -> dict[str, Any] | None:
        """The stored result, or None (no entry, or one whose key differs: a hash collision is not a hit)."""
        if not self.path.is_file():
            return None
        stored = json.loads(self.path.read_text())
        return stored["result"] if stored["key"] == self.key else None

    def write(self, result: dict[str, Any]) -> None:
        """Atomically: the jobs of a parallel sweep may write the same entry."""
        write_json_atomic(self.path, {"key": self.key, "result": result})


def cache_entry(directory: str | Path, kind: str, key: dict[str, Any]) -> CacheEntry:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return CacheEntry(Path(directory).expanduser().resolve() / kind / f"{digest[:24]}.json", key)
