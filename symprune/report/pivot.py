"""Records → one table as a spec lays it out (rows, columns, metric, orders, Δ rows, a sum column, a dense
row) and the table as Markdown, LaTeX and CSV, its provenance under it: what ``symprune-tables`` and the W&B
Report both lay out.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from symprune.errors import ConfigError
from symprune.report.records import Origin, Record, check_not_mixed, combine, dotted, newest_per_config, numeric_order

MISSING_CELL = "–"

# footnote letters of the combinations a table mixes; no q: Unicode has no superscript q
LETTERS = "abcdefghijklmnoprstuvwxyz"
SUPERSCRIPT = dict(zip(LETTERS, "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻ"))


def _letter(index: int) -> str:
    """a, b, ..., z, aa, ab, ...: as many letters as a table needs."""
    letters, index = "", index + 1
    while index:
        index, rest = divmod(index - 1, len(LETTERS))
        letters = LETTERS[rest] + letters
    return letters


def _cells(count: int) -> str:
    return f"{count} cell{'' if count == 1 else 's'}"


@dataclass
class Table:
    title: str
    row_title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], float]  # a cell's value; the mean where several calibration seeds ran
    notes: list[str] = field(default_factory=list)
    digits: int = 2
    spread: dict[tuple[str, str], tuple[float | None, int]] = field(default_factory=dict)  # measured cells: (std, n)
    origins: dict[tuple[str, str], frozenset[Origin]] = field(default_factory=dict)  # where each cell's inputs ran

    def cell(self, row: str, column: str) -> str:
        value = self.cells.get((row, column))
        return MISSING_CELL if value is None else f"{value:.{self.digits}f}"

    def provenance(self) -> list[tuple[Origin, int, str]]:
        """Each (code state, environment) combination the cells come from, with its number of cells and its
        footnote letter: the combination of most cells (of a tie, the first seen) goes unmarked, the others
        are lettered in the order they are first seen, row by row. A cell drawing on several counts for each."""
        counts: dict[Origin, int] = {}
        for row in self.rows:
            for column in self.columns:
                for origin in sorted(self.origins.get((row, column), ()), key=str):
                    counts[origin] = counts.get(origin, 0) + 1
        if not counts:
            return []
        unmarked = max(counts, key=lambda origin: counts[origin])
        lettered = [origin for origin in counts if origin != unmarked]
        return [(unmarked, counts[unmarked], ""),
                *((origin, counts[origin], _letter(index)) for index, origin in enumerate(lettered))]

    def marks(self, row: str, column: str, legend: list[tuple[Origin, int, str]]) -> list[str]:
        """The letters of a cell: those of its combinations other than the unmarked one."""
        origins = self.origins.get((row, column), frozenset())
        return [letter for origin, _, letter in legend if letter and origin in origins]

    def _seeded(self) -> bool:
        return any(n > 1 for _, n in self.spread.values())

    def _shown(self, row: str, column: str, legend, plus_minus: str, superscript) -> str:
        """A cell as a reader sees it: the value, ``± std (n=N)`` where seeds were averaged, its marks."""
        text = self.cell(row, column)
        std, n = self.spread.get((row, column), (None, 1))
        if n > 1:
            text += f" {plus_minus} {std:.{self.digits}f} (n={n})"
        letters = self.marks(row, column, legend) if len(legend) > 1 else []
        return text + (superscript(letters) if letters else "")

    def provenance_lines(self, where: str) -> list[str]:
        """The provenance under a table: one line for one combination, else a line per combination with its
        letter (``where`` says where a cell's letter is)."""
        legend = self.provenance()
        if len(legend) == 1:
            origin, count, _ = legend[0]
            return [f"provenance: {origin} ({_cells(count)})"]
        lines = [f"provenance: {len(legend)} combinations of code state and environment, {where}"] if legend else []
        return lines + [f"provenance ({letter or 'unmarked'}): {origin} ({_cells(count)})"
                        for origin, count, letter in legend]

    def markdown(self) -> str:
        legend = self.provenance()

        def superscript(letters):
            return "".join(SUPERSCRIPT.get(char, char) for char in "".join(letters))

        lines = [f"| {' | '.join([self.row_title, *self.columns])} |", "|" + "---|" * (len(self.columns) + 1)]
        lines += [f"| {' | '.join([row, *(self._shown(row, c, legend, '±', superscript) for c in self.columns)])} |"
                  for row in self.rows]
        if len(legend) == 1:
            origin, count, _ = legend[0]
            provenance = [f"Provenance: {origin} ({_cells(count)})"]
        elif legend:
            provenance = [f"Provenance: {len(legend)} combinations of code state and environment:"]
            provenance += [f"- {SUPERSCRIPT.get(letter, letter) + ' ' if letter else ''}{origin} ({_cells(count)}"
                           f"{'' if letter else ', unmarked'})" for origin, count, letter in legend]
        else:
            provenance = []
        notes = "".join(f"\n> {note}" for note in self.notes)
        return ((f"{self.title}\n\n" if self.title else "") + "\n".join(lines) + "\n"
                + ("\n" + "\n".join(provenance) + "\n" if provenance else "") + (notes + "\n" if notes else ""))

    def csv(self) -> str:
        """The values (means), with a ``<column> std`` and ``<column> n`` column after each where some cell
        averages calibration seeds, and a ``<column> provenance`` column (the cell's letters) where the cells
        mix combinations; the provenance as trailing comment lines."""
        legend, seeded = self.provenance(), self._seeded()

        def companions(column: str) -> list[str]:
            return [column, *([f"{column} std", f"{column} n"] if seeded else []),
                    *([f"{column} provenance"] if len(legend) > 1 else [])]

        def values(row: str, column: str) -> list[str]:
            std, n = self.spread.get((row, column), (None, 0))
            seed_values = [f"{std:.{self.digits}f}" if std is not None else "", str(n) if n else ""]
            return [self.cell(row, column), *(seed_values if seeded else []),
                    *([" ".join(self.marks(row, column, legend))] if len(legend) > 1 else [])]

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([self.row_title, *(name for column in self.columns for name in companions(column))])
        writer.writerows([[row, *(value for column in self.columns for value in values(row, column))]
                          for row in self.rows])
        where = "each cell's letters in its column's provenance column"
        return out.getvalue() + "".join(f"# {line}\n" for line in self.provenance_lines(where))

    def latex(self) -> str:
        def escape(text: str) -> str:
            return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("–", "--")

        legend = self.provenance()

        def shown(row: str, column: str) -> str:
            return escape(self._shown(row, column, legend, r"$\pm$",
                                      lambda letters: rf"\textsuperscript{{{','.join(letters)}}}"))

        lines = [
            r"\begin{tabular}{l" + "r" * len(self.columns) + "}",
            r"\toprule",
            " & ".join(escape(t) for t in [self.row_title, *self.columns]) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join([escape(row), *(shown(row, c) for c in self.columns)]) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {line}" for line in self.provenance_lines("each cell's letters superscript")]
        return "\n".join(lines) + "\n"


class MixedProvenanceError(ConfigError):
    """A table whose cells come from several combinations of code state and environment, under --strict."""


def check_single_origin(tables: Sequence[tuple[str, Table]]) -> None:
    """Refuse tables whose cells mix (code state, environment) combinations, naming each and its combinations."""
    mixed = [(name, legend) for name, table in tables if len(legend := table.provenance()) > 1]
    if mixed:
        raise MixedProvenanceError("\n".join(
            f"--strict: table {name} mixes {len(legend)} combinations of code state and environment: "
            + ", ".join(f"[{letter or 'unmarked'}] {origin} ({_cells(count)})" for origin, count, letter in legend)
            + "; build it from records of one combination (rerun the marked cells), or leave out --strict"
            for name, legend in mixed))


def pivot(records: Sequence[Record], rows: Sequence[str], columns: Sequence[str], metric: str):
    """Row labels grouped key by key (by the first key's values, then the second's, each in first-seen order, so
    that the order in which a sweep's runs finished does not interleave them), column labels in first-seen
    order, the metric per (row, column) and how it was aggregated (``combine``: the newest record wins a cell,
    averaged over the records that differ from it only in their calibration seed), and a note for every cell
    that records of other configs claimed too."""
    row_values: dict[str, tuple[str, ...]] = {}  # each row label's key values, in first-seen order
    column_labels: list[str] = []
    claimed: dict[tuple[str, str], list[tuple[Record, Any]]] = {}
    for record in sorted(records, key=lambda r: r.finished):
        row = record.label(rows)
        for column, value in metric_values(record, columns, metric):
            row_values.setdefault(row, tuple(str(record.value(key)) for key in rows))
            column_labels += [] if column in column_labels else [column]
            claimed.setdefault((row, column), []).append((record, value))
    measured = {cell: combine(claims) for cell, claims in claimed.items()}
    notes = []
    for (row, column), claims in claimed.items():
        kept = measured[row, column]
        if len(claims) > kept.n:
            seeds = f", averaged with {kept.n - 1} more differing only in calibration.seed" if kept.n > 1 else ""
            notes.append(f"{len(claims)} records for cell ({row} | {column}): using the newest, {claims[-1][0].source}"
                         f"{seeds}")
    cells = {cell: aggregate.mean for cell, aggregate in measured.items()}
    return _grouped(row_values), column_labels, cells, notes, measured


def _grouped(values: dict[str, tuple[str, ...]]) -> list[str]:
    """The labels of ``values`` (label → its keys' values, in first-seen order) sorted by their keys' values, each
    key's values in first-seen order."""
    first_seen: list[dict[str, int]] = [{} for _ in next(iter(values.values()), ())]
    for label_values in values.values():
        for position, value in enumerate(label_values):
            first_seen[position].setdefault(value, len(first_seen[position]))
    return sorted(values, key=lambda label: [first_seen[position][value] for position, value in enumerate(values[label])])


def metric_values(record: Record, columns: Sequence[str], metric: str) -> list[tuple[str, Any]]:
    """(column label, value) of a record: one, or with a ``*`` in the metric path (e.g.
    ``metrics.zeroshot.pruned.*.acc``) one per key the ``*`` matches, the key ending the column label."""
    label = record.label(columns)
    if "*" not in metric:
        value = dotted(record.data, metric)
        return [] if value is None else [(label, value)]
    head, tail = (part.strip(".") for part in metric.split("*", 1))
    found = dotted(record.data, head)
    if not isinstance(found, dict):
        return []
    pairs = [(key, dotted(node, tail) if tail else node) for key, node in found.items()]
    return [(", ".join(filter(None, [label, key])), value) for key, value in pairs if isinstance(value, (int, float))]


def _ordered(labels: list[str], preferred: Sequence[str] | None) -> list[str]:
    """The preferred labels first, in their order; the rest in numeric order when all are numbers."""
    preferred = [str(p) for p in preferred or []]
    return [label for label in preferred if label in labels] + numeric_order([label for label in labels if label not in preferred])


def check_spec(records: Sequence[Record], keys: Sequence[str], metrics: Sequence[str]) -> None:
    """Refuse a row/column key or a metric that no record has (a typo would give blank labels or an
    empty table), naming the closest ones the records do have."""
    if not records:
        raise ConfigError("no run records to lay out (no results.json under the given directories)")
    for key in keys:
        if not any(record.value(key) not in (None, "") for record in records):
            raise ConfigError(f"key '{key}' is in none of the {len(records)} records{_closest(key, records, 'keys')}")
    for metric in metrics:
        if not any(metric_values(record, [], metric) for record in records):
            raise ConfigError(f"metric '{metric}' is in none of the {len(records)} records{_closest(metric, records, 'metrics')}")


def _closest(name: str, records: Sequence[Record], kind: str) -> str:
    known = sorted({key for record in records for key in (record.known_keys() if kind == "keys" else record.known_metrics())})
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def build_table(records: Sequence[Record], spec: dict[str, Any], title: str = "") -> Table:
    """A table as a spec lays it out: rows, columns and metric, orders, Δ rows, a sum column, a dense row.
    Records of synthetic and of real models are never mixed."""
    check_not_mixed(records)
    records, notes = newest_per_config(records)
    rows, columns = list(spec["rows"]), list(spec["columns"])
    check_spec(records, [*rows, *columns], [spec["metric"]])
    row_labels, column_labels, cells, cell_notes, measured = pivot(records, rows, columns, spec["metric"])
    table = Table(
        title or spec.get("title", ""), " / ".join(rows), _ordered(row_labels, spec.get("row_order")),
        _ordered(column_labels, spec.get("column_order")), cells, notes, spec.get("digits", 2),
        spread={cell: (aggregate.std, aggregate.n) for cell, aggregate in measured.items()},
        origins={cell: aggregate.origins for cell, aggregate in measured.items()},
    )
    if spec.get("baseline"):
        _add_dense_row(table, records, columns, spec["baseline"])
    # Δ rows and sums: of the means, from wherever their inputs come from (marked only if those are marked)
    for minuend, subtrahend in spec.get("delta", []):
        _add_delta_row(table, minuend, subtrahend)
    if spec.get("sum"):
        _add_sum_column(table)
    table.notes += cell_notes
    return table


def _add_dense_row(table: Table, records: Sequence[Record], column_keys: Sequence[str], metric: str) -> None:
    """A first row ``dense``: per column, the metric of the newest record, with a note where records differ."""
    baseline: dict[str, tuple[Any, Record]] = {}
    seen: dict[str, set[Any]] = {}
    for record in sorted(records, key=lambda r: r.finished):  # the newest record's value is shown
        for column, value in metric_values(record, column_keys, metric):
            baseline[column] = (value, record)
            seen.setdefault(column, set()).add(value)
    table.notes += [f"dense values of column {column} differ between records ({', '.join(map(str, sorted(values)))}): "
                    f"the newest, {baseline[column][1].source}, is shown"
                    for column, values in seen.items() if len(values) > 1]
    if baseline:  # a dense value comes from the record it is read from
        table.rows.insert(0, "dense")
        for column, (value, record) in baseline.items():
            table.cells["dense", column], table.spread["dense", column] = value, (None, 1)
            table.origins["dense", column] = frozenset({record.origin})


def _add_delta_row(table: Table, minuend: str, subtrahend: str) -> None:
    name = f"Δ ({minuend} − {subtrahend})"
    table.rows.append(name)
    for column in table.columns:
        if (minuend, column) in table.cells and (subtrahend, column) in table.cells:
            table.cells[name, column] = table.cells[minuend, column] - table.cells[subtrahend, column]
            table.origins[name, column] = table.origins[minuend, column] | table.origins[subtrahend, column]


def _add_sum_column(table: Table) -> None:
    """A ``sum`` column: each row's sum over the columns, where the row has every cell."""
    for row in table.rows:
        values = [table.cells.get((row, column)) for column in table.columns]
        if values and all(value is not None for value in values):
            table.cells[row, "sum"] = sum(values)
            table.origins[row, "sum"] = frozenset().union(*(table.origins[row, column] for column in table.columns))
    table.columns.append("sum")


def load_specs(path: str | Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load(Path(path).read_text())


def spec_name(experiment: str, specs: dict[str, Any]) -> str | None:
    """The spec of an experiment: its own, or that of the paper-scale experiment a *_cpu variant sizes down."""
    for name in (experiment, experiment.removesuffix("_cpu")):
        if name in specs:
            return name
    return None


def table_specs(name: str, specs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """An experiment's tables: (file name suffix, spec) for each; a spec file entry is one table or a list of
    them, each with its ``suffix`` (e.g. ``_error``)."""
    entry = specs[name]
    return [(spec.get("suffix", ""), spec) for spec in (entry if isinstance(entry, list) else [entry])]

