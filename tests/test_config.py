"""Every config composes and validates; bad input is rejected, clearly, by the plan (before any weights load)."""

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import CONFIG_DIR, compose_run
from symprune.config import settings
from symprune.method import build_method
from symprune.registry import ConfigError
from symprune.runner import plan_run

GROUPS = ["model", "calibration", "score", "sparsity", "refine", "eval", "logger", "paths", "experiment"]


def group_options():
    for group in GROUPS:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_config_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("model", "local"):
        overrides.append("model.pretrained=/some/dir")
    cfg = compose_run(*overrides)
    run = settings(cfg)
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    assert 0 <= method.target_sparsity < 1 and run.model.name


def test_default_run_plan(assets):
    plan = plan_run(compose_run(f"paths.assets={assets}"))
    described = plan.method.describe()
    assert described["score"]["name"] == "symwanda"
    assert (described["score"]["input"], described["score"]["output"], described["score"]["a"]) == ("activation", "zero", 0)
    assert described["sparsity"] == {"name": "unstructured", "ratio": 0.5, "group": "row"}
    assert described["refine"] == {"name": "none"}
    assert plan.source.local and plan.source.gguf_file.endswith(".gguf")
    assert plan.needs_calibration


def test_paper_protocol_is_one_override():
    run = settings(compose_run("experiment=paper_protocol"))
    assert (run.calibration.name, run.calibration.nsamples, run.calibration.seqlen) == ("c4", 128, 2048)
    assert run.eval.perplexity.datasets == ["wikitext2"] and run.eval.perplexity.max_windows is None
    assert run.eval.perplexity.seqlen == 2048


def plan_error(*overrides) -> str:
    with pytest.raises(ConfigError) as error:
        plan_run(compose_run(*overrides))
    return str(error.value)


def tiny(directory, *overrides):
    return ("model=local", f"model.pretrained={directory}", *overrides)


def test_unknown_names_list_the_valid_ones(tiny_model_dir):
    assert "valid score names: magnitude, ria, sparsegpt, symwanda, wanda" in plan_error(
        *tiny(tiny_model_dir, "score.name=sparsegptt")
    )
    assert "valid sparsity pattern names: nm, unstructured" in plan_error(*tiny(tiny_model_dir, "sparsity.pattern=diag"))
    assert "valid refinement names: dsnot, none, r2dsnot" in plan_error(*tiny(tiny_model_dir, "refine.name=polish"))
    assert "valid datasets: c4, wikitext2" in plan_error(*tiny(tiny_model_dir, "calibration.name=pile"))
    assert "valid datasets: c4, wikitext2" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.datasets=[ptb]"))
    assert "valid dtypes: float32, float16, bfloat16" in plan_error(*tiny(tiny_model_dir, "model.dtype=float8"))
    assert "valid modes: online, offline, disabled" in plan_error(*tiny(tiny_model_dir, "logger.mode=loud"))
    for group, name in [("score", "wandaa"), ("model", "llama9"), ("sparsity", "3of4")]:
        with pytest.raises(MissingConfigException, match=f"Could not find '{group}/{name}'(.|\n)*Available options"):
            compose_run(f"{group}={name}")


def test_ranges(tiny_model_dir):
    assert "sparsity ratio 1.0 is outside [0, 1)" in plan_error(*tiny(tiny_model_dir, "sparsity.ratio=1.0"))
    assert "sparsity ratio -0.2 is outside [0, 1)" in plan_error(*tiny(tiny_model_dir, "sparsity.ratio=-0.2"))
    assert "N < M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=4", "sparsity.m=4"))
    assert "N < M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=6", "sparsity.m=4"))
    assert "positive N and M" in plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=0"))
    assert "calibration.nsamples=0 must be a positive integer" in plan_error(*tiny(tiny_model_dir, "calibration.nsamples=0"))
    assert "eval.perplexity.max_windows=-1" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.max_windows=-1"))
    assert "exceeds the model's 1024 positions" in plan_error(*tiny(tiny_model_dir, "eval.perplexity.seqlen=2048"))
    with pytest.raises(ConfigCompositionException, match="nsamples"):
        compose_run("calibration.nsamples=many")


def test_layer_not_divisible_by_m_is_named(tiny_model_dir):
    message = plan_error(*tiny(tiny_model_dir, "sparsity=nm", "sparsity.n=3", "sparsity.m=7"))
    assert "layer 'model.layers.0.self_attn.q_proj' has input width 64, which is not divisible by M=7" in message


def test_missing_local_files_are_named(tiny_model_dir, tmp_path):
    assert f"local model directory {tmp_path / 'nope'} does not exist" in plan_error(
        "model=local", f"model.pretrained={tmp_path / 'nope'}"
    )
    assert "GGUF file" in plan_error("model.gguf_file=SmolLM2-1.7B.gguf")
    assert "SmolLM2-1.7B.gguf does not exist" in plan_error("model.gguf_file=SmolLM2-1.7B.gguf")
    assert "package 'no_such_models', which is not installed" in plan_error("model.package=no_such_models")
    empty = tmp_path / "assets"
    empty.mkdir()
    message = plan_error(*tiny(tiny_model_dir, f"paths.assets={empty}"))
    assert f"offline data file {empty / 'wikitext-2' / 'wiki.valid.tokens'} does not exist" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device(tiny_model_dir):
    assert "no CUDA device is available" in plan_error(*tiny(tiny_model_dir, "device=cuda"))


def test_save_and_placement_errors(tiny_model_dir, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    assert f"save_model directory {occupied} exists and is not empty" in plan_error(
        *tiny(tiny_model_dir, f"save_model={occupied}")
    )
    assert "needs save_model" in plan_error(*tiny(tiny_model_dir, "save_semi_structured=true"))
    assert "needs the 2:4 pattern" in plan_error(
        *tiny(tiny_model_dir, f"save_model={tmp_path / 'new'}", "save_semi_structured=true", "sparsity=nm_4_8")
    )
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in plan_error(
            *tiny(tiny_model_dir, f"save_model={tmp_path / 'new'}", "save_semi_structured=true", "sparsity=nm_2_4")
        )
    assert "valid: compute, cpu, disk" in plan_error(*tiny(tiny_model_dir, "placement.activations=gpu"))
    assert "exclude each other" in plan_error(*tiny(tiny_model_dir, "placement=offload", "placement.device_map=auto"))
