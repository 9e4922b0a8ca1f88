"""SparseGPT's saliency as a first mask (DSnoT's "SparseGPT initial mask"): the reference's metric and selection,
weights only masked, DSnoT on top of it, bad parameters."""

import pytest
import torch
from conftest import compose_run, reference_nm_selection, tiny_model
from test_refine import reference_dsnot

from symprune.errors import ConfigError
from symprune.model.structure import find_blocks, find_matrices
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.stats import StatsAccumulator

DSNOT_STATS = {"sq_norm", "mean_sum", "var", "hessian"}


def reference_initial_metric(weight, hessian, percdamp=0.01):
    """zyxxmu/DSnoT lib/prune.py, ``initial_method == "sparsegpt"``, written as it writes it (on a copy of H,
    which the reference changes in place)."""
    W = weight.clone()
    W = W.float()
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(W.shape[1], device=W.device)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    return W**2 / (torch.diag(Hinv).reshape((1, -1))) ** 2


def reference_unstructured_selection(initial_metric, sparsity_ratio):
    """The reference's unstructured first mask: per row, the int(d_in·ratio) first entries of a stable sort."""
    weight_mask = torch.zeros_like(initial_metric) == 1
    _, sorted_initial_indice = torch.sort(initial_metric, dim=-1, stable=True)
    sparsity_num = int(initial_metric.shape[1] * sparsity_ratio)
    weight_mask.scatter_(1, sorted_initial_indice[:, :sparsity_num], True)
    return weight_mask


def layer_stats(inputs, wanted=frozenset({"hessian"})):
    """The statistics of inputs shaped (sequences, tokens, d_in), added one sequence at a time as a run adds them."""
    accumulator = StatsAccumulator(inputs.shape[-1], wanted, "cpu")
    for sequence in inputs:
        accumulator.add_batch(sequence.unsqueeze(0))
    return accumulator.stats


def random_layer(seed, d_out=24, d_in=32, dead=(3,), zeros_per_row=0):
    """A random weight and the statistics of correlated random inputs; ``dead`` input columns are always 0 and
    ``zeros_per_row`` weights of every row are exactly 0 (their saliencies tie at 0)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d_out, d_in, generator=generator)
    for row in weight:
        row[torch.randperm(d_in, generator=generator)[:zeros_per_row]] = 0
    mixing = torch.randn(d_in, d_in, generator=generator) * 0.3 + torch.eye(d_in)
    inputs = torch.randn(4, 48, d_in, generator=generator) @ mixing * (torch.rand(d_in, generator=generator) * 2)
    inputs[..., list(dead)] = 0
    return weight, layer_stats(inputs, DSNOT_STATS)


def saliency_method(sparsity, refine=None, **score):
    return build_method({"name": "sparsegpt_saliency", **score}, sparsity, refine or {"name": "none"})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
def test_score_is_the_references_metric_bit_for_bit(seed, dtype):
    weight, stats = random_layer(seed, dead=(3, 17))
    weight = weight.to(dtype)
    hessian = stats.hessian.clone()
    assert (torch.diag(hessian) == 0).sum() == 2
    for percdamp in (0.01, 0.1):
        scores = saliency_method({"pattern": "unstructured"}, percdamp=percdamp).score.fn(weight, stats)
        assert scores.dtype == torch.float32
        assert scores.equal(reference_initial_metric(weight, hessian, percdamp))
        assert (scores[:, [3, 17]] == 0).all()
    assert stats.hessian.equal(hessian)  # the statistic is not changed in place, as the reference's H is


def test_the_metric_divides_by_the_cholesky_factor_not_the_inverse_diagonal():
    weight, stats = random_layer(1, dead=())
    scores = saliency_method({"pattern": "unstructured"}).score.fn(weight, stats)
    H = stats.hessian + 0.01 * torch.diag(stats.hessian).mean() * torch.eye(weight.shape[1])
    inverse_diagonal = torch.diag(torch.linalg.inv(H))
    assert not torch.allclose(scores, weight**2 / inverse_diagonal.reshape(1, -1) ** 2, rtol=1e-3)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6])
@pytest.mark.parametrize("seed", range(3))
def test_first_mask_is_the_references_stable_per_row_selection(seed, ratio):
    """Five saliencies of every row tie at 0 (a dead column, four zero weights): at ratio 0.25 (k = 4) the
    stable order decides which ones go, the lower columns."""
    weight, stats = random_layer(seed, zeros_per_row=4)
    method = saliency_method({"pattern": "unstructured", "ratio": ratio})
    assert method.pattern.params.group == "row"  # sparsity.group=auto follows the reference
    pruned = method.prune_layer("l", weight, stats).pruned
    expected = reference_unstructured_selection(reference_initial_metric(weight, stats.hessian), ratio)
    assert pruned.equal(expected)
    if ratio == 0.25:
        assert not pruned.equal(reference_unstructured_selection(
            reference_initial_metric(weight.flip(1), stats.hessian.flip(0, 1)), ratio).flip(1))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_first_mask_is_the_references_selection(n, m):
    weight, stats = random_layer(5, zeros_per_row=4)
    pruned = saliency_method({"pattern": "nm", "n": n, "m": m}).prune_layer("l", weight, stats).pruned
    assert pruned.equal(reference_nm_selection(reference_initial_metric(weight, stats.hessian), n, m))


@pytest.mark.real_model
@pytest.mark.parametrize("sparsity", ["unstructured_row_60", "unstructured", "nm_2_4", "nm_4_8"])
def test_real_block0_first_masks_are_the_references(real_layers, sparsity):
    """SmolLM2's block 0 (dequantised 4-bit weights): score and first mask of the configured run equal the
    reference's; the exact zeros of the weights tie inside M-blocks, where the selection rule decides."""
    cfg = compose_run("score=sparsegpt_saliency", f"sparsity={sparsity}")
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    ties_decided = 0
    for name, (inputs, _, weight) in real_layers.items():
        if not name.startswith("model.layers.0."):
            continue
        stats = layer_stats(inputs)
        metric = reference_initial_metric(weight, stats.hessian)
        assert method.score.fn(weight, stats).equal(metric), name
        pruned = method.prune_layer(name, weight, stats).pruned
        if cfg.sparsity.pattern == "nm":
            n, m = cfg.sparsity.n, cfg.sparsity.m
            assert pruned.equal(reference_nm_selection(metric, n, m)), name
            ties_decided += int((pruned != nm_mask(metric, n, m, "stable")).sum())
        else:
            assert pruned.equal(reference_unstructured_selection(metric, cfg.sparsity.ratio)), name
    if cfg.sparsity.pattern == "nm":
        assert ties_decided > 0


