"""Run records → tables: ``symprune-tables``.

``symprune-tables build`` lays out the paper's tables from run records found under directories
(and, with ``--wandb ENTITY/PROJECT``, from W&B runs through the public API), following the
table specs in ``experiments/tables.yaml``: Markdown, LaTeX and CSV per table, PNG plots, and
optionally all of it logged to W&B. ``symprune-tables pivot`` is the ad hoc form: any metric,
any row and column keys. ``symprune-tables export`` writes the records behind the tables as JSON
lines, ``symprune-tables report`` a W&B Report of an experiment (``--dry-run``: its spec as JSON).

Keys name a config group choice (``score``, ``sparsity``), a dotted path into the resolved
config (``refine.reweight``, ``calibration.nsamples``), or ``overrides:<prefix>``: the run's
command-line overrides starting with the prefix (``overrides:score.`` labels a stochRIA run
``score.beta=0.5`` only where beta was overridden). Several keys make compound labels (empty
parts dropped). Cells with no record show "–", never zero. When several records share a config
(or a cell), the newest wins and the output says so; records that differ from it only in
``calibration.seed`` are averaged with it: mean ± sample std (n=...), Δ rows and sums of the means.
Under every table: the code states and environments its cells come from (``--strict``: refuse a
table that mixes several; otherwise the cells of all but the most frequent carry footnote letters).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from symprune.errors import ConfigError
from symprune.report.plots import plot_table
from symprune.report.provenance import generated_line
from symprune.report.records import (
    Origin,
    Record,
    check_not_mixed,
    combine,
    dotted,
    find_records,
    newest_per_config,
    numeric_order,
    read_exported,
    wandb_records,
)

MISSING_CELL = "–"
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "tables.yaml"
DEFAULT_RECORDS = Path("experiments") / "results" / "records"


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
    row_labels, column_labels = _ordered(row_labels, spec.get("row_order")), _ordered(column_labels, spec.get("column_order"))
    spread = {cell: (aggregate.std, aggregate.n) for cell, aggregate in measured.items()}
    origins = {cell: aggregate.origins for cell, aggregate in measured.items()}
    if spec.get("baseline"):
        baseline: dict[str, tuple[Any, Record]] = {}
        seen: dict[str, set[Any]] = {}
        for record in sorted(records, key=lambda r: r.finished):  # the newest record's value is shown
            for column, value in metric_values(record, columns, spec["baseline"]):
                baseline[column] = (value, record)
                seen.setdefault(column, set()).add(value)
        notes += [f"dense values of column {column} differ between records ({', '.join(map(str, sorted(values)))}): "
                  f"the newest, {baseline[column][1].source}, is shown" for column, values in seen.items() if len(values) > 1]
        if baseline:  # a dense value comes from the record it is read from
            row_labels.insert(0, "dense")
            for column, (value, record) in baseline.items():
                cells["dense", column], spread["dense", column] = value, (None, 1)
                origins["dense", column] = frozenset({record.origin})
    # Δ rows and sums: of the means, from wherever their inputs come from (marked only if those are marked)
    for minuend, subtrahend in spec.get("delta", []):
        name = f"Δ ({minuend} − {subtrahend})"
        row_labels.append(name)
        for column in column_labels:
            if (minuend, column) in cells and (subtrahend, column) in cells:
                cells[name, column] = cells[minuend, column] - cells[subtrahend, column]
                origins[name, column] = origins[minuend, column] | origins[subtrahend, column]
    if spec.get("sum"):
        for row in row_labels:
            values = [cells.get((row, column)) for column in column_labels]
            if values and all(value is not None for value in values):
                cells[row, "sum"] = sum(values)
                origins[row, "sum"] = frozenset().union(*(origins[row, column] for column in column_labels))
        column_labels = [*column_labels, "sum"]
    return Table(
        title or spec.get("title", ""), " / ".join(rows), row_labels, column_labels, cells,
        notes + cell_notes, spec.get("digits", 2), spread, origins,
    )


def load_specs(path: str | Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load(Path(path).read_text())


def spec_name(experiment: str, specs: dict[str, Any]) -> str | None:
    """The spec of an experiment: its own, or that of the paper-scale experiment a *_cpu variant sizes down."""
    for name in (experiment, experiment.removesuffix("_cpu")):
        if name in specs:
            return name
    return None


def by_experiment(records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
    """The records of each experiment (the ``experiment`` choice), in the experiments' name order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        experiment = record.value("experiment")
        if experiment:
            groups.setdefault(experiment, []).append(record)
    return sorted(groups.items())


