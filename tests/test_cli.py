"""The ``symprune`` command end to end, on a tiny local model with the real tokenizer and offline text."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = [
    "calibration.nsamples=4",
    "calibration.seqlen=64",
    "eval.perplexity.seqlen=64",
    "eval.perplexity.max_windows=3",
    "eval.perplexity.datasets=[wikitext2,c4]",
    "progress=false",
]


def symprune(*args, env=None, console_script=False, cwd=None):
    command = [str(Path(sys.executable).with_name("symprune"))] if console_script else [sys.executable, "-m", "symprune"]
    environment = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=environment, timeout=600, cwd=cwd)


def tiny(model_dir, assets, run_dir, *overrides):
    return ["model=local", f"model.pretrained={model_dir}", f"paths.assets={assets}", f"hydra.run.dir={run_dir}", *QUICK, *overrides]


def wandb_run_dir(run_dir: Path) -> Path:
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    return offline


def test_run_writes_record_and_wandb_offline(tiny_model_dir, assets, tmp_path):
    done = symprune(*tiny(tiny_model_dir, assets, tmp_path), console_script=True)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())

    assert record["config"]["score"]["input"] == "activation" and record["choices"]["score"] == "wanda"
    assert record["method"]["sparsity"] == {"name": "unstructured", "ratio": 0.5, "group": "row"}
    for name in ("wikitext2", "c4"):
        values = record["metrics"]["perplexity"][name]
        assert values["windows"] == 3 and values["seqlen"] == 64
        assert math.isfinite(values["dense"]) and math.isfinite(values["pruned"]) and values["dense"] > 1
        assert values["pruned"] != values["dense"]
    origin = record["data"]["evaluation/c4"]["origin"]
    assert "local" in origin and "C4-like" in origin
    assert record["metrics"]["sparsity"] == {"overall": 0.5, "target": 0.5, "allocation": "uniform", "blocks": [
        {"block": 0, "target": 0.5, "achieved": 0.5}, {"block": 1, "target": 0.5, "achieved": 0.5}]}
    assert len(record["layers"]) == 14 and all(layer["sparsity"] == layer["target"] == 0.5 for layer in record["layers"])
    assert [layer["block"] for layer in record["layers"]] == [0] * 7 + [1] * 7
    assert {"calibration_forward", "scoring", "propagation", "evaluation"} <= set(record["timings"])
    assert record["versions"]["torch"] and {"commit", "dirty", "diff_sha256"} <= set(record["git"])
    if record["git"]["commit"]:  # a checkout: the version names its commit (and diff)
        label = f"0.1.0+g{record['git']['commit'][:12]}"
        modified = f".d{record['git']['diff_sha256'][:8]}" if record["git"]["dirty"] else ""
        assert record["versions"]["symprune"] == label + modified
    assert record["environment"]["threads"] == record["identity"]["numerics"]["threads"] >= 1
    assert record["environment"]["cpu_capability"] == record["identity"]["numerics"]["cpu_capability"]
    assert record["environment"]["device"] == "cpu" and record["environment"]["dtype"] == "float32"
    assert record["logger"]["backend"] == "wandb" and record["logger"]["group"] is None
    assert "perplexity wikitext2 (3 windows of 64 tokens): dense" in done.stderr + done.stdout

    other = symprune(*tiny(tiny_model_dir, assets, tmp_path, "score=magnitude", "logger=none"))
    assert other.returncode == 2 and "is the record of another config" in other.stderr + other.stdout
    assert json.loads((tmp_path / "results.json").read_text()) == record  # kept, masks too

    offline = wandb_run_dir(tmp_path)
    (table_file,) = offline.glob("files/media/table/sparsity/layers_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["layer", "block", "d_out", "d_in", "zeros", "numel", "target", "sparsity"]
    assert len(table["data"]) == 14
    (blocks_file,) = offline.glob("files/media/table/sparsity/blocks_*.table.json")
    assert json.loads(blocks_file.read_text())["data"] == [[0, 0.5, 0.5], [1, 0.5, 0.5]]
    log = next(offline.glob("run-*.wandb")).read_bytes()
    for key in ("perplexity/wikitext2/pruned", "perplexity/c4/dense", "sparsity/overall", "time/scoring", "calibration"):
        assert key.encode() in log, key


def wandb_run_settings(offline_run: Path) -> tuple[dict, str, list[str]]:
    """The config, job type and tags an offline W&B run logged, read from its transaction log: a LevelDB-style log (a 7-byte
    W&B header, then 32 KiB blocks of chunks with a 7-byte header: CRC, length, type) of protobuf records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, position, pending, config = next(offline_run.glob("run-*.wandb")).read_bytes(), 32768, 7, b"", {}
    job_type, tags = "", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            if record.HasField("config"):
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            if record.HasField("run"):
                config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
                job_type, tags = record.run.job_type, list(record.run.tags)
        elif kind == 0:
            break
    return config, job_type, tags


