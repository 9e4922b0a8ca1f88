"""W&B end to end, offline: a two-job sweep logs to offline W&B runs, which are read back with W&B's own reader
(``wandb leet inspect``) and checked against the run records and against every key the experiment's W&B Report
(``symprune-tables report --dry-run``) filters, groups and plots by."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import QUICK, symprune

from symprune.report.tables import main as tables_main
from symprune.run.loggers import ENVIRONMENT, flatten
from symprune.run.sweep import read_sweep

EXPERIMENT = "t2_cpu"  # an experiment with a table spec, so it has a report; its model and sizes are replaced below
WANDB = str(Path(sys.executable).with_name("wandb"))
# How the report's run-level names (run set filters, ordering) appear in the run record `wandb leet inspect` prints
RUN_ATTRIBUTES = {"Group": "run_group", "JobType": "job_type", "CreatedTimestamp": "start_time"}
# The panels whose keys `report_keys` knows how to read: a new panel type must be added there first
PANELS = {"BarPlot", "ParallelCoordinatesPlot", "WeavePanelSummaryTable"}


def leet(*arguments: str) -> str:
    done = subprocess.run([WANDB, "leet", "inspect", *arguments], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def leet_available():
    done = subprocess.run([WANDB, "leet", "inspect", "--help"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "--summary" not in done.stdout:
        import wandb

        pytest.skip(f"wandb {wandb.__version__} has no `wandb leet inspect --summary` (wandb 0.31 has)")


def read_offline_run(run_dir: Path) -> dict:
    """An offline run as W&B reads it: ``--summary --json`` (state, config, summary) and the run record of
    ``--json`` (group, job type, start time), which the summary leaves out."""
    state = json.loads(leet("--summary", "--json", str(run_dir)))
    (run,) = [record["run"] for record in map(json.loads, leet("--json", str(run_dir)).splitlines())
              if record.get("type") == "run"]
    return {**state, "run": run}


def config_value(config: dict, name: str):
    """A W&B config key: a top-level key, or a dotted path into the nested config (``method.score.p``)."""
    if name in config:
        return config[name]
    value = config
    for part in name.split("."):
        assert isinstance(value, dict) and part in value, f"config key {name!r} not in the run's config"
        value = value[part]
    return value


def without_empty_dicts(value):
    """A config as W&B stores it: W&B drops keys whose value is an empty mapping (``eval.zeroshot.local: {}``)."""
    if isinstance(value, dict):
        return {key: without_empty_dicts(item) for key, item in value.items() if item != {}}
    return value


def report_keys(spec: dict) -> dict[str, set]:
    """Every key the report reads from runs, by where a run holds it: ``config`` (group-by and Config axes),
    ``summary`` (metrics, tables), ``filters`` ((run attribute, value) pairs) and ``order`` (run attributes)."""
    keys: dict[str, set] = {"config": set(), "summary": set(), "filters": set(), "order": set(), "panels": set()}

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "Config":
            keys["config"].add(node["name"])
        elif kind == "SummaryMetric":
            keys["summary"].add(node["name"])
        elif kind == "Runset":
            keys["config"].update(node.get("groupby", []))
            clauses = re.findall(r"Metric\(\"(\w+)\"\) == '([^']*)'", node["filters"])
            leftover = re.sub(r"Metric\(\"\w+\"\) == '[^']*'", "", node["filters"])
            assert clauses and not leftover.replace("and", "").strip(), f"unread filter {node['filters']!r}"
            keys["filters"].update(clauses)
            keys["order"].update(order["name"] for order in node.get("order", []))
        elif kind == "PanelGrid":
            keys["panels"].update(panel["type"] for panel in node["panels"])
        keys["summary"].update(node.get("metrics", []) if kind == "BarPlot" else [])
        if kind == "WeavePanelSummaryTable":
            keys["summary"].add(node["table_name"])
        for value in node.values():
            walk(value)

    walk(spec)
    return keys


def dry_run_report(tmp_path: Path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    tables_main(["report", EXPERIMENT, "--dry-run", "--records", str(tmp_path / "no-records"), "--out", str(out)])
    return json.loads(out.read_text())["report"]


def test_an_offline_sweep_logs_what_the_records_and_the_report_need(tiny_model_dir, assets, tmp_path, monkeypatch,
                                                                   leet_available):
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    wandb_dir = tmp_path / "wandb-home"
    wandb_dir.mkdir()
    # Run in tmp_path: the experiment's sweep directory (outputs/experiments/t2_cpu) is relative, as the report expects;
    # allow_dirty: the tests run on a working tree, which may differ from its commit
    done = symprune("-m", f"experiment={EXPERIMENT}", "model=local", f"model.pretrained={tiny_model_dir}",
                    f"paths.assets={assets}", *QUICK, "eval.perplexity.datasets=[wikitext2]", "logger=wandb",
                    "score=wanda", "sparsity=unstructured,nm_2_4", "allow_dirty=true",
                    env={"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    sweep = tmp_path / "outputs" / "experiments" / EXPERIMENT
    records = {record["config_hash"]: record
               for record in (json.loads(path.read_text()) for path in sweep.glob("*/results.json"))}
    assert len(records) == 2
    run_dirs = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2 and not list(sweep.glob("*/wandb"))  # WANDB_DIR decides where W&B writes
    runs = [read_offline_run(run_dir) for run_dir in run_dirs]

    group = read_sweep(sweep).group(sweep)
    assert {run["run"]["run_group"] for run in runs} == {group}  # one W&B group for the sweep
    for run in runs:
        assert run["state"] == "finished" and run["exit_code"] == 0 and run["project"] == "symprune"
        config, summary = run["config"], run["summary"]
        record = records.pop(config["config_hash"])
        assert run["run"]["job_type"] == EXPERIMENT and EXPERIMENT in run["tags"]
        assert run["name"] == record["logger"]["name"] and record["logger"]["group"] == group
        assert config["config"] == without_empty_dicts(record["config"]) and config["choices"] == record["choices"]
        assert config["method"] == record["method"] and config["overrides"] == record["overrides"]
        assert {key: config[key] for key in ("experiment", "model", "score", "pattern", "ratio", "refine")} == {
            "experiment": EXPERIMENT, "model": "local", "score": "wanda", "pattern": record["choices"]["sparsity"],
            "ratio": 0.5, "refine": "none"}
        metrics = flatten(record["metrics"])
        assert "perplexity/wikitext2/pruned" in metrics and "sparsity/overall" in metrics
        assert {key: summary.get(key) for key in metrics} == metrics
        assert {key: summary.get(f"time/{key}") for key in record["timings"]} == record["timings"]
        assert summary["sparsity/layers"]["nrows"] == len(record["layers"])
    assert not records  # each record has its run

    # the report of the sweep launched here filters on its group; with no sweep found, on the experiment
    for where, expected in ((tmp_path, ("Group", group)), (tmp_path / "elsewhere", ("JobType", EXPERIMENT))):
        where.mkdir(exist_ok=True)
        monkeypatch.chdir(where)
        keys = report_keys(dry_run_report(tmp_path, expected[0]))
        assert keys["panels"] and keys["panels"] <= PANELS, f"panels without a key check: {keys['panels'] - PANELS}"
        assert keys["config"] and keys["summary"] and keys["filters"] == {expected}
        for run in runs:
            for name in keys["config"]:
                assert config_value(run["config"], name) is not None, name
            assert keys["summary"] <= set(run["summary"]), keys["summary"] - set(run["summary"])
            for attribute, value in keys["filters"]:
                assert run["run"][RUN_ATTRIBUTES[attribute]] == value, (attribute, value)
            for attribute in keys["order"]:
                assert run["run"][RUN_ATTRIBUTES[attribute]], attribute
