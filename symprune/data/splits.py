"""Where a split's text comes from: the Hugging Face Hub, or a file under the offline assets directory."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from symprune.errors import ConfigError
from symprune.files import file_sha256

ASSETS_ENV = "SYMPRUNE_ASSETS"


@dataclass(frozen=True)
class Split:
    """One split of a corpus as a list of texts, from the hub or from a file under the assets directory."""

    hub: Callable[[], list[str]]
    hub_name: str
    hub_id: str  # the hub dataset, its config or data files, and the split: what identifies the text there
    local_file: str
    read_local: Callable[[Path], list[str]]
    local_note: str = ""

    def identity(self, assets: str | None) -> dict[str, str]:
        """What identifies the text the run reads: the hub id (unpinned: the hub's current revision), or the
        local file's name and SHA-256."""
        path = self.locate(assets)
        if path is None:
            return {"hub": self.hub_id}
        return {"file": self.local_file, "sha256": file_sha256(path)}

    def locate(self, assets: str | None) -> Path | None:
        """The local file when offline assets are configured (error if it is missing), else None (hub)."""
        if not assets:  # unset, or an empty SYMPRUNE_ASSETS
            return None
        path = Path(assets).expanduser() / self.local_file
        if not path.is_file():
            raise ConfigError(
                f"offline data file {path} does not exist (paths.assets={assets}, from {ASSETS_ENV} or the config); "
                f"it should hold {self.hub_name}"
            )
        return path

    def load(self, assets: str | None) -> tuple[list[str], str]:
        """The texts and a description of where they came from, for the run record."""
        path = self.locate(assets)
        if path is not None:
            return self.read_local(path), f"local {path}" + (f" ({self.local_note})" if self.local_note else "")
        try:
            return self.hub(), f"hub {self.hub_name}"
        except Exception as error:  # datasets raises many types when offline or unreachable
            raise ConfigError(
                f"cannot load {self.hub_name} from the Hugging Face Hub ({type(error).__name__}: {error}). "
                f"Offline, set {ASSETS_ENV}=/path/to/assets (or paths.assets=...) to read local files instead"
            ) from None


def hub_wikitext(split: str) -> Callable[[], list[str]]:
    def load() -> list[str]:
        from datasets import load_dataset

        return list(load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)["text"])

    return load


def hub_c4(split: str, shard: str) -> Callable[[], list[str]]:
    def load() -> list[str]:
        from datasets import load_dataset

        return list(load_dataset("allenai/c4", data_files={split: shard}, split=split)["text"])

    return load


def _text_lines(path: Path, encoding: str, expected: str) -> list[str]:
    """The file's lines, as reading it in text mode gives them (universal newlines, ends kept); bytes that
    are not text in ``encoding`` stop the run with the file and the byte offset."""
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"offline data file {path}: byte {error.start} is not {encoding} text ({error.reason}); expected {expected}"
        ) from None
    return io.StringIO(text, newline=None).readlines()


def _json_lines(path: Path, fields: tuple[str, ...], expected: str) -> list[dict]:
    """One JSON object per line, each with ``fields``; a line that is not stops the run with the file and line."""
    rows = []
    for number, line in enumerate(_text_lines(path, "utf-8", expected), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"offline data file {path}, line {number}, column {error.colno}: not valid JSON ({error.msg}); "
                f"expected {expected}"
            ) from None
        missing = [name for name in fields if not (isinstance(row, dict) and isinstance(row.get(name), str))]
        if missing:
            raise ConfigError(
                f"offline data file {path}, line {number}: no text field {', '.join(repr(f) for f in missing)}; "
                f"expected {expected}"
            )
        rows.append(row)
    return rows


def read_jsonl_text(path: Path) -> list[str]:
    expected = 'one JSON object per line with a "text" field (the hub\'s rows)'
    return [row["text"] for row in _json_lines(path, ("text",), expected)]


def read_lines(path: Path) -> list[str]:
    return _text_lines(path, "utf-8-sig", "UTF-8 text")


def read_c4_like(first: int | None, last: int | None) -> Callable[[Path], list[str]]:
    def read(path: Path) -> list[str]:
        expected = 'one JSON object per line with text fields "prefix" and "gold_completion"'
        documents = _json_lines(path, ("prefix", "gold_completion"), expected)
        return [doc["prefix"] + doc["gold_completion"] for doc in documents[first:last]]

    return read
