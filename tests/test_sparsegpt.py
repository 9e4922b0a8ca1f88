"""SparseGPT as a method: masks, weight updates, reconstruction error, errors."""

import pytest
import torch
from conftest import compose_run, tiny_model

from symprune.errors import ConfigError
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.scores.sparsegpt import inverse_hessian_factor
from symprune.prune.stats import StatsAccumulator


def correlated_layer(seed=0, d_out=64, d_in=96, tokens=512):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d_out, d_in, generator=generator)
    mixing = torch.randn(d_in, d_in, generator=generator) * 0.3 + torch.eye(d_in)
    X = (torch.randn(tokens, d_in, generator=generator) @ mixing) * torch.rand(d_in, generator=generator) * 2
    accumulator = StatsAccumulator(d_in, {"sq_norm", "hessian"}, "cpu")
    accumulator.add_batch(X.reshape(8, -1, d_in))
    return weight, X, accumulator.stats


def method(score, sparsity, **extra):
    return build_method({"name": score, **extra}, sparsity, {"name": "none"})


def pruned_weight(result, weight):
    base = result.weight if result.weight is not None else weight
    return base.masked_fill(result.pruned, 0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "sparsity", [{"pattern": "unstructured", "ratio": 0.5}, {"pattern": "nm", "n": 2, "m": 4}, {"pattern": "nm", "n": 4, "m": 8}]
)
def test_reconstruction_error_below_wanda(seed, sparsity):
    weight, X, stats = correlated_layer(seed)
    sparsegpt = method("sparsegpt", sparsity, blocksize=32).prune_layer("l", weight, stats)
    wanda = method("wanda", sparsity if sparsity["pattern"] == "nm" else {**sparsity, "group": "row"}).prune_layer("l", weight, stats)
    error = {name: torch.linalg.norm((weight - pruned_weight(r, weight)) @ X.t()) for name, r in [("sparsegpt", sparsegpt), ("wanda", wanda)]}
    assert error["sparsegpt"] < error["wanda"]
    sparsity_sg = float(sparsegpt.pruned.float().mean())
    assert 0.5 <= sparsity_sg <= 0.5 + 4 / weight.shape[1]  # per block: k + 1 zeros at most one more per block
    if sparsity["pattern"] == "nm":
        m, n = sparsity["m"], sparsity["n"]
        assert (sparsegpt.pruned.reshape(weight.shape[0], -1, m).sum(-1) == n).all()
    assert (pruned_weight(sparsegpt, weight)[sparsegpt.pruned] == 0).all()
    assert not sparsegpt.weight[~sparsegpt.pruned].equal(weight[~sparsegpt.pruned])  # kept weights were updated


def test_dead_inputs_are_zeroed():
    weight, X, _ = correlated_layer(1)
    X[:, 5] = 0
    accumulator = StatsAccumulator(X.shape[1], {"hessian"}, "cpu")
    accumulator.add_batch(X.reshape(8, -1, X.shape[1]))
    result = method("sparsegpt", {"pattern": "unstructured", "ratio": 0.3}).prune_layer("l", weight, accumulator.stats)
    assert (pruned_weight(result, weight)[:, 5] == 0).all()


def test_hessian_singular_after_dampening_names_the_knob():
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="not positive definite after dampening by percdamp=0.01.*score.percdamp"):
        inverse_hessian_factor(indefinite, 0.01)


def test_inverse_hessian_factor():
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(20, 6, generator=generator)
    H = A.t() @ A
    U = inverse_hessian_factor(H, 0.01)
    damped = H + 0.01 * torch.diag(H).mean() * torch.eye(6)
    assert torch.allclose(U.t() @ U, torch.linalg.inv(damped), atol=1e-5)
    assert torch.equal(U, U.triu())


def test_bad_configurations():
    with pytest.raises(ConfigError, match="percdamp=0.0 must be > 0"):
        build_method({"name": "sparsegpt", "percdamp": 0.0}, {"pattern": "unstructured"}, {"name": "none"})
    with pytest.raises(ConfigError, match="blocksize=0"):
        build_method({"name": "sparsegpt", "blocksize": 0}, {"pattern": "unstructured"}, {"name": "none"})
    with pytest.raises(ConfigError, match="sparsity.group must be auto or layer"):
        build_method({"name": "sparsegpt"}, {"pattern": "unstructured", "group": "row"}, {"name": "none"})
    cfg = compose_run("score=sparsegpt")
    assert build_method(cfg.score, cfg.sparsity, cfg.refine).required_stats == {"hessian"}


def test_sparsegpt_through_the_driver(family):
    model = tiny_model(family)
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    report = prune_model(model, method("sparsegpt", {"pattern": "nm", "n": 2, "m": 4}), ids, progress=False)
    assert report.overall_sparsity == 0.5
