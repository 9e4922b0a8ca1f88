"""The real SmolLM2-135M-Instruct model on the offline WikiText-2 text."""

import copy

import pytest
from transformers import AutoModelForCausalLM

from symprune import data
from symprune.driver import prune_model
from symprune.evaluate.perplexity import perplexity
from symprune.method import build_method
from symprune.saving import save_pruned

pytestmark = pytest.mark.real_model

EVAL_SEQLEN, EVAL_WINDOWS = 1024, 8
CALIBRATION = dict(nsamples=16, seqlen=512, seed=0)


def test_offline_wikitext_is_the_hub_token_stream(smollm2, assets):
    """The joined test rows tokenise to the 304,986 tokens the hub's split gives (assets README)."""
    _, tokenizer = smollm2
    tokens, origin = data.evaluation_ids("wikitext2", tokenizer, 2048, str(assets))
    assert tokens.shape == (1, 304_986)
    assert "test_rows.jsonl" in origin


def test_wanda_between_dense_and_magnitude(smollm2, assets, tmp_path):
    model, tokenizer = smollm2
    stream, _ = data.evaluation_ids("wikitext2", tokenizer, EVAL_SEQLEN, str(assets))
    calibration, _ = data.calibration_ids("wikitext2", tokenizer, assets=str(assets), **CALIBRATION)

    def ppl(m):
        return perplexity(m, stream, EVAL_SEQLEN, max_windows=EVAL_WINDOWS, progress=False).perplexity

    saved = {}

    def pruned(score):
        # each score with its reference's comparison group (sparsity.group=auto): row for Wanda, layer for magnitude
        method = build_method({"name": score}, {"pattern": "unstructured", "ratio": 0.5}, {"name": "none"})
        candidate = copy.deepcopy(model)
        report = prune_model(candidate, method, calibration, progress=False)
        assert report.overall_sparsity == pytest.approx(0.5, abs=1e-3)
        saved[score] = candidate
        return ppl(candidate)

    dense, wanda, magnitude = ppl(model), pruned("wanda"), pruned("magnitude")
    saved_wanda = saved["wanda"]
    print(f"SmolLM2 WikiText-2 ppl ({EVAL_WINDOWS}x{EVAL_SEQLEN}): dense {dense:.2f}, wanda50 {wanda:.2f}, magnitude50 {magnitude:.2f}")
    assert 10 < dense < 80
    assert dense < wanda < magnitude

    # the GGUF-derived pruned model saves as plain safetensors and reloads with the same perplexity
    directory = save_pruned(saved_wanda, tokenizer, tmp_path / "wanda50")
    reloaded = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert getattr(reloaded.config, "quantization_config", None) is None
    assert ppl(reloaded) == wanda
