"""Synthetic models (model=synthetic) and token corpora (calibration=random, token files): shapes of
real models, weights transformers' own model computes alike, whole runs, and every bad value."""

from __future__ import annotations

import math

import numpy
import pytest
import torch
from conftest import compose_run
from transformers import AutoModelForCausalLM

from symprune.config import settings
from symprune.errors import ConfigError
from symprune.model.placement import Placement
from symprune.model.structure import linear_shapes, skeleton
from symprune.model.synthetic import TESTED_ARCHITECTURES, synthetic_model, weight_std
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute, load_inputs

CPU = torch.device("cpu")
TOKENS = ("calibration=random", "eval=perplexity_random")
SMALL = ("calibration.nsamples=4", "calibration.seqlen=32", "eval.perplexity.seqlen=32", "eval.perplexity.max_windows=2",
         "logger=none", "progress=false")
# Parameter counts of the released models (their config.json on the Hugging Face Hub)
REAL_PARAMETERS = {
    "opt_1_3b": 1_315_758_080,
    "llama2_7b": 6_738_415_616,
    "mistral_7b": 7_241_732_096,
    "llama3_8b": 8_030_261_248,
    "llama2_13b": 13_015_864_320,
    "llama2_70b": 68_976_648_192,
}


def spec(*overrides: str):
    return synthetic_model(settings(compose_run("model=synthetic", *overrides)).model)


def plan(*overrides: str):
    return plan_run(compose_run("model=synthetic", *TOKENS, *SMALL, *overrides))


@pytest.mark.parametrize("size", sorted(REAL_PARAMETERS))
def test_presets_have_the_real_models_shapes(size):
    model = skeleton(spec(f"model.size={size}").config())  # on the meta device: no memory
    assert sum(parameter.numel() for parameter in model.parameters()) == REAL_PARAMETERS[size]


def test_explicit_dimensions_replace_the_presets():
    shapes = linear_shapes(skeleton(spec("model.size=llama2_7b", "model.shape.num_layers=2").config()))
    assert len(shapes) == 2 * 7
    assert shapes["model.layers.1.mlp.down_proj"] == (4096, 11008) and shapes["model.layers.0.self_attn.k_proj"] == (4096, 4096)
    custom = spec("model.size=null", "model.architecture=qwen2", "model.shape.hidden_size=96", "model.shape.intermediate_size=160",
                  "model.shape.num_layers=3", "model.shape.num_heads=6", "model.shape.num_kv_heads=2",
                  "model.shape.vocab_size=100", "model.shape.max_positions=64")
    shapes = linear_shapes(skeleton(custom.config()))
    assert shapes["model.layers.2.self_attn.k_proj"] == (32, 96) and shapes["model.layers.2.mlp.up_proj"] == (160, 96)
    assert custom.config().vocab_size == 100 and custom.config().max_position_embeddings == 64


@pytest.mark.parametrize("architecture", TESTED_ARCHITECTURES)
def test_synthetic_weights_compute_what_transformers_own_model_computes(architecture):
    """The model is transformers' own with these weights: buffers (rotary tables) and tied embeddings are
    right, norms start at 1, biases at 0, and matrices are seeded draws of N(0, initializer_range)."""
    synthetic = spec(f"model.architecture={architecture}")
    model = synthetic.build(torch.float32, Placement(CPU))
    reference = AutoModelForCausalLM.from_config(synthetic.config()).eval()
    reference.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)
    if model.config.tie_word_embeddings:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            assert not parameter.any(), name
        elif parameter.dim() == 1:
            assert (parameter == 1).all(), name
        else:
            assert abs(float(parameter.std()) - weight_std(synthetic.config())) < 0.005, name


