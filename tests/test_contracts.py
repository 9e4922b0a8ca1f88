"""Every accepted score × pattern × refinement keeps its pattern's contract; combinations that cannot are refused."""

import dataclasses

import pytest
import torch
from conftest import tiny_model

from symprune.errors import ConfigError
from symprune.model.structure import find_blocks, find_linears, weight_matrix
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.patterns.contract import Contract, PatternViolation
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.stats import StatsAccumulator

SCORES = [
    {"name": "magnitude"}, {"name": "wanda"}, {"name": "ria", "a": 0.5},
    {"name": "symwanda", "input": "inv_lp", "output": "inv_lp", "a": 0.5},  # the ria preset
    {"name": "symwanda", "input": "inv_sampled", "output": "inv_sampled", "a": 0.5},  # stochria
    {"name": "symwanda", "input": "activation", "output": "activation"},  # general symmetric
    {"name": "sparsegpt", "blocksize": 16},
    {"name": "sparsegpt_saliency"},
]
PATTERNS = {
    "row": {"pattern": "unstructured", "ratio": 0.5, "group": "row"},
    "layer": {"pattern": "unstructured", "ratio": 0.6, "group": "layer"},
    "2:4": {"pattern": "nm", "n": 2, "m": 4},
    "4:8": {"pattern": "nm", "n": 4, "m": 8},
    "2:4 heuristic": {"pattern": "nm", "n": 2, "m": 4, "permutation": "heuristic"},
    "2:4 lsa": {"pattern": "nm", "n": 2, "m": 4, "permutation": "lsa"},
}
REFINES = [{"name": "none"}, {"name": "dsnot", "sublayers": "all"}, {"name": "r2dsnot", "sublayers": "all"}]


def combinations():
    for score in SCORES:
        for pattern_name, pattern in PATTERNS.items():
            for refine in REFINES:
                try:
                    build_method(score, pattern, refine)
                except ConfigError:
                    continue
                yield pytest.param(score, pattern, refine, id=f"{score['name']}-{score.get('input', '')}-{pattern_name}-{refine['name']}")


def test_the_refused_combinations_are_exactly_sparsegpt_with_refinement_permutation_or_rows():
    refused = {(s["name"], p, r["name"]) for s in SCORES for p, pattern in PATTERNS.items() for r in REFINES
               if not _accepted(s, pattern, r)}
    assert refused == {("sparsegpt", p, r["name"]) for p in PATTERNS for r in REFINES
                       if r["name"] != "none" or p in ("row", "2:4 heuristic", "2:4 lsa")}


def _accepted(score, pattern, refine) -> bool:
    try:
        build_method(score, pattern, refine)
        return True
    except ConfigError:
        return False


@pytest.mark.parametrize("score,pattern,refine", list(combinations()))
def test_every_accepted_combination_keeps_its_pattern(score, pattern, refine):
    """The driver checks every layer's final mask against the contract (it would raise PatternViolation); the
    weights are checked here once more, independently, where the pattern fixes the zeros of the stored layout."""
    model = tiny_model("llama", seed=3)
    method = build_method(score, pattern, refine)
    calibration = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    report = prune_model(model, method, calibration, progress=False)
    assert len(report.layers) == 14
    if pattern.get("permutation", "none") != "none":
        return  # N:M in the permuted order (checked by the driver), not in the stored one
    for index, block in enumerate(find_blocks(model)[1]):
        for name, layer in find_linears(block).items():
            zeros = weight_matrix(layer) == 0
            if pattern["pattern"] == "nm":
                per_block = zeros.reshape(zeros.shape[0], -1, pattern["m"]).sum(-1)
                assert (per_block >= pattern["n"]).all(), name
            elif pattern["group"] == "row":
                assert (zeros.sum(1) >= int(zeros.shape[1] * pattern["ratio"])).all(), name
            else:
                assert zeros.sum() >= int(zeros.numel() * pattern["ratio"]), name


@pytest.mark.parametrize("permutation", ["heuristic", "lsa"])
@pytest.mark.parametrize("refine", ["dsnot", "r2dsnot"])
def test_refinement_with_a_permutation_is_exactly_nm_in_the_permuted_order(permutation, refine):
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(24, 64, generator=generator)
    accumulator = StatsAccumulator(64, {"sq_norm", "mean_sum", "var"}, "cpu")
    accumulator.add_batch(torch.randn(3, 40, 64, generator=generator) * torch.rand(64, generator=generator) * 3)
    method = build_method({"name": "wanda"}, {"pattern": "nm", "n": 2, "m": 4, "permutation": permutation},
                          {"name": refine, "sublayers": "all", "update_threshold": 0.0})
    result = method.prune_layer("l", weight, accumulator.stats)
    assert result.order is not None and result.info["swaps"] > 0
    assert (result.pruned[:, result.order].reshape(24, -1, 4).sum(-1) == 2).all()
    # the layer computes what the permuted, pruned layer computes on permuted inputs
    x = torch.randn(5, 64, generator=generator)
    permuted = weight[:, result.order].masked_fill(result.pruned[:, result.order], 0)
    assert torch.allclose(x @ weight.masked_fill(result.pruned, 0).t(), x[:, result.order] @ permuted.t(), atol=1e-5)
    # ... and the refinement changed the first mask of the permuted order
    first = nm_mask(method.score.fn(weight, accumulator.stats)[:, result.order], 2, 4)
    assert not first.equal(result.pruned[:, result.order])


def test_sparsegpt_with_a_permutation_is_refused():
    with pytest.raises(ConfigError, match="channel permutation .* is not implemented for it"):
        build_method({"name": "sparsegpt"}, {"pattern": "nm", "permutation": "lsa"}, {"name": "none"})


def test_contract_violations_name_the_place():
    mask = nm_mask(torch.rand(4, 8), 2, 4)
    assert Contract(0.5, kind="nm", block=4, pruned_per_block=2).violation(mask) is None
    mask[2, 5] = ~mask[2, 5]
    assert Contract(0.5, kind="nm", block=4, pruned_per_block=2).violation(mask) == (
        f"1 blocks of 4 columns do not have exactly 2 pruned weights (e.g. row 2, columns 4-7: {int(mask[2, 4:8].sum())})"
    )
    rows = torch.zeros(3, 10, dtype=torch.bool)
    rows[:, :5] = True
    assert Contract(0.5, kind="unstructured", group="row").violation(rows) is None
    rows[1, 0] = False
    assert Contract(0.5, kind="unstructured", group="row").violation(rows) == "1 rows do not have exactly 5 pruned weights (e.g. row 1: 4)"
    assert Contract(0.6, kind="unstructured", group="layer").violation(rows) == "14 weights pruned, fewer than 18 (0.6 of 30)"


def test_the_driver_stops_at_a_layer_that_breaks_the_pattern(monkeypatch):
    model = tiny_model("llama")
    method = build_method({"name": "magnitude"}, {"pattern": "nm", "n": 2, "m": 4}, {"name": "none"})
    broken = dataclasses.replace(method, refine=dataclasses.replace(method.refine, entry=dataclasses.replace(
        method.refine.entry, fn=lambda weight, pruned, **context: (pruned & False, {}))))
    with pytest.raises(PatternViolation, match=r"layer model\.layers\.0\.self_attn\.q_proj: the final mask breaks"):
        prune_model(model, broken, None, progress=False)
