"""RIA's channel permutation for N:M patterns."""

import pytest
import torch

from symprune.errors import ConfigError
from symprune.prune.method import build_method
from symprune.prune.patterns import PATTERNS
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.patterns.permutation import (
    assignment_gains,
    channel_permutation,
    heuristic_reallocation,
    retained_score,
)
from symprune.prune.stats import LayerStats


def nm_with_permutation(scores, n, m, permutation):
    """The method's mask of a layer whose magnitude scores are ``scores`` (positive): the pattern applied in its
    column order and mapped back."""
    method = build_method({"name": "magnitude"}, {"pattern": "nm", "n": n, "m": m, "permutation": permutation},
                          {"name": "none"})
    return method.prune_layer("l", scores, LayerStats()).pruned


def kept_score(scores, pruned):
    return scores.masked_fill(pruned, 0).sum()


def test_heuristic_reallocation_deals_one_column_of_each_slice_to_every_block():
    # column totals 0..7 in a shuffled order; M = 4: slices {0,1} {2,3} {4,5} {6,7}, zig-zag
    totals = torch.tensor([5.0, 0.0, 7.0, 2.0, 1.0, 6.0, 3.0, 4.0])
    index = heuristic_reallocation(totals.reshape(1, -1), 4)
    assert totals[index].tolist() == [0.0, 3.0, 4.0, 7.0, 1.0, 2.0, 5.0, 6.0]
    assert sorted(index.tolist()) == list(range(8))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n,m,permutation", [(2, 4, "heuristic"), (2, 4, "lsa"), (4, 8, "lsa"), (1, 4, "lsa")])
def test_permutation_never_keeps_less_and_stays_nm_in_permuted_order(seed, n, m, permutation):
    generator = torch.Generator().manual_seed(seed)
    # column scales vary a lot, so which columns share a block matters
    scores = torch.rand(24, 8 * m, generator=generator) * torch.rand(8 * m, generator=generator) ** 3
    pruned = nm_with_permutation(scores, n, m, permutation)
    plain = nm_mask(scores, n, m)
    assert kept_score(scores, pruned) >= kept_score(scores, plain)
    assert (pruned.sum(1) == plain.sum(1)).all()
    index = channel_permutation(scores, n, m, assignment=permutation == "lsa")
    assert sorted(index.tolist()) == list(range(8 * m))
    assert (pruned[:, index].reshape(24, -1, m).sum(-1) == n).all()  # N:M in the permuted order
    assert kept_score(scores, pruned) == pytest.approx(float(retained_score(scores[:, index], n, m)), rel=1e-6)


def test_assignment_improves_on_the_heuristic_here():
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(16, 64, generator=generator) * torch.rand(64, generator=generator) ** 4
    heuristic = channel_permutation(scores, 2, 4, assignment=False)
    refined = channel_permutation(scores, 2, 4, assignment=True)
    assert retained_score(scores[:, refined], 2, 4) > retained_score(scores[:, heuristic], 2, 4)


@pytest.mark.parametrize("permutation", ["heuristic", "lsa"])
def test_layer_function_is_that_of_the_permuted_pruned_layer(permutation):
    """The mask is folded back onto the original columns: the original layout computes exactly the
    permuted, pruned layer applied to permuted inputs."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(12, 32, generator=generator)
    scores = weight.abs() * torch.rand(32, generator=generator)
    pruned = nm_with_permutation(scores, 2, 4, permutation)
    index = channel_permutation(scores, 2, 4, assignment=permutation == "lsa")
    x = torch.randn(5, 32, generator=generator)
    original_layout = x @ weight.masked_fill(pruned, 0).t()
    permuted_pruned = weight[:, index].masked_fill(nm_mask(scores[:, index], 2, 4), 0)
    assert torch.allclose(original_layout, x[:, index] @ permuted_pruned.t(), atol=1e-5)


def test_unknown_permutation_is_rejected():
    with pytest.raises(ConfigError, match="unknown N:M permutation 'random'; valid: none, heuristic, lsa"):
        PATTERNS.build({"pattern": "nm", "permutation": "random"})


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (4, 8)])
def test_assignment_gains_equal_the_literal_definition(n, m):
    """gains[r, b] = Σ_rows of the M−N largest scores of block b with its column at `position` replaced by
    block r's, computed literally."""
    generator = torch.Generator().manual_seed(n * 10 + m)
    blocks = torch.rand(7, 5, m, generator=generator, dtype=torch.float64)
    for position in range(m):
        literal = torch.empty(5, 5, dtype=torch.float64)
        for r in range(5):
            for b in range(5):
                trial = blocks[:, b].clone()
                trial[:, position] = blocks[:, r, position]
                literal[r, b] = torch.topk(trial, m - n, dim=-1).values.sum()
        assert torch.allclose(assignment_gains(blocks, position, n, m), literal)
