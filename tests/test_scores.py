import math

import pytest
import torch

from symprune.errors import ConfigError
from symprune.prune.method import build_method
from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats, StatsAccumulator

W = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
STATS = LayerStats(sq_norm=torch.tensor([4.0, 9.0]))  # column norms 2 and 3


def score(name, weight=W, stats=STATS, **params):
    return SCORES.build({"name": name, **params}).fn(weight, stats)


def test_magnitude_hand_computed():
    assert score("magnitude").tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_wanda_hand_computed():
    assert score("wanda").tolist() == [[2.0, 6.0], [6.0, 12.0]]


def test_ria_hand_computed():
    # column sums of |W|: 4, 6; row sums: 3, 7; activation factor sqrt(norm)^0.5
    relative = [[1 / 4 + 1 / 3, 2 / 6 + 2 / 3], [3 / 4 + 3 / 7, 4 / 6 + 4 / 7]]
    expected = [[relative[i][j] * math.sqrt((2.0, 3.0)[j]) for j in range(2)] for i in range(2)]
    assert torch.allclose(score("ria", a=0.5), torch.tensor(expected))
    assert torch.allclose(score("ria", a=0.0), torch.tensor(relative))
    assert torch.allclose(score("ria", a=1.0), torch.tensor(relative) * torch.tensor([[2.0, 3.0]]))


def test_ri_needs_no_statistics_and_ria_does():
    assert SCORES.build({"name": "ria", "a": 0.0}).meta("stats") == frozenset()
    assert SCORES.build({"name": "ria"}).meta("stats") == {"sq_norm"}
    assert score("ria", stats=LayerStats(), a=0.0).shape == W.shape
    with pytest.raises(ValueError, match="ria needs the calibration statistic 'sq_norm'"):
        score("ria", stats=LayerStats(), a=0.5)


def test_score_parameters_are_validated():
    with pytest.raises(ConfigError, match="unknown score 'wandaa'; valid score names: magnitude, ria, sparsegpt, sparsegpt_saliency, symwanda, wanda"):
        SCORES.build({"name": "wandaa"})
    with pytest.raises(ConfigError, match="must be a finite number"):
        SCORES.build({"name": "ria", "a": float("inf")})
    with pytest.raises(ConfigError, match="score 'ria'.*its parameters: a"):
        SCORES.build({"name": "ria", "b": 1.0})
    with pytest.raises(ConfigError, match="score 'ria'"):
        SCORES.build({"name": "ria", "a": "large"})


def test_auto_group_follows_each_reference():
    def group(name):
        return build_method({"name": name}, {"pattern": "unstructured"}, {"name": "none"}).pattern.params.group

    assert (group("wanda"), group("magnitude"), group("ria")) == ("row", "layer", "layer")
    explicit = build_method({"name": "ria"}, {"pattern": "unstructured", "group": "row"}, {"name": "none"})
    assert explicit.pattern.params.group == "row"


# --- masks on random inputs against a plain formula implementation --------------------------------


def plain_row_mask(scores: list[list[float]], ratio: float) -> list[list[bool]]:
    """Per row, prune the int(d_in * ratio) lowest scores, ties to the lower column index."""
    mask = []
    for row in scores:
        k = int(len(row) * ratio)
        order = sorted(range(len(row)), key=lambda j: (row[j], j))
        pruned = set(order[:k])
        mask.append([j in pruned for j in range(len(row))])
    return mask


def plain_layer_mask(scores: list[list[float]], ratio: float) -> list[list[bool]]:
    flat = sorted(value for row in scores for value in row)
    threshold = flat[int(len(flat) * ratio)]
    return [[value <= threshold for value in row] for row in scores]


def random_layer(seed, d_out=24, d_in=40, sequences=5, tokens=16):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d_out, d_in, generator=generator)
    inputs = torch.randn(sequences, tokens, d_in, generator=generator) * torch.rand(d_in, generator=generator) * 3
    accumulator = StatsAccumulator(d_in, {"sq_norm"}, "cpu")
    accumulator.add_batch(inputs)
    return weight, inputs, accumulator.stats


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_wanda_mask_equals_plain_formula(seed, ratio):
    weight, inputs, stats = random_layer(seed)
    X = inputs.reshape(-1, weight.shape[1]).double()
    d_out, d_in = weight.shape
    plain = [
        [abs(float(weight[i, j])) * math.sqrt(sum(float(x) ** 2 for x in X[:, j]) / inputs.shape[0]) for j in range(d_in)]
        for i in range(d_out)
    ]
    method = build_method({"name": "wanda"}, {"pattern": "unstructured", "ratio": ratio}, {"name": "none"})
    assert method.prune_layer("layer", weight, stats).pruned.tolist() == plain_row_mask(plain, ratio)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("a", [0.5, 1.0, 0.0])
def test_ria_mask_equals_plain_formula(seed, a):
    weight, inputs, stats = random_layer(seed)
    X = inputs.reshape(-1, weight.shape[1]).double()
    d_out, d_in = weight.shape
    column_sums = [sum(abs(float(weight[k, j])) for k in range(d_out)) for j in range(d_in)]
    row_sums = [sum(abs(float(weight[i, k])) for k in range(d_in)) for i in range(d_out)]
    norms = [math.sqrt(sum(float(x) ** 2 for x in X[:, j]) / inputs.shape[0]) for j in range(d_in)]
    plain = [
        [
            (abs(float(weight[i, j])) / column_sums[j] + abs(float(weight[i, j])) / row_sums[i]) * norms[j] ** a
            for j in range(d_in)
        ]
        for i in range(d_out)
    ]
    method = build_method({"name": "ria", "a": a}, {"pattern": "unstructured", "ratio": 0.5}, {"name": "none"})
    assert method.prune_layer("layer", weight, stats).pruned.tolist() == plain_layer_mask(plain, 0.5)
    per_row = build_method({"name": "ria", "a": a}, {"pattern": "unstructured", "group": "row"}, {"name": "none"})
    assert per_row.prune_layer("layer", weight, stats).pruned.tolist() == plain_row_mask(plain, 0.5)