def table_specs(name: str, specs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """An experiment's tables: (file name suffix, spec) for each; a spec file entry is one table or a list of
    them, each with its ``suffix`` (e.g. ``_error``)."""
    entry = specs[name]
    return [(spec.get("suffix", ""), spec) for spec in (entry if isinstance(entry, list) else [entry])]


def build(records: Sequence[Record], specs: dict[str, Any], out: Path, only: Sequence[str] = (), log_to=None,
          command: str = "symprune-tables build", strict: bool = False) -> list[Path]:
    """Every experiment found in the records (or those named in ``only``): tables and plots under ``out``, each
    file saying in its first line (a PNG: in its metadata) the command that generated it. ``strict``: no file
    is written if a table's cells mix combinations of code state and environment."""
    planned = []
    for experiment, group in by_experiment(records):
        name = spec_name(experiment, specs)
        if name is None or (only and experiment not in only):
            continue
        for suffix, spec in table_specs(name, specs):
            table = build_table(group, spec, title=f"{spec.get('title', name)} — experiment `{experiment}`")
            planned.append((f"{experiment}{suffix}", experiment, group, spec, table))
    if strict:
        check_single_origin([(stem, table) for stem, _, _, _, table in planned])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, experiment, group, spec, table in planned:
        for extension, text in (("md", table.markdown()), ("tex", table.latex()), ("csv", table.csv())):
            path = out / f"{stem}.{extension}"
            path.write_text(f"{generated_line(extension, command)}\n{text}")
            written.append(path)
        for note in table.notes:
            print(f"{stem}: note: {note}")
        if "plot" in spec:
            written.append(plot_table(group, spec, out / f"{stem}.png", title=experiment, command=command))
        if log_to is not None:
            log_to(stem, table, written[-1] if "plot" in spec else None)
    return written


def export(records: Sequence[Record], out: Path, command: str) -> list[Path]:
    """The records behind every experiment's tables as JSON lines, one file per experiment
    (``<out>/<experiment>.jsonl``): each record whole, less its per-layer detail (``layers``; the per-layer
    numbers a table needs are summed into ``metrics.layer_totals``) and with its local paths made portable
    (``portable_paths``), newest last; a first line names the command. ``symprune-tables build --records
    <out>`` lays the tables out from them."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for experiment, group in by_experiment(records):
        kept, _ = newest_per_config(group)
        lines = [json.dumps({"generated_by": command})]
        lines += [json.dumps(portable_paths({key: value for key, value in record.data.items() if key != "layers"}),
                             sort_keys=True)
                  for record in sorted(kept, key=lambda r: r.finished)]  # stable: the order build reads them in
        path = out / f"{experiment}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


SITE_PACKAGES = re.compile(r"/[^\s'\"]*/(?:site|dist)-packages/")


def portable_paths(data: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """A record to share: absolute paths of the machine that ran it rewritten, so that it names no local
    directory: the assets directory (``config.paths.assets``) as ``$SYMPRUNE_ASSETS``, an installed package's
    directory as ``<site-packages>/``, and the working directory (``cwd``, default: the current one) dropped
    from paths below it. Hashes and numbers are left as they are."""
    assets = str(dotted(data, "config.paths.assets") or "").rstrip("/")
    prefixes = [(assets, "$SYMPRUNE_ASSETS")] if assets.startswith("/") else []
    prefixes.append((str(cwd or Path.cwd()).rstrip("/") + "/", ""))

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        if isinstance(node, str):
            node = SITE_PACKAGES.sub("<site-packages>/", node)
            for prefix, replacement in prefixes:
                node = node.replace(prefix, replacement)
        return node

    return rewrite(data)


def _wandb_logger(project: str):
    import wandb

    run = wandb.init(project=project, job_type="tables")

    def log(name: str, table: Table, image: Path | None) -> None:
        rows = [[row, *(table.cells.get((row, c)) for c in table.columns)] for row in table.rows]
        run.log({f"tables/{name}": wandb.Table(columns=[table.row_title, *table.columns], data=rows)})
        if image is not None:
            run.log({f"plots/{name}": wandb.Image(str(image))})

    return run, log


def report(args: argparse.Namespace, command: str) -> None:
    """``symprune-tables report``: checks its arguments before it builds, saves or writes anything."""
    from symprune.config import CONFIG_DIR
    from symprune.report.wandb_report import RunFilter, build_report, report_spec, sweep_group

    experiment_file = Path(CONFIG_DIR) / "experiment" / f"{args.experiment}.yaml"
    if not experiment_file.is_file():
        known = sorted(path.stem for path in experiment_file.parent.glob("*.yaml"))
        raise ConfigError(f"unknown experiment '{args.experiment}'; experiments: {', '.join(known)}")
    if not args.dry_run and not args.entity:
        raise ConfigError("saving a report needs a W&B entity: give --entity or set WANDB_ENTITY (or use --dry-run)")
    records = dict(by_experiment(read_exported(args.records))).get(args.experiment, []) if Path(
        args.records).is_dir() else []
    runs = RunFilter(args.group or sweep_group(experiment_file), args.experiment)
    built = build_report(args.experiment, load_specs(args.spec), args.entity or "", args.project, runs, records,
                         command)
    if args.dry_run:
        text = json.dumps({"generated_by": command, "report": report_spec(built)}, indent=2) + "\n"
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
        return
    built.save()
    print(f"saved the report: {built.url}")


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except ConfigError as error:  # a typo in a key, mixed synthetic and real records, no records
        print(f"symprune-tables: {error}", file=sys.stderr)
        sys.exit(2)


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="symprune-tables", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="the paper's tables from experiment sweeps")
    build_cmd.add_argument("directories", nargs="*", help="searched for results.json (default: outputs/experiments, "
                                                          "unless --records is given)")
    build_cmd.add_argument("--records", help="also read the exported records (*.jsonl) in this directory")
    build_cmd.add_argument("--wandb", help="also read finished runs of this W&B ENTITY/PROJECT (public API)")
    build_cmd.add_argument("--spec", default=str(DEFAULT_SPEC), help="table specs (YAML)")
    build_cmd.add_argument("--experiments", default="", help="comma-separated experiment names (default: all found)")
    build_cmd.add_argument("--out", default="experiments/results")
    build_cmd.add_argument("--log-wandb", metavar="PROJECT", help="log the tables and plots to this W&B project")
    build_cmd.add_argument("--strict", action="store_true", help="write nothing if a table's cells come from several "
                                                                 "combinations of code state and environment")
    export_cmd = commands.add_parser("export", help="the records behind the tables, as JSON lines per experiment")
    export_cmd.add_argument("directories", nargs="*", default=["outputs/experiments"], help="searched for results.json")
    export_cmd.add_argument("--out", default="experiments/results/records")
    export_cmd.add_argument("--records", help="also keep the records already exported in this directory (a sweep "
                                              "that adds runs to a committed table); the newest of a config wins")
    report_cmd = commands.add_parser("report", help="a W&B Report of an experiment's sweep (--dry-run: its spec)")
    report_cmd.add_argument("experiment", help="an experiment config's name (conf/experiment/NAME.yaml)")
    report_cmd.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="default: $WANDB_ENTITY")
    report_cmd.add_argument("--project", default=os.environ.get("WANDB_PROJECT") or "symprune",
                            help="default: $WANDB_PROJECT, else symprune")
    report_cmd.add_argument("--group", help="the sweep's W&B group (default: the one of the experiment's sweep "
                                            "directory here, else every run of the experiment)")
    report_cmd.add_argument("--records", default=str(DEFAULT_RECORDS),
                            help="exported records whose table the report shows (default: %(default)s)")
    report_cmd.add_argument("--spec", default=str(DEFAULT_SPEC), help="table specs (YAML)")
    report_cmd.add_argument("--dry-run", action="store_true", help="write the report's spec as JSON; no network")
    report_cmd.add_argument("--out", help="with --dry-run: the JSON file (default: stdout)")
    pivot_cmd = commands.add_parser("pivot", help="one metric as a table of any row and column keys")
    pivot_cmd.add_argument("directories", nargs="+", help="directories searched for results.json records")
    pivot_cmd.add_argument("--rows", required=True, help="comma-separated keys labelling rows")
    pivot_cmd.add_argument("--columns", required=True, help="comma-separated keys labelling columns")
    pivot_cmd.add_argument("--metric", default="metrics.perplexity.wikitext2.pruned", help="dotted path in the record")
    pivot_cmd.add_argument("--baseline", help="dotted path of a metric shown as a first 'dense' row")
    pivot_cmd.add_argument("--digits", type=int, default=2)
    pivot_cmd.add_argument("--out", help="write the Markdown table here (default: stdout)")
    pivot_cmd.add_argument("--strict", action="store_true", help="refuse a table whose cells come from several "
                                                                 "combinations of code state and environment")
    args = parser.parse_args(argv)

    if args.command == "pivot":
        records = find_records(args.directories)
        spec = {"rows": args.rows.split(","), "columns": args.columns.split(","), "metric": args.metric,
                "baseline": args.baseline, "digits": args.digits}
        check_spec(records, [], [args.baseline] if args.baseline else [])
        table = build_table(records, spec)
        if args.strict:
            check_single_origin([(args.out or "pivot", table)])
        text = table.markdown()
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text, end="")
        return
    if args.command == "report":
        report(args, "symprune-tables " + " ".join(argv if argv is not None else sys.argv[1:]))
        return
    if args.command == "export":
        command = f"symprune-tables export {' '.join(args.directories)} --out {args.out}"
        records = find_records(args.directories)
        if args.records:
            command += f" --records {args.records}"
            records = read_exported(args.records) + records
        for path in export(records, Path(args.out), command):
            print(f"wrote {path}")
        return
    directories = args.directories or ([] if args.records else ["outputs/experiments"])
    records = find_records(directories) + (read_exported(args.records) if args.records else [])
    if args.wandb:
        records += wandb_records(args.wandb)
    run, log_to = _wandb_logger(args.log_wandb) if args.log_wandb else (None, None)
    only = [name for name in args.experiments.split(",") if name]
    sources = " ".join([*args.directories, *(["--records", args.records] if args.records else []),
                        *(["--wandb", args.wandb] if args.wandb else [])])
    for path in build(records, load_specs(args.spec), Path(args.out), only, log_to,
                      command=f"symprune-tables build {sources}".rstrip(), strict=args.strict):
        print(f"wrote {path}")
    if run is not None:
        run.finish()


if __name__ == "__main__":
    main()