def test_the_seed_decides_the_weights():
    first, again, other = (spec(f"model.seed={seed}").build(torch.float32, Placement(CPU)) for seed in (0, 0, 1))
    weights = [dict(model.named_parameters())["model.layers.0.mlp.up_proj.weight"] for model in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("architecture", TESTED_ARCHITECTURES)
def test_a_synthetic_run_prunes_evaluates_and_says_it_is_synthetic(architecture):
    record = execute(plan(f"model.architecture={architecture}", "score=ria"), NoLogger())
    model = record.model
    assert model["synthetic"] is True and model["architecture"] == architecture and model["size"] == "tiny"
    assert model["shape"]["hidden_size"] == 64 and model["source"].startswith(f"synthetic {architecture} (tiny shape)")
    assert record.data["calibration/random"]["origin"] == "random token ids, uniform over 256, seed 0"
    assert record.metrics["sparsity"]["overall"] >= 0.5
    assert math.isfinite(record.metrics["perplexity"]["random"]["pruned"])


def test_a_synthetic_model_under_a_device_map_is_built_by_accelerates_map():
    record = execute(plan("placement=device_map", "device=cpu"), NoLogger())
    assert record.model["placement"]["device_map"] == "auto" and record.metrics["sparsity"]["overall"] == 0.5


def test_random_tokens_are_seeded_and_within_the_vocabulary():
    inputs = load_inputs(plan("calibration.seed=3"))
    again = load_inputs(plan("calibration.seed=3"))
    other = load_inputs(plan("calibration.seed=4"))
    assert inputs.tokenizer is None and inputs.calibration.shape == (4, 32)
    assert torch.equal(inputs.calibration, again.calibration) and not torch.equal(inputs.calibration, other.calibration)
    assert inputs.streams["random"].shape == (1, 2 * 32) and torch.equal(inputs.streams["random"], other.streams["random"])
    assert 0 <= int(inputs.calibration.min()) and int(inputs.calibration.max()) < 256


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_token_files_calibrate_and_evaluate(tmp_path, suffix):
    ids = torch.arange(200) % 256
    path = tmp_path / f"my_ids{suffix}"
    torch.save(ids, path) if suffix == ".pt" else numpy.save(path, ids.numpy().astype(numpy.int32))
    run_plan = plan(f"calibration.name={path}", f"eval.perplexity.datasets=[{path}]")
    inputs = load_inputs(run_plan)
    assert inputs.calibration.shape == (4, 32) and list(inputs.streams) == ["my_ids"]
    for window in inputs.calibration:  # windows of the file's stream
        start = int(window[0])
        assert torch.equal(window, ids[start : start + 32])
    assert torch.equal(inputs.streams["my_ids"], ids.reshape(1, -1))
    assert inputs.origins["evaluation/my_ids"] == f"token file {path} (200 tokens)"
    record = execute(run_plan, NoLogger())
    assert record.metrics["perplexity"]["my_ids"]["windows"] == 2


@pytest.mark.parametrize(
    "content,message",
    [
        (torch.tensor([1, 2, 300] * 100), "has token id 300, beyond the model's vocabulary of 256"),
        (torch.tensor([1, -2, 3] * 100), "has negative token ids"),
        (torch.rand(300), "must hold one integer array of token ids"),
    ],
)
def test_bad_token_files_stop_the_run_before_the_model_loads(tmp_path, content, message):
    torch.save(content, tmp_path / "ids.pt")
    with pytest.raises(ConfigError, match=message):
        load_inputs(plan(f"calibration.name={tmp_path / 'ids.pt'}"))


BAD = [
    (["model.size=llama9"], "unknown model.size 'llama9'; valid sizes: tiny, opt_1_3b, llama2_7b, mistral_7b, llama3_8b, llama2_13b, llama2_70b"),
    (["model.architecture=lama"], r"unknown model.architecture 'lama' \(did you mean llama.*tested with symprune: gpt2, gpt_neox, llama"),
    (["model.shape.num_heads=5"], "model.shape.num_heads=5 does not divide model.shape.hidden_size=64"),
    (["model.shape.num_kv_heads=3"], "model.shape.num_kv_heads=3 does not divide model.shape.num_heads=4"),
    (["model.shape.vocab_size=0"], r"model.shape.vocab_size=0 must be a positive integer"),
    (["model.size=null", "model.architecture=llama", "model.shape.hidden_size=64"],
     "needs every dimension: model.shape.intermediate_size, model.shape.num_layers, model.shape.num_heads"),
    (["model.architecture=opt", "model.shape.num_kv_heads=2"], "opt has no grouped-query attention"),
    (["model.pretrained=some/model"], "needs exactly one of model.pretrained"),
    (["calibration=wikitext2"], "the calibration data 'wikitext2' is text, but model 'synthetic' is synthetic and has no tokenizer"),
    (["eval=perplexity"], "the evaluation data 'wikitext2' is text"),
    (["eval.perplexity.max_windows=null"], "a random evaluation stream has no length of its own"),
    (["eval.zeroshot.tasks=[piqa]"], "zero-shot tasks need a tokenizer"),
    (["calibration.name=/nonexistent/ids.pt"], "token file /nonexistent/ids.pt does not exist"),
    (["calibration.name=wiki"], r"unknown dataset 'wiki'; valid datasets: c4, wikitext2, random .*a token file"),
    (["eval.perplexity.datasets=[random,random]"], "eval.perplexity.datasets names random more than once"),
    (["eval.perplexity.seqlen=4096"], "eval.perplexity.seqlen=4096 exceeds the model's 2048 positions"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(overrides) for overrides, _ in BAD])
def test_bad_values_are_named_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(*overrides)


def test_synthetic_settings_on_a_real_model_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model.seed, model.shape.hidden_size only apply to synthetic models"):
        plan_run(compose_run("model=local", f"model.pretrained={tmp_path}", "model.seed=1", "model.shape.hidden_size=8"))
