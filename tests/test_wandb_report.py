"""symprune-tables report: the W&B Report of an experiment, checked offline through its --dry-run spec."""

import json

import pytest
from test_tables import record, write

from symprune.report.pivot import build_table, load_specs
from symprune.report.records import find_records
from symprune.report.tables import export, main
from symprune.run.axes import ablation_axes, summary_key
from symprune.run.loggers import flatten
from symprune.run.sweep import SweepInfo

AXES = ["score", "model", "pattern", "ratio", "refine"]  # t2's rows and columns (score; model, sparsity), then the rest


def dry_run(tmp_path, *arguments):
    out = tmp_path / "report.json"
    main(["report", *arguments, "--dry-run", "--out", str(out)])
    spec = json.loads(out.read_text())
    assert spec["generated_by"].startswith("symprune-tables report ")
    return spec["report"]


def panels(report):
    (grid,) = [block for block in report["blocks"] if block["type"] == "PanelGrid"]
    return grid


def test_t2_report_has_the_runs_bar_charts_parallel_coordinates_and_layer_table(tmp_path):
    report = dry_run(tmp_path, "t2", "--entity", "team", "--project", "prune", "--group", "t2-20261201-101500",
                     "--records", str(tmp_path / "none"))
    assert report["type"] == "Report" and report["entity"] == "team" and report["project"] == "prune"
    assert report["title"] == "symprune: Table 2: WikiText-2 perplexity at 50% sparsity (t2)"
    grid = panels(report)
    (runset,) = grid["runsets"]
    assert (runset["entity"], runset["project"], runset["groupby"]) == ("team", "prune", ["score"])
    assert runset["filters"] == "Metric(\"Group\") == 't2-20261201-101500'"
    bars = [panel for panel in grid["panels"] if panel["type"] == "BarPlot"]
    assert [bar["groupby"] for bar in bars] == [{"type": "Config", "name": axis} for axis in AXES]
    assert all(bar["metrics"] == ["perplexity/wikitext2/pruned"] for bar in bars)
    (parallel,) = [panel for panel in grid["panels"] if panel["type"] == "ParallelCoordinatesPlot"]
    assert [column["metric"] for column in parallel["columns"]] == [
        *({"type": "Config", "name": axis} for axis in AXES), {"type": "SummaryMetric", "name": "perplexity/wikitext2/pruned"}]
    (layers,) = [panel for panel in grid["panels"] if panel["type"] == "WeavePanelSummaryTable"]
    assert layers["table_name"] == "sparsity/layers"


def test_the_report_reads_the_keys_runs_log():
    """The axes and the metric the panels use are the config keys and summary keys a run logs."""
    logged_axes = ablation_axes({"experiment": "t2", "model": "llama2_7b", "score": "wanda", "sparsity": "nm_2_4",
                                 "refine": "none"}, 0.5)
    assert set(AXES) <= set(logged_axes) and logged_axes["pattern"] == "nm_2_4" and logged_axes["ratio"] == 0.5
    logged_metrics = flatten({"perplexity": {"wikitext2": {"pruned": 9.0}},
                              "zeroshot": {"pruned": {"piqa": {"acc": 0.6}, "mean": {"acc": 0.6}}}})
    assert summary_key("metrics.perplexity.wikitext2.pruned") in logged_metrics
    assert summary_key("metrics.zeroshot.pruned.*.acc") in logged_metrics


def test_the_report_shows_the_table_of_the_exported_records(tmp_path):
    for index, (score, ppl) in enumerate([("wanda", 10.0), ("ria", 9.5), ("stochria", 9.25)]):
        write(tmp_path / "runs" / str(index), record(score, "unstructured", ppl, experiment="t2_cpu"))
    records = find_records([tmp_path / "runs"])
    export(records, tmp_path / "records", "symprune-tables export")
    report = dry_run(tmp_path, "t2_cpu", "--records", str(tmp_path / "records"))
    (table,) = [block for block in report["blocks"] if block["type"] == "MarkdownBlock"]
    assert table["text"] == build_table(records, load_specs("experiments/tables.yaml")["t2"]).markdown()
    assert "| stochria | 9.25 |" in table["text"]
    assert panels(report)["runsets"][0]["filters"] == "Metric(\"JobType\") == 't2_cpu'"  # no sweep launched here


def test_the_sweep_group_is_found_in_the_experiments_sweep_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "outputs" / "experiments" / "t3_cpu"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"overrides": ["experiment=t3_cpu"], "started": "2026-12-01T10:15:00"}))
    from conftest import REPO

    report = dry_run(tmp_path, "t3_cpu", "--spec", str(REPO / "experiments" / "tables.yaml"))
    group = SweepInfo(["experiment=t3_cpu"], "2026-12-01T10:15:00").group(sweep)
    assert group == "t3_cpu-20261201-101500"
    assert panels(report)["runsets"][0]["filters"] == f"Metric(\"Group\") == '{group}'"


@pytest.mark.parametrize("arguments, message", [
    (["t9", "--dry-run"], "unknown experiment 't9'; experiments: a1, a1_cpu"),
    (["t2"], "saving a report needs a W&B entity"),
])
def test_bad_arguments_are_refused_before_anything_is_built(arguments, message, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *arguments])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
