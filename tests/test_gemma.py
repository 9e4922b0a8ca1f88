"""The real Gemma-3-270M, a second model family (Gemma 3: one key-value head, q/k norms, sandwich norms,
sliding-window and full-attention blocks, a tied 262k vocabulary), on the offline WikiText-2 text."""

import copy

import pytest
from conftest import compose_run
from transformers import AutoModelForCausalLM

from symprune import data
from symprune.evaluate.perplexity import perplexity
from symprune.files import file_sha256
from symprune.model.saving import save_pruned
from symprune.model.structure import linear_shapes
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method

pytestmark = pytest.mark.real_model

GGUF = "gemma-3-270m-q4_k_m.gguf"
PUBLISHED_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
EVAL_SEQLEN, EVAL_WINDOWS = 512, 2
CALIBRATION = dict(nsamples=8, seqlen=256, seed=0)
FIRST_BLOCKS = 6  # five sliding-window blocks, then the first full-attention one


def test_the_model_is_gemma3_assembled_from_its_packages(gemma3):
    model, tokenizer, directory = gemma3
    config = model.config
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads, config.vocab_size) == (18, 640, 1, 262144)
    assert {"sliding_attention", "full_attention"} == set(config.layer_types)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert file_sha256(directory / GGUF) == PUBLISHED_SHA256
    assert (directory / "GEMMA_TERMS.html").is_file() and (directory / "NOTICE.md").is_file()
    layers = linear_shapes(model)
    assert len(layers) == 18 * 7 and not any("embed" in name or "lm_head" in name for name in layers)
    assert tokenizer("Hello").input_ids[0] == tokenizer.bos_token_id == 2


@pytest.fixture(scope="module")
def gemma_inputs(gemma3, assets):
    """WikiText-2 test text as a stream with one BOS at its start (the references' protocol) and without any
    (bos=window: a BOS goes before every window), and calibration samples that start with a BOS."""
    _, tokenizer, _ = gemma3
    streams = {mode: data.evaluation_ids("wikitext2", tokenizer, EVAL_SEQLEN, str(assets), bos=mode)[0]
               for mode in ("stream", "window")}
    calibration, _ = data.calibration_ids("wikitext2", tokenizer, assets=str(assets), bos="window", **CALIBRATION)
    return streams, calibration


def ppl(model, streams, mode="window", bos_token_id=2):
    return perplexity(model, streams[mode], EVAL_SEQLEN, max_windows=EVAL_WINDOWS, progress=False,
                      bos_token_id=bos_token_id if mode == "window" else None).perplexity


def test_bos_per_window_wanda_below_magnitude_and_save_reload(gemma3, gemma_inputs, tmp_path):
    model, tokenizer, _ = gemma3
    streams, calibration = gemma_inputs
    assert streams["stream"][0, 0] == 2 and streams["window"][0, 0] != 2
    assert (calibration[:, 0] == 2).all()
    dense_stream, dense_window = ppl(model, streams, "stream"), ppl(model, streams)

    pruned = {}
    for score in ("wanda", "magnitude"):
        method = build_method({"name": score}, {"pattern": "unstructured", "ratio": 0.5}, {"name": "none"})
        pruned[score] = copy.deepcopy(model)
        report = prune_model(pruned[score], method, calibration, progress=False)
        assert report.overall_sparsity == pytest.approx(0.5, abs=1e-3)
    wanda, magnitude = ppl(pruned["wanda"], streams), ppl(pruned["magnitude"], streams)
    print(f"Gemma-3-270M WikiText-2 ppl ({EVAL_WINDOWS}x{EVAL_SEQLEN}): dense {dense_stream:.2f} (bos=stream), "
          f"{dense_window:.2f} (bos=window); bos=window: wanda50 {wanda:.2f}, magnitude50 {magnitude:.2f}")
    assert 5 < dense_window < dense_stream < 200  # a trained model; without a BOS per window it is much worse
    assert dense_window < wanda < magnitude

    directory = save_pruned(pruned["wanda"], tokenizer, tmp_path / "wanda50")
    reloaded = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert type(reloaded).__name__ == "Gemma3ForCausalLM"
    one_window = {"window": streams["window"][:, :EVAL_SEQLEN]}
    assert ppl(reloaded, one_window) == ppl(pruned["wanda"], one_window)


