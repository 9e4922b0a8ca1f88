"""N:M masks as the references choose them, ties included.

The references (Wanda, RIA, magnitude, SparseGPT) prune the N lowest scores of every M columns with
torch.topk(largest=False); where a block's N-th and (N+1)-th lowest scores are equal, the pruned ones are
those of topk's selection algorithm. The real model's 4-bit-derived weights tie everywhere, so random
matrices cannot tell the rules apart and the real model's layers can.
"""

import pytest
import torch
from conftest import compose_run, reference_nm_selection

from symprune.errors import ConfigError
from symprune.prune.method import build_method
from symprune.prune.patterns import PATTERNS
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.stats import StatsAccumulator
from symprune.run.plan import plan_run

F, T = False, True
NM = [(2, 4), (4, 8), (1, 4), (3, 4)]


def tied(rows: int, columns: int, levels: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (rows, columns), generator=generator).float()


def test_stable_ties_prune_the_lower_column_and_topk_ties_follow_the_references():
    scores = torch.tensor([[5.0, 5.0, 5.0, 5.0, 1.0, 2.0, 2.0, 2.0]])
    assert nm_mask(scores, 2, 4, "stable").tolist() == [[T, T, F, F, T, T, F, F]]
    assert nm_mask(scores, 2, 4, "topk").equal(reference_nm_selection(scores, 2, 4))


@pytest.mark.parametrize("n,m", NM)
@pytest.mark.parametrize("levels", [2, 3, 16])
def test_topk_ties_are_the_references_selection_on_tied_scores(n, m, levels):
    scores = tied(96, 64 * m, levels, seed=levels * m + n)
    topk, stable = nm_mask(scores, n, m), nm_mask(scores, n, m, "stable")
    assert topk.equal(reference_nm_selection(scores, n, m))
    assert (topk.reshape(96, -1, m).sum(-1) == n).all() and (stable.reshape(96, -1, m).sum(-1) == n).all()
    assert not topk.equal(stable)  # the two rules differ exactly where ties are
    blocks, pruned = scores.reshape(96, -1, m), topk.reshape(96, -1, m)
    assert blocks.masked_fill(~pruned, float("-inf")).max(-1).values.le(
        blocks.masked_fill(pruned, float("inf")).min(-1).values).all()  # no kept score below a pruned one


def test_the_tie_rule_is_a_validated_option_in_the_identity():
    assert compose_run("sparsity=nm_2_4").sparsity.ties == "topk"
    with pytest.raises(ConfigError, match=r"sparsity.ties='lowest'; valid: topk, stable"):
        PATTERNS.build({"pattern": "nm", "n": 2, "m": 4, "ties": "lowest"})
    hashes = {plan_run(compose_run("sparsity=nm_2_4", f"sparsity.ties={rule}")).config_hash for rule in ("topk", "stable")}
    assert len(hashes) == 2


@pytest.mark.parametrize("ties", ["topk", "stable"])
def test_sparsegpt_selects_each_group_of_m_columns_with_the_patterns_tie_rule(ties):
    """Weights on a few levels and an identity Hessian: SparseGPT's saliency is W² with ties everywhere, and
    its first group of M columns is chosen before any update reaches it."""
    weight = tied(64, 16, 3, seed=7) - 1.0
    cfg = compose_run("score=sparsegpt", "sparsity=nm_2_4", f"sparsity.ties={ties}")
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    accumulator = StatsAccumulator(16, method.required_stats, "cpu", d_out=64)
    accumulator.add_batch(torch.eye(16).unsqueeze(0) * 2 ** -0.5 * 4, torch.zeros(1, 16, 64))
    pruned = method.prune_layer("l", weight, accumulator.stats).pruned
    assert pruned[:, :4].equal(nm_mask(weight[:, :4] ** 2, 2, 4, ties))
    assert not nm_mask(weight[:, :4] ** 2, 2, 4, "topk").equal(nm_mask(weight[:, :4] ** 2, 2, 4, "stable"))


@pytest.mark.real_model
@pytest.mark.parametrize("score", ["magnitude", "wanda", "ria"])
@pytest.mark.parametrize("sparsity", ["nm_2_4", "nm_4_8"])
def test_real_layer_nm_masks_are_the_references(real_layers, score, sparsity):
    """Each real layer's N:M mask, through the method as a run makes it, equals the references' selection
    call on the same scores bit for bit; the stable rule would have given another mask."""
    cfg = compose_run(f"score={score}", f"sparsity={sparsity}")
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    n, m = cfg.sparsity.n, cfg.sparsity.m
    ties_decided = 0
    for name, (inputs, outputs, weight) in real_layers.items():
        accumulator = StatsAccumulator(weight.shape[1], method.required_stats, "cpu", d_out=weight.shape[0])
        for x, y in zip(inputs, outputs):
            accumulator.add_batch(x.unsqueeze(0), y.unsqueeze(0))
        stats = accumulator.stats
        scores = method.score.fn(weight, stats, **({"layer": name} if method.score.meta("takes_layer") else {}))
        if score == "magnitude":
            assert scores.equal(torch.abs(weight)), name
        if score == "wanda":
            assert scores.equal(torch.abs(weight) * torch.sqrt(stats.sq_norm.reshape((1, -1)))), name
        pruned = method.prune_layer(name, weight, stats).pruned
        assert pruned.equal(reference_nm_selection(scores, n, m)), name
        ties_decided += int((pruned != nm_mask(scores, n, m, "stable")).sum())
    assert ties_decided > 0
