"""Run identity: what changes the numbers changes the hash, nothing else does; the typed run record."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_run

from symprune.model.loading import ModelSource
from symprune.report.records import find_records
from symprune.run.identity import config_hash, run_identity
from symprune.run.plan import plan_run
from symprune.run.record import SCHEMA_VERSION, RunRecord
from symprune.run import resume

FIXTURES = REPO / "tests" / "fixtures"


def plan(model_dir, assets, *overrides):
    return plan_run(compose_run("model=local", f"model.pretrained={model_dir}", f"paths.assets={assets}", *overrides))


def test_identical_runs_hash_alike_wherever_the_files_are(tiny_model_dir, assets, tmp_path):
    first = plan(tiny_model_dir, assets)
    assert plan(tiny_model_dir, assets).config_hash == first.config_hash
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    moved_assets = shutil.copytree(assets, tmp_path / "assets", ignore=shutil.ignore_patterns("hellaswag", "boolq"))
    assert plan(copy, moved_assets).config_hash == first.config_hash
    # settings that change no number
    unchanged = plan(tiny_model_dir, assets, "logger=none", "progress=false", "placement=offload", "save_masks=false",
                     f"paths.cache={tmp_path / 'cache'}", "resume=false")
    assert unchanged.config_hash == first.config_hash
    assert plan(tiny_model_dir, assets, "score=ria").config_hash != first.config_hash
    assert plan(tiny_model_dir, assets, "score=ria_l2", "score.p=2").config_hash == \
        plan(tiny_model_dir, assets, "score=ria", "score.p=2.0").config_hash


def test_hub_text_and_local_text_are_other_runs(tiny_model_dir, assets):
    local = plan(tiny_model_dir, assets)
    hub = plan(tiny_model_dir, "null")
    assert hub.identity["data"]["calibration/wikitext2"] == {"hub": "Salesforce/wikitext wikitext-2-raw-v1 train"}
    assert local.identity["data"]["calibration/wikitext2"]["file"] == "wikitext-2/wiki.valid.tokens"  # validation split
    assert hub.identity["data"]["evaluation/wikitext2"] == {"hub": "Salesforce/wikitext wikitext-2-raw-v1 test"}
    assert hub.config_hash != local.config_hash


def test_changed_text_is_another_run(tiny_model_dir, assets, tmp_path):
    copy = shutil.copytree(assets, tmp_path / "assets", ignore=shutil.ignore_patterns("hellaswag", "boolq", "arc_*"))
    with (copy / "wikitext-2" / "wiki.valid.tokens").open("a") as stream:
        stream.write(" one more line\n")
    assert plan(tiny_model_dir, copy).config_hash != plan(tiny_model_dir, assets).config_hash


def test_device_type_and_dtype_are_part_of_the_identity(tiny_model_dir, assets):
    base = plan(tiny_model_dir, assets)
    identity = dict(base.identity)
    on_cuda = run_identity(
        compose_run_container(tiny_model_dir, assets), identity["method"], identity["model"], "cuda",
        identity["numerics"], identity["data"], None, None,
    )
    assert config_hash(on_cuda) != base.config_hash
    assert config_hash({**on_cuda, "device": "cpu"}) == base.config_hash
    assert plan(tiny_model_dir, assets, "model.dtype=bfloat16").config_hash != base.config_hash


def compose_run_container(model_dir, assets):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_run("model=local", f"model.pretrained={model_dir}", f"paths.assets={assets}"),
                                  resolve=True)


def test_other_gguf_files_are_other_models(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF one")
    (tmp_path / "b.gguf").write_bytes(b"GGUF two")
    (tmp_path / "c.gguf").write_bytes(b"GGUF one")
    a, b, c = (ModelSource(str(tmp_path), name, True).identity() for name in ("a.gguf", "b.gguf", "c.gguf"))
    assert a != b and a == c  # the bytes decide, not the name
    assert ModelSource("org/model", None, False, revision="abc").identity() != ModelSource("org/model", None, False).identity()


def test_records_without_an_identity_are_not_reused_and_the_log_says_so(tmp_path, caplog):
    old = tmp_path / "old" / "0"
    old.mkdir(parents=True)
    shutil.copy(FIXTURES / "results_schema1.json", old / "results.json")
    recorded = json.loads((old / "results.json").read_text())["config_hash"]
    with caplog.at_level(logging.INFO, logger="symprune"):
        assert resume.find_records(tmp_path / "old", recorded) == []
    assert "1 run records under" in caplog.text and "not reused" in caplog.text


def test_a_schema_1_record_reads_as_todays(tmp_path):
    record = RunRecord.read(FIXTURES / "results_schema1.json")
    assert record.schema_version == 1 and record.identity is None and record.mask_sha256 is None
    assert record.data["evaluation/c4"]["origin"].startswith("local /data/symprune-assets/c4_like")
    assert record.metrics["perplexity"]["wikitext2"]["pruned"] == pytest.approx(47.46436, abs=1e-4)
    directory = tmp_path / "records" / "0"
    directory.mkdir(parents=True)
    shutil.copy(FIXTURES / "results_schema1.json", directory / "results.json")
    (read,) = find_records([tmp_path / "records"])
    assert read.value("score") == "wanda" and read.value("calibration.nsamples") == 32


def test_a_run_writes_a_full_record(tiny_model_dir, assets, tmp_path):
    from test_cli import symprune, tiny

    done = symprune(*tiny(tiny_model_dir, assets, tmp_path, "logger=none", "eval.perplexity.datasets=[wikitext2]",
                          f"paths.cache={tmp_path / 'cache'}"))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    record = RunRecord.from_json(data)
    assert set(data) == {field for field in RunRecord.__dataclass_fields__}  # written and read by one schema
    assert record.schema_version == SCHEMA_VERSION
    assert record.config_hash == config_hash(record.identity)
    assert len(record.model["weights_sha256"]) == 64
    calibration = record.data["calibration/wikitext2"]
    assert (calibration["samples"], calibration["seqlen"], calibration["seed"]) == (4, 64, 0)
    assert len(calibration["tokens_sha256"]) == 64
    evaluation = record.data["evaluation/wikitext2"]
    assert evaluation["tokens"] > 100_000 and evaluation["seqlen"] == 64 and evaluation["max_windows"] == 3
    assert record.versions["torch"] and "commit" in record.git
    assert record.caches["perplexity_dense"]["wikitext2"]["from_cache"] is False
    assert record.metrics["perplexity"]["wikitext2"]["dense"] > 1


def test_the_dense_perplexity_is_measured_once(tiny_model_dir, assets, tmp_path):
    from test_cli import symprune, tiny

    cache = f"paths.cache={tmp_path / 'cache'}"
    records = []
    for run, overrides in (("a", ["score=wanda"]), ("b", ["score=magnitude"]), ("c", ["eval.perplexity.max_windows=2"])):
        done = symprune(*tiny(tiny_model_dir, assets, tmp_path / run, "logger=none", "eval.perplexity.datasets=[wikitext2]",
                              cache, *overrides))
        assert done.returncode == 0, done.stderr[-3000:]
        records.append(json.loads((tmp_path / run / "results.json").read_text()))
    first, second, other_protocol = records
    assert second["caches"]["perplexity_dense"]["wikitext2"]["from_cache"] is True
    assert second["metrics"]["perplexity"]["wikitext2"]["dense"] == first["metrics"]["perplexity"]["wikitext2"]["dense"]
    assert other_protocol["caches"]["perplexity_dense"]["wikitext2"]["from_cache"] is False
    entries = list(Path(tmp_path / "cache" / "perplexity_dense").glob("*.json"))
    assert len(entries) == 2


def test_git_state_tells_modified_code_apart(tmp_path):
    """A checkout's code state: clean; a modified file; the same plus an untracked file; outside symprune/,
    conf/ and hydra_plugins/ nothing counts."""
    from symprune.provenance import git_state, symprune_version

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "symprune").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "symprune" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("hello\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False and clean["diff_sha256"] is None and len(clean["commit"]) == 40
    assert symprune_version("0.1.0", clean) == f"0.1.0+g{clean['commit'][:12]}"
    (tmp_path / "README.md").write_text("changed\n")
    assert git_state(tmp_path) == clean
    (tmp_path / "symprune" / "a.py").write_text("x = 2\n")
    modified = git_state(tmp_path)
    (tmp_path / "conf" / "new.yaml").write_text("a: 1\n")
    with_untracked = git_state(tmp_path)
    assert modified["dirty"] and with_untracked["dirty"]
    assert len({modified["diff_sha256"], with_untracked["diff_sha256"]}) == 2
    assert symprune_version("0.1.0", modified) == f"0.1.0+g{clean['commit'][:12]}.d{modified['diff_sha256'][:8]}"
    assert git_state(tmp_path / "symprune" / "..")["diff_sha256"] == with_untracked["diff_sha256"]


def test_an_experiment_sweep_refuses_a_modified_checkout():
    from symprune.errors import ConfigError
    from symprune.run.sweep import check_clean_checkout, is_experiment_sweep

    assert is_experiment_sweep(["score=ria", "experiment=t2_cpu"]) and not is_experiment_sweep(["score=ria"])
    check_clean_checkout({"commit": "a" * 40, "dirty": False, "diff_sha256": None})
    with pytest.raises(ConfigError, match="allow_dirty=true"):
        check_clean_checkout({"commit": "a" * 40, "dirty": True, "diff_sha256": "b" * 64})


def test_the_machines_numerics_are_part_of_the_identity(tiny_model_dir, assets):
    base = plan(tiny_model_dir, assets)
    assert base.identity["numerics"] == {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                         "threads": torch.get_num_threads()}
    other = {**base.identity, "numerics": {**base.identity["numerics"], "threads": base.identity["numerics"]["threads"] + 1}}
    assert config_hash(other) != base.config_hash
