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
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from symprune.errors import ConfigError
from symprune.report.pivot import (
    Table,
    build_table,
    check_single_origin,
    check_spec,
    load_specs,
    spec_name,
    table_specs,
)
from symprune.report.plots import plot_table
from symprune.report.provenance import generated_line
from symprune.report.records import Record, dotted, find_records, newest_per_config, read_exported, wandb_records
from symprune.run.sweep import configured_path

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "experiments" / "tables.yaml"
DEFAULT_RECORDS = Path("experiments") / "results" / "records"


def by_experiment(records: Sequence[Record]) -> list[tuple[str, list[Record]]]:
    """The records of each experiment (the ``experiment`` choice), in the experiments' name order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        experiment = record.value("experiment")
        if experiment:
            groups.setdefault(experiment, []).append(record)
    return sorted(groups.items())


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
    args = _parser().parse_args(argv)
    if args.command == "build":
        _build_command(args)
    elif args.command == "export":
        _export_command(args)
    elif args.command == "pivot":
        _pivot_command(args)
    else:
        report(args, "symprune-tables " + " ".join(argv if argv is not None else sys.argv[1:]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symprune-tables", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add_arguments in (_build_arguments, _export_arguments, _report_arguments, _pivot_arguments):
        add_arguments(commands)
    return parser


def _build_arguments(commands) -> None:
    build_cmd = commands.add_parser("build", help="the paper's tables from experiment sweeps")
    build_cmd.add_argument("directories", nargs="*", help="searched for results.json (default: paths.experiments, "
                                                          "outputs/experiments unless configured, unless --records is "
                                                          "given)")
    build_cmd.add_argument("--records", help="also read the exported records (*.jsonl) in this directory")
    build_cmd.add_argument("--wandb", help="also read finished runs of this W&B ENTITY/PROJECT (public API)")
    build_cmd.add_argument("--spec", default=str(DEFAULT_SPEC), help="table specs (YAML)")
    build_cmd.add_argument("--experiments", default="", help="comma-separated experiment names (default: all found)")
    build_cmd.add_argument("--out", default="experiments/results")
    build_cmd.add_argument("--log-wandb", metavar="PROJECT", help="log the tables and plots to this W&B project")
    build_cmd.add_argument("--strict", action="store_true", help="write nothing if a table's cells come from several "
                                                                 "combinations of code state and environment")


def _export_arguments(commands) -> None:
    export_cmd = commands.add_parser("export", help="the records behind the tables, as JSON lines per experiment")
    export_cmd.add_argument("directories", nargs="*", help="searched for results.json (default: paths.experiments, "
                                                           "outputs/experiments unless configured)")
    export_cmd.add_argument("--out", default="experiments/results/records")
    export_cmd.add_argument("--records", help="also keep the records already exported in this directory (a sweep "
                                              "that adds runs to a committed table); the newest of a config wins")


def _report_arguments(commands) -> None:
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


def _pivot_arguments(commands) -> None:
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


def _build_command(args: argparse.Namespace) -> None:
    """``symprune-tables build``: every file it writes names the record sources in its first line."""
    directories = args.directories or ([] if args.records else [configured_path("experiments")])
    records = find_records(directories) + (read_exported(args.records) if args.records else [])
    if args.wandb:
        records += wandb_records(args.wandb)
    run, log_to = _wandb_logger(args.log_wandb) if args.log_wandb else (None, None)
    only = [name for name in args.experiments.split(",") if name]
    sources = " ".join([*directories, *(["--records", args.records] if args.records else []),
                        *(["--wandb", args.wandb] if args.wandb else [])])
    for path in build(records, load_specs(args.spec), Path(args.out), only, log_to,
                      command=f"symprune-tables build {sources}".rstrip(), strict=args.strict):
        print(f"wrote {path}")
    if run is not None:
        run.finish()


def _export_command(args: argparse.Namespace) -> None:
    directories = args.directories or [configured_path("experiments")]
    command = f"symprune-tables export {' '.join(directories)} --out {args.out}"
    records = find_records(directories)
    if args.records:
        command += f" --records {args.records}"
        records = read_exported(args.records) + records
    for path in export(records, Path(args.out), command):
        print(f"wrote {path}")


def _pivot_command(args: argparse.Namespace) -> None:
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


if __name__ == "__main__":
    main()