def test_multirun_jobs_share_a_wandb_group(tiny_model_dir, assets, tmp_path):
    args = tiny(tiny_model_dir, assets, tmp_path / "unused", "eval.perplexity.datasets=[wikitext2]")
    done = symprune("-m", *args, "score=wanda,magnitude", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert [r["choices"]["score"] for r in records] == ["magnitude", "wanda"]  # directories named by what they vary
    (group,) = {r["logger"]["group"] for r in records}
    assert re.fullmatch(r"sweep-\d{8}-\d{6}", group)  # the sweep directory's name and the sweep's start
    for job, record in zip(sorted(path.parent for path in (tmp_path / "sweep").glob("*/results.json")), records):
        assert group.encode() in next(wandb_run_dir(job).glob("run-*.wandb")).read_bytes()
        config, job_type, tags = wandb_run_settings(wandb_run_dir(job))
        assert job_type == "quick" and tags == ["quick"]  # the experiment's name
        # the ablation axes are top-level config keys; the resolved config and the method sit beneath
        assert {key: config[key] for key in ("model", "score", "pattern", "ratio", "refine", "experiment")} == {
            "model": "local", "score": record["choices"]["score"], "pattern": "unstructured", "ratio": 0.5,
            "refine": "none", "experiment": "quick"}
        assert config["config"]["calibration"]["nsamples"] == 4 and config["method"] == record["method"]
        assert config["config_hash"] == record["config_hash"]


def test_failed_run_leaves_no_record(tiny_model_dir, assets, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for item in tiny_model_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    run_dir = tmp_path / "run"
    done = symprune(*tiny(broken, assets, run_dir, "logger=none"))
    assert done.returncode != 0
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.glob("*results*"))


def test_config_error_exits_before_work(tiny_model_dir, assets, tmp_path):
    done = symprune(*tiny(tiny_model_dir, assets, tmp_path, "score.name=wandaa"))
    assert done.returncode == 2
    assert "unknown score 'wandaa'; valid score names: magnitude, ria, sparsegpt, sparsegpt_saliency, symwanda, wanda" in done.stderr + done.stdout
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "wandb").exists()


OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_hub_model_while_offline_is_a_clear_error(tmp_path):
    done = symprune("model=opt_125m", f"hydra.run.dir={tmp_path}", "logger=none", env=OFFLINE)
    assert done.returncode == 2
    output = done.stderr + done.stdout
    assert "model 'facebook/opt-125m' is not in the local Hugging Face cache" in output
    assert "HF_HUB_OFFLINE is set" in output


def test_hub_data_while_offline_is_a_clear_error(tiny_model_dir, tmp_path):
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "empty-cache")}
    done = symprune(*tiny(tiny_model_dir, "null", tmp_path, "logger=none"), env=env)
    assert done.returncode == 2
    output = done.stderr + done.stdout
    assert "cannot load WikiText-2 raw train split from the Hugging Face Hub" in output
    assert "SYMPRUNE_ASSETS" in output
    assert not (tmp_path / "results.json").exists()


def test_saved_model_matches_the_record(tiny_model_dir, assets, tmp_path):
    """save_model writes a directory plain transformers loads; its sparsity and perplexity are the run's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from symprune import data
    from symprune.evaluate.perplexity import perplexity

    saved = tmp_path / "pruned-model"
    done = symprune(*tiny(tiny_model_dir, assets, tmp_path / "run", "logger=none", "placement=offload",
                          "eval.perplexity.datasets=[wikitext2]", f"save_model={saved}"))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["saved_model"] == str(saved) and record["model"]["placement"]["offload_blocks"] is True
    model = AutoModelForCausalLM.from_pretrained(saved).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    for layer in record["layers"]:
        assert int((model.get_submodule(layer["name"]).weight == 0).sum()) == layer["zeros"]
    tokens, _ = data.evaluation_ids("wikitext2", tokenizer, 64, str(assets))
    reloaded = perplexity(model, tokens, 64, max_windows=3, progress=False).perplexity
    assert reloaded == pytest.approx(record["metrics"]["perplexity"]["wikitext2"]["pruned"], rel=1e-6)


def test_hydras_settings_print_resolved_against_the_runs_paths(tmp_path):
    """The command docs/configuration.md gives for where a run or sweep writes: every ${paths.*} resolved."""
    done = symprune("--cfg", "all", "--resolve", "--package", "hydra", "experiment=t2_cpu",
                    f"paths.output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert f"dir: {tmp_path}/experiments/t2_cpu" in printed and f"dir: {tmp_path}/runs/" in printed
    assert "${" not in printed