def weights_of(model):
    """Every pruned matrix's weight, by block and name."""
    return {(index, name): matrix.weight.detach().clone()
            for index, block in enumerate(find_blocks(model)[1]) for name, matrix in find_matrices(block).items()}


def test_weights_are_only_masked_unlike_sparsegpt():
    calibration = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    sparsity = {"pattern": "unstructured", "ratio": 0.5}
    changed = {}
    for score in ("sparsegpt_saliency", "sparsegpt"):
        model = tiny_model("llama", seed=2)
        before = weights_of(model)
        method = build_method({"name": score}, sparsity, {"name": "none"})
        assert method.required_stats == {"hessian"}
        report = prune_model(model, method, calibration, progress=False)
        assert report.overall_sparsity >= 0.5
        changed[score] = sum(int(((after != 0) & (after != before[key])).sum())
                             for key, after in weights_of(model).items())
    assert changed["sparsegpt_saliency"] == 0 and changed["sparsegpt"] > 0
    weight, stats = random_layer(0)
    assert saliency_method(sparsity).prune_layer("l", weight, stats).weight is None


@pytest.mark.parametrize("sparsity", [
    {"pattern": "unstructured", "ratio": 0.6}, {"pattern": "unstructured", "ratio": 0.7},
    {"pattern": "nm", "n": 2, "m": 4}, {"pattern": "nm", "n": 4, "m": 8},
])
def test_dsnot_on_it_is_the_references_dsnot(sparsity):
    """The whole row: the reference's DSnoT (its Wanda pruning order for unstructured masks, the first mask's
    saliency for N:M) on the reference's SparseGPT initial mask, on a layer wide enough for the reference's
    narrow-layer defects not to trigger."""
    weight, stats = random_layer(7, d_out=48, d_in=768, dead=(10,))
    metric = reference_initial_metric(weight, stats.hessian)
    m = sparsity.get("m")
    first = (reference_unstructured_selection(metric, sparsity["ratio"]) if m is None
             else reference_nm_selection(metric, sparsity["n"], m))
    result = saliency_method(sparsity, {"name": "dsnot", "sublayers": "all"}).prune_layer("l", weight, stats)
    assert result.info["swaps"] > 0
    assert result.pruned.equal(reference_dsnot(weight, first, stats, m=m, scores=metric))


@pytest.mark.parametrize("sparsity", ["unstructured_row_60", "nm_2_4"])
def test_dsnot_on_it_runs_end_to_end(sparsity):
    """Configured as a run composes it: the attention layers' first masks change, every row (and M-block) keeps
    its number of zeros, the other layers keep their first masks."""
    calibration = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    masks = {}
    for refine in ("none", "dsnot"):
        cfg = compose_run("score=sparsegpt_saliency", f"sparsity={sparsity}", f"refine={refine}")
        method = build_method(cfg.score, cfg.sparsity, cfg.refine)
        report = prune_model(tiny_model("llama", seed=4), method, calibration, progress=False)
        block0 = [layer for layer in report.layers if layer.block == 0]
        masks[refine] = {layer.name: report.masks.mask(layer.name) for layer in block0}
        if refine == "dsnot":
            info = {layer.name: layer.info for layer in block0}
    for name, first in masks["none"].items():
        refined = masks["dsnot"][name]
        assert refined.sum(dim=1).equal(first.sum(dim=1)), name
        if sparsity.startswith("nm"):
            assert (refined.reshape(refined.shape[0], -1, 4).sum(-1) == 2).all(), name
        if ".self_attn." in name:
            assert info[name]["refined"] == 1 and info[name]["swaps"] > 0, name
            assert not refined.equal(first), name
        else:
            assert info[name]["refined"] == 0 and refined.equal(first), name


def test_percdamp_must_be_positive():
    for bad in (0.0, -0.5):
        with pytest.raises(ConfigError, match=f"sparsegpt_saliency: percdamp={bad} must be > 0"):
            saliency_method({"pattern": "unstructured"}, percdamp=bad)
    with pytest.raises(ConfigError, match="score 'sparsegpt_saliency'.*its parameters: percdamp"):
        saliency_method({"pattern": "unstructured"}, blocksize=128)


def test_configs_compose_with_every_refinement_and_pattern():
    for refine in ("none", "dsnot", "r2dsnot"):
        for sparsity in ("unstructured", "unstructured_row_60", "nm_2_4", "nm_4_8"):
            cfg = compose_run("score=sparsegpt_saliency", f"sparsity={sparsity}", f"refine={refine}")
            method = build_method(cfg.score, cfg.sparsity, cfg.refine)
            assert "hessian" in method.required_stats
            assert method.score.meta("reconstructs") is None