METHODS = [
    *[(f"score={score}",) for score in ("magnitude", "wanda", "owanda", "symmetric", "general_sym", "ri", "ria",
                                        "ria_l2", "ria_linf", "stochria", "sparsegpt")],
    ("score=wanda", "sparsity=nm_2_4"),
    ("score=ria", "sparsity=nm_4_8"),
    ("score=wanda", "refine=dsnot"),
    ("score=ria", "refine=r2dsnot"),
]


@pytest.fixture(scope="module")
def first_blocks(gemma3):
    """The real model's first blocks (sliding-window and full attention), the rest cut off: each method's
    work is per block, so these show what the whole model would at a third of the cost."""
    model = copy.deepcopy(gemma3[0])
    model.model.layers = model.model.layers[:FIRST_BLOCKS]
    model.config.num_hidden_layers = FIRST_BLOCKS
    model.config.layer_types = model.config.layer_types[:FIRST_BLOCKS]
    assert set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    return model


@pytest.mark.parametrize("overrides", METHODS, ids=[" ".join(overrides) for overrides in METHODS])
def test_every_method_keeps_the_exact_sparsity(first_blocks, gemma_inputs, overrides):
    """Every score preset, N:M and both refinements on the real weights (the driver checks each layer's mask
    against the pattern's contract); every prunable matrix ends at the target sparsity."""
    cfg = compose_run(*overrides)
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    candidate = copy.deepcopy(first_blocks)
    report = prune_model(candidate, method, gemma_inputs[1][:4, :128], progress=False)
    assert len(report.layers) == FIRST_BLOCKS * 7
    # a weight that the 4-bit quantisation made exactly zero may add to the pruned ones: at least the target
    assert all(0.5 <= layer.sparsity < 0.5 + 2e-3 for layer in report.layers)
    assert report.overall_sparsity == pytest.approx(0.5, abs=1e-3)


def test_a_run_plans_from_the_packages_and_evaluates_two_offline_tasks(gemma3, assets, tmp_path, monkeypatch):
    """symprune's own run (plan, then execute) on model=gemma3_270m: the plan finds the assembled file in the
    cache and identifies the model by its SHA-256; zero-shot PIQA and WinoGrande run on the pruned model."""
    from symprune.run import runner
    from symprune.run.loggers import NoLogger
    from symprune.run.plan import plan_run

    monkeypatch.setattr(runner, "load_placed", lambda *args: copy.deepcopy(gemma3[0]))
    plan = plan_run(compose_run(
        "model=gemma3_270m", "eval=zeroshot_offline", "eval.zeroshot.tasks=[piqa,winogrande]", "eval.zeroshot.limit=4",
        "eval.dense=false", "eval.zeroshot.dense=false", "eval.perplexity.datasets=[wikitext2]", "eval.perplexity.seqlen=128",
        "eval.perplexity.max_windows=1", "eval.perplexity.bos=window", "calibration.nsamples=2", "calibration.seqlen=64",
        "calibration.bos=window", f"paths.assets={assets}", f"paths.cache={gemma3[2].parents[1]}", "logger=none",
        "progress=false",
    ))
    assert plan.identity["model"]["gguf_sha256"] == PUBLISHED_SHA256
    results = runner.execute(plan, NoLogger())
    assert results.data["calibration/wikitext2"]["bos"] == results.data["evaluation/wikitext2"]["bos"] == "window"
    assert results.metrics["sparsity"]["overall"] == pytest.approx(0.5, abs=1e-3)
    for task in ("piqa", "winogrande"):
        scores = results.metrics["zeroshot"]["pruned"][task]
        assert scores["samples"] == 4 and 0 <= scores["acc"] <= 1
