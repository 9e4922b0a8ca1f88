"""Run records → tables: ``symprune-tables``.

``symprune-tables build`` lays out the paper's tables from run records found under directories
(and, with ``--wandb ENTITY/PROJECT``, from W&B runs through the public API), following the
table specs in ``experiments/tables.yaml``: Markdown, LaTeX and CSV per table, PNG plots, and
optionally all of it logged to W&B. ``symprune-tables pivot`` is the ad hoc form: any metric,
any row and column keys.

Keys name a config group choice (``score``, ``sparsity``), a dotted path into the resolved
config (``refine.reweight``, ``calibration.nsamples``), or ``overrides:<prefix>``: the run's
command-line overrides starting with the prefix (``overrides:score.`` labels a stochRIA run
``score.beta=0.5`` only where beta was overridden). Several keys make compound labels (empty
parts dropped). Cells with no record show "–", never zero. When several records share a config
(or a cell), the newest wins and the output says so.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from symprune.record import RECORD_NAME

MISSING_CELL = "–"
DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "experiments" / "tables.yaml"


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

    def label(self, keys: Sequence[str]) -> str:
        return ", ".join(str(value) for value in map(self.value, keys) if value not in (None, ""))

    @property
    def finished(self) -> float:
        return float(self.data.get("finished", 0.0))


def dotted(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_records(directories: Iterable[str | Path]) -> list[Record]:
    records = []
    for directory in directories:
        for path in sorted(Path(directory).rglob(RECORD_NAME)):
            records.append(Record(str(path), json.loads(path.read_text())))
    return records


def wandb_records(path: str, api=None) -> list[Record]:
    """Finished W&B runs of ``ENTITY/PROJECT`` as records: the run config symprune logs carries
    the resolved config plus ``choices``, ``overrides`` and ``config_hash``; metrics come from the summary."""
    if api is None:
        import wandb

        api = wandb.Api()
    records = []
    for run in api.runs(path, filters={"state": "finished"}):
        config = dict(run.config)
        extra = {key: config.pop(key) for key in ("choices", "overrides", "config_hash") if key in config}
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


@dataclass
class Table:
    title: str
    row_title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], float]
    notes: list[str] = field(default_factory=list)
    digits: int = 2

    def cell(self, row: str, column: str) -> str:
        value = self.cells.get((row, column))
        return MISSING_CELL if value is None else f"{value:.{self.digits}f}"

    def markdown(self) -> str:
        lines = [f"| {' | '.join([self.row_title, *self.columns])} |", "|" + "---|" * (len(self.columns) + 1)]
        lines += [f"| {' | '.join([row, *(self.cell(row, c) for c in self.columns)])} |" for row in self.rows]
        notes = "".join(f"\n> {note}" for note in self.notes)
        return (f"{self.title}\n\n" if self.title else "") + "\n".join(lines) + "\n" + (notes + "\n" if notes else "")

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([self.row_title, *self.columns])
        writer.writerows([[row, *(self.cell(row, c) for c in self.columns)] for row in self.rows])
        return out.getvalue()

    def latex(self) -> str:
        def escape(text: str) -> str:
            return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("–", "--")

        lines = [
            r"\begin{tabular}{l" + "r" * len(self.columns) + "}",
            r"\toprule",
            " & ".join(escape(t) for t in [self.row_title, *self.columns]) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(escape(t) for t in [row, *(self.cell(row, c) for c in self.columns)]) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"


def pivot(records: Sequence[Record], rows: Sequence[str], columns: Sequence[str], metric: str):
    """Row and column labels in first-seen order, the metric per (row, column) (the newest record
    wins a cell), and a note for every cell that several records claimed."""
    row_labels: list[str] = []
    column_labels: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    claimed: dict[tuple[str, str], list[Record]] = {}
    for record in sorted(records, key=lambda r: r.finished):
        row = record.label(rows)
        for column, value in metric_values(record, columns, metric):
            row_labels += [] if row in row_labels else [row]
            column_labels += [] if column in column_labels else [column]
            cells[row, column] = value
            claimed.setdefault((row, column), []).append(record)
    notes = [
        f"{len(group)} records for cell ({row} | {column}): using the newest, {group[-1].source}"
        for (row, column), group in claimed.items()
        if len(group) > 1
    ]
    return row_labels, column_labels, cells, notes


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


def _ordered(labels: list[str], preferred: Sequence[str] | None) -> list[str]:
    """The preferred labels first, in their order; the rest in numeric order when all are numbers."""
    preferred = [str(p) for p in preferred or []]
    return [label for label in preferred if label in labels] + numeric_order([label for label in labels if label not in preferred])


def build_table(records: Sequence[Record], spec: dict[str, Any], title: str = "") -> Table:
    """A table as a spec lays it out: rows, columns and metric, orders, Δ rows, a sum column, a dense row."""
    records, notes = newest_per_config(records)
    rows, columns = list(spec["rows"]), list(spec["columns"])
    row_labels, column_labels, cells, cell_notes = pivot(records, rows, columns, spec["metric"])
    row_labels, column_labels = _ordered(row_labels, spec.get("row_order")), _ordered(column_labels, spec.get("column_order"))
    if spec.get("baseline"):
        baseline = {}
        for record in records:
            for column, value in metric_values(record, columns, spec["baseline"]):
                baseline.setdefault(column, value)
        if baseline:
            row_labels.insert(0, "dense")
            cells.update({("dense", column): value for column, value in baseline.items()})
    for minuend, subtrahend in spec.get("delta", []):
        name = f"Δ ({minuend} − {subtrahend})"
        row_labels.append(name)
        for column in column_labels:
            if (minuend, column) in cells and (subtrahend, column) in cells:
                cells[name, column] = cells[minuend, column] - cells[subtrahend, column]
    if spec.get("sum"):
        for row in row_labels:
            values = [cells.get((row, column)) for column in column_labels]
            if values and all(value is not None for value in values):
                cells[row, "sum"] = sum(values)
        column_labels = [*column_labels, "sum"]
    return Table(
        title or spec.get("title", ""), " / ".join(rows), row_labels, column_labels, cells,
        notes + cell_notes, spec.get("digits", 2),
    )


def load_specs(path: str | Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load(Path(path).read_text())


def spec_name(experiment: str, specs: dict[str, Any]) -> str | None:
    """The spec of an experiment: its own, or that of the paper-scale experiment a *_cpu variant sizes down."""
    for name in (experiment, experiment.removesuffix("_cpu")):
        if name in specs:
            return name
    return None


def build(records: Sequence[Record], specs: dict[str, Any], out: Path, only: Sequence[str] = (), log_to=None) -> list[Path]:
    """Every experiment found in the records (or those named in ``only``): tables and plots under ``out``."""
    from symprune.plots import plot_table

    by_experiment: dict[str, list[Record]] = {}
    for record in records:
        experiment = record.value("experiment")
        if experiment:
            by_experiment.setdefault(experiment, []).append(record)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for experiment, group in sorted(by_experiment.items()):
        name = spec_name(experiment, specs)
        if name is None or (only and experiment not in only):
            continue
        spec = specs[name]
        table = build_table(group, spec, title=f"{spec.get('title', name)} — experiment `{experiment}`")
        for suffix, text in (("md", table.markdown()), ("tex", table.latex()), ("csv", table.csv())):
            path = out / f"{experiment}.{suffix}"
            path.write_text(text)
            written.append(path)
        for note in table.notes:
            print(f"{experiment}: note: {note}")
        if "plot" in spec:
            written.append(plot_table(group, spec, out / f"{experiment}.png", title=experiment))
        if log_to is not None:
            log_to(experiment, table, written[-1] if "plot" in spec else None)
    return written


def _wandb_logger(project: str):
    import wandb

    run = wandb.init(project=project, job_type="tables")

    def log(name: str, table: Table, image: Path | None) -> None:
        rows = [[row, *(table.cells.get((row, c)) for c in table.columns)] for row in table.rows]
        run.log({f"tables/{name}": wandb.Table(columns=[table.row_title, *table.columns], data=rows)})
        if image is not None:
            run.log({f"plots/{name}": wandb.Image(str(image))})

    return run, log


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="symprune-tables", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="the paper's tables from experiment sweeps")
    build_cmd.add_argument("directories", nargs="*", default=["outputs/experiments"], help="searched for results.json")
    build_cmd.add_argument("--wandb", help="also read finished runs of this W&B ENTITY/PROJECT (public API)")
    build_cmd.add_argument("--spec", default=str(DEFAULT_SPEC), help="table specs (YAML)")
    build_cmd.add_argument("--experiments", default="", help="comma-separated experiment names (default: all found)")
    build_cmd.add_argument("--out", default="experiments/results")
    build_cmd.add_argument("--log-wandb", metavar="PROJECT", help="log the tables and plots to this W&B project")
    pivot_cmd = commands.add_parser("pivot", help="one metric as a table of any row and column keys")
    pivot_cmd.add_argument("directories", nargs="+", help="directories searched for results.json records")
    pivot_cmd.add_argument("--rows", required=True, help="comma-separated keys labelling rows")
    pivot_cmd.add_argument("--columns", required=True, help="comma-separated keys labelling columns")
    pivot_cmd.add_argument("--metric", default="metrics.perplexity.wikitext2.pruned", help="dotted path in the record")
    pivot_cmd.add_argument("--baseline", help="dotted path of a metric shown as a first 'dense' row")
    pivot_cmd.add_argument("--digits", type=int, default=2)
    pivot_cmd.add_argument("--out", help="write the Markdown table here (default: stdout)")
    args = parser.parse_args(argv)

    records = find_records(args.directories)
    if args.command == "pivot":
        spec = {"rows": args.rows.split(","), "columns": args.columns.split(","), "metric": args.metric,
                "baseline": args.baseline, "digits": args.digits}
        text = build_table(records, spec).markdown()
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text, end="")
        return
    if args.wandb:
        records += wandb_records(args.wandb)
    run, log_to = _wandb_logger(args.log_wandb) if args.log_wandb else (None, None)
    only = [name for name in args.experiments.split(",") if name]
    for path in build(records, load_specs(args.spec), Path(args.out), only, log_to):
        print(f"wrote {path}")
    if run is not None:
        run.finish()


if __name__ == "__main__":
    main()
