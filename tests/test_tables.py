import json

from symprune.tables import find_records, main


def write(directory, score, sparsity, ppl, nsamples=32, overrides=(), dense=None):
    directory.mkdir(parents=True)
    record = {
        "choices": {"score": score, "sparsity": sparsity},
        "config": {"calibration": {"nsamples": nsamples}},
        "overrides": [f"score={score}", *overrides],
        "metrics": {"perplexity": {"wikitext2": {"pruned": ppl, **({"dense": dense} if dense else {})}}},
    }
    (directory / "results.json").write_text(json.dumps(record))


def test_pivot_markdown_with_missing_cells(tmp_path, capsys):
    write(tmp_path / "a" / "0", "wanda", "unstructured", 47.251)
    write(tmp_path / "a" / "1", "wanda", "nm_2_4", 80.0)
    write(tmp_path / "b" / "0", "ria", "unstructured", 45.5, nsamples=64)
    assert len(find_records([tmp_path])) == 3
    main([str(tmp_path), "--rows", "score,calibration.nsamples", "--columns", "sparsity"])
    assert capsys.readouterr().out == (
        "| score / calibration.nsamples | unstructured | nm_2_4 |\n"
        "|---|---|---|\n"
        "| wanda, 32 | 47.25 | 80.00 |\n"
        "| ria, 64 | 45.50 | – |\n"
    )


def test_override_labels_and_baseline_row(tmp_path, capsys):
    write(tmp_path / "0", "stochria", "nm_2_4", 60.0, dense=20.0)
    write(tmp_path / "1", "stochria", "nm_2_4", 61.0, overrides=["score.beta=0.5"])
    write(tmp_path / "2", "wanda", "unstructured", 40.0)
    main([str(tmp_path), "--rows", "score,overrides:score.", "--columns", "sparsity",
          "--baseline", "metrics.perplexity.wikitext2.dense"])
    assert capsys.readouterr().out == (
        "| score / overrides:score. | nm_2_4 | unstructured |\n"
        "|---|---|---|\n"
        "| dense | 20.00 | – |\n"
        "| stochria | 60.00 | – |\n"
        "| stochria, score.beta=0.5 | 61.00 | – |\n"
        "| wanda | – | 40.00 |\n"
    )
