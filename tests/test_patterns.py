import pytest
import torch

from symprune.errors import ConfigError
from symprune.prune.patterns import PATTERNS
from symprune.prune.patterns.nm import nm_mask as nm
from symprune.prune.patterns.unstructured import prune_per_layer, prune_per_row, unstructured

T, F = True, False
SCORES = torch.tensor([[3.0, 1.0, 2.0, 4.0], [1.0, 1.0, 0.0, 5.0]])


def test_per_row_hand_computed_with_stable_ties():
    # row 1 has a tie (1.0 at columns 0 and 1): the lower column index is pruned first
    assert prune_per_row(SCORES, 0.5).tolist() == [[F, T, T, F], [T, F, T, F]]


@pytest.mark.parametrize("levels", [3, 16, None])  # few levels: many ties; None: continuous scores
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.7])
def test_per_row_selection_equals_a_stable_sort(levels, ratio):
    generator = torch.Generator().manual_seed(levels or 0)
    scores = torch.rand(33, 96, generator=generator)
    if levels:
        scores = (scores * levels).floor()
    k = int(96 * ratio)
    stable = torch.sort(scores, dim=1, stable=True).indices[:, :k]
    expected = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, stable, True)
    assert prune_per_row(scores, ratio).equal(expected)


def test_per_row_count_uses_python_float_truncation():
    # 0.57 * 100 = 56.99999999999999 in floating point: 56 weights per row, as in the references
    pruned = prune_per_row(torch.rand(3, 100), 0.57)
    assert pruned.sum(dim=1).tolist() == [56, 56, 56]


def test_per_layer_threshold_includes_ties():
    # int(8 * 0.25) = 2; sorted scores 0,1,1,1,2,...: threshold 1 prunes every score <= 1 (4 weights)
    assert prune_per_layer(SCORES, 0.25).tolist() == [[F, T, F, F], [T, T, T, F]]


def test_per_layer_without_ties_prunes_k_plus_one():
    scores = torch.randperm(100).float().reshape(10, 10)
    assert int(prune_per_layer(scores, 0.3).sum()) == 31
    assert prune_per_layer(scores, 0.3).equal(scores <= 30)


def test_ratio_zero_prunes_nothing():
    assert not prune_per_row(SCORES, 0.0).any()
    assert not prune_per_layer(SCORES, 0.0).any()


def test_unstructured_dispatch_and_unresolved_group():
    assert unstructured(SCORES, 0.5, "row").equal(prune_per_row(SCORES, 0.5))
    assert unstructured(SCORES, 0.25, "layer").equal(prune_per_layer(SCORES, 0.25))
    with pytest.raises(ValueError, match="resolved"):
        unstructured(SCORES, 0.5, "auto")


def test_nm_hand_computed_with_stable_ties():
    """The stable rule; the default (the references' topk order) is checked in test_nm_ties.py."""
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0, 0.0, 9.0, 8.0, 7.0]])
    # 2:4 — block (5,5,5,5) is all ties: the two lowest column indices go
    assert nm(scores, 2, 4, "stable").tolist() == [[F, F, T, T, T, T, F, F], [T, T, F, F, T, F, F, T]]
    # 1:4 zeroes one weight of four (the references' convention counts pruned weights)
    assert nm(scores, 1, 4, "stable").tolist() == [[F, F, F, T, T, F, F, F], [T, F, F, F, T, F, F, F]]
    # 4:8: row 1 keeps 9, 8, 7 and the last of its tied 5s
    assert nm(scores, 4, 8, "stable").tolist() == [[F, F, T, T, T, T, F, F], [T, T, T, F, T, F, F, F]]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4), (1, 2), (7, 16)])
def test_nm_exact_per_block(n, m):
    scores = torch.randn(33, 4 * m)
    pruned = nm(scores, n, m)
    assert (pruned.reshape(33, 4, m).sum(-1) == n).all()
    # the pruned weights of each block are its n lowest scores
    blocks = scores.reshape(33, 4, m)
    kept_min = blocks.masked_fill(pruned.reshape(33, 4, m), float("inf")).min(-1).values
    pruned_max = blocks.masked_fill(~pruned.reshape(33, 4, m), float("-inf")).max(-1).values
    assert (pruned_max <= kept_min).all()


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.7, 0.9])
def test_per_row_sparsity_exact(ratio):
    scores = torch.randn(17, 96)
    pruned = prune_per_row(scores, ratio)
    assert (pruned.sum(1) == int(96 * ratio)).all()


def test_pattern_parameters_are_validated():
    with pytest.raises(ConfigError, match=r"sparsity ratio 1.0 is outside \[0, 1\)"):
        PATTERNS.build({"pattern": "unstructured", "ratio": 1.0})
    with pytest.raises(ConfigError, match="outside"):
        PATTERNS.build({"pattern": "unstructured", "ratio": -0.1})
    with pytest.raises(ConfigError, match="valid groups: auto, row, layer"):
        PATTERNS.build({"pattern": "unstructured", "group": "column"})
    with pytest.raises(ConfigError, match="N < M.*NVIDIA"):
        PATTERNS.build({"pattern": "nm", "n": 4, "m": 4})
    with pytest.raises(ConfigError, match="positive N and M"):
        PATTERNS.build({"pattern": "nm", "n": 0, "m": 4})
    with pytest.raises(ConfigError, match="positive N and M"):
        PATTERNS.build({"pattern": "nm", "n": 2, "m": -4})
    with pytest.raises(ConfigError, match="unknown sparsity pattern 'blocky'; valid sparsity pattern names: nm, unstructured"):
        PATTERNS.build({"pattern": "blocky"})


def test_nm_rejects_indivisible_layer_by_name():
    params = PATTERNS.build({"pattern": "nm", "n": 2, "m": 4}).params
    params.check_layer("ok", 8, 64)
    with pytest.raises(ConfigError, match="layer 'blocks.3.fc' has input width 30, which is not divisible by M=4"):
        params.check_layer("blocks.3.fc", 8, 30)
