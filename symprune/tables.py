"""Run records → tables. ``symprune-tables`` pivots the ``results.json`` records found under
directories into a Markdown table of one metric.

Row and column keys name a config group choice (``score``, ``sparsity``), a dotted
path into the resolved config (``refine.reweight``, ``calibration.nsamples``), or
``overrides:<prefix>``: the run's command-line overrides starting with the prefix
(e.g. ``overrides:score.`` labels a stochRIA run ``score.beta=0.5`` only where beta was
overridden). Several keys joined by commas make compound labels (empty parts are
dropped). Cells with no record show "–".
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from symprune.record import RECORD_NAME

MISSING_CELL = "–"


@dataclass(frozen=True)
class Record:
    path: Path
    data: dict[str, Any]

    def value(self, key: str) -> Any:
        """A group choice, else a dotted path into the config, else into the whole record."""
        if key.startswith("overrides:"):
            prefix = key.removeprefix("overrides:")
            return " ".join(o for o in self.data.get("overrides", []) if o.startswith(prefix))
        if key in self.data.get("choices", {}):
            return self.data["choices"][key]
        for root in (self.data.get("config", {}), self.data):
            found = _dotted(root, key)
            if found is not None:
                return found
        return None

    def label(self, keys: Sequence[str]) -> str:
        return ", ".join(str(value) for value in map(self.value, keys) if value not in (None, ""))


def _dotted(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_records(directories: Iterable[str | Path]) -> list[Record]:
    records = []
    for directory in directories:
        for path in sorted(Path(directory).rglob(RECORD_NAME)):
            records.append(Record(path, json.loads(path.read_text())))
    return records


def pivot(
    records: Sequence[Record], rows: Sequence[str], columns: Sequence[str], metric: str
) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """Row labels and column labels in first-seen order, and the metric per (row, column)."""
    row_labels: list[str] = []
    column_labels: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for record in records:
        value = _dotted(record.data, metric)
        if value is None:
            continue
        row, column = record.label(rows), record.label(columns)
        row_labels += [] if row in row_labels else [row]
        column_labels += [] if column in column_labels else [column]
        cells[row, column] = value
    return row_labels, column_labels, cells


def add_baseline_row(
    records: Sequence[Record], columns: Sequence[str], metric: str, pivoted, name: str = "dense"
):
    """Prepend a row holding ``metric`` (e.g. the dense perplexity) of any record per column."""
    row_labels, column_labels, cells = pivoted
    baseline = {}
    for record in records:
        value = _dotted(record.data, metric)
        if value is not None:
            baseline.setdefault(record.label(columns), value)
    cells = {**{(name, column): value for column, value in baseline.items() if column in column_labels}, **cells}
    return [name, *row_labels], column_labels, cells


def markdown(row_labels, column_labels, cells, row_title: str, digits: int = 2) -> str:
    lines = [
        "| " + " | ".join([row_title, *column_labels]) + " |",
        "|" + "---|" * (len(column_labels) + 1),
    ]
    for row in row_labels:
        values = [f"{cells[row, col]:.{digits}f}" if (row, col) in cells else MISSING_CELL for col in column_labels]
        lines.append("| " + " | ".join([row, *values]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="symprune-tables", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", help="directories searched for results.json records")
    parser.add_argument("--rows", required=True, help="comma-separated keys labelling rows")
    parser.add_argument("--columns", required=True, help="comma-separated keys labelling columns")
    parser.add_argument("--metric", default="metrics.perplexity.wikitext2.pruned", help="dotted path in the record")
    parser.add_argument("--baseline", help="dotted path of a metric shown as a first 'dense' row (e.g. the dense perplexity)")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--out", help="write the Markdown table here (default: stdout)")
    args = parser.parse_args(argv)
    rows, columns = args.rows.split(","), args.columns.split(",")
    records = find_records(args.directories)
    pivoted = pivot(records, rows, columns, args.metric)
    if args.baseline:
        pivoted = add_baseline_row(records, columns, args.baseline, pivoted)
    table = markdown(*pivoted, " / ".join(rows), args.digits)
    if args.out:
        Path(args.out).write_text(table)
    else:
        print(table, end="")


if __name__ == "__main__":
    main()
