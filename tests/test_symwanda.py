"""The SymWanda score family: presets against the dedicated reference functions, stochRIA, errors."""

import pytest
import torch
from conftest import compose_run
from hydra.errors import ConfigCompositionException

from symprune.errors import ConfigError
from symprune.prune.method import build_method
from symprune.prune.scores import SCORES
from symprune.prune.stats import LayerStats, StatsAccumulator


def layer(seed, d_out=48, d_in=64):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d_out, d_in, generator=generator)
    inputs = torch.randn(4, 32, d_in, generator=generator) * torch.rand(d_in, generator=generator) * 2
    accumulator = StatsAccumulator(d_in, {"sq_norm", "out_sq_norm"}, "cpu", d_out=d_out)
    accumulator.add_batch(inputs, inputs @ weight.t())
    return weight, accumulator.stats


def preset(name, *overrides, sparsity="unstructured"):
    cfg = compose_run(f"score={name}", f"sparsity={sparsity}", *overrides)
    return build_method(cfg.score, cfg.sparsity, cfg.refine)


def scores_of(method, weight, stats, name="model.layers.0.mlp.up_proj"):
    context = {"layer": name} if method.score.meta("takes_layer") else {}
    return method.score.fn(weight, stats, **context)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sparsity", ["unstructured", "nm_2_4", "nm_4_8"])
@pytest.mark.parametrize("name", ["magnitude", "wanda", "ria"])
def test_presets_equal_the_dedicated_functions_bit_for_bit(name, sparsity, seed):
    weight, stats = layer(seed)
    general, dedicated = preset(name, sparsity=sparsity), preset(f"{name}_reference", sparsity=sparsity)
    assert general.pattern.params == dedicated.pattern.params  # same comparison group (auto)
    assert scores_of(general, weight, stats).equal(scores_of(dedicated, weight, stats))
    assert general.prune_layer("l", weight, stats).pruned.equal(dedicated.prune_layer("l", weight, stats).pruned)


def test_ri_preset_equals_ria_with_a_zero():
    weight, stats = layer(0)
    ri = preset("ri")
    assert ri.required_stats == frozenset()
    dedicated = build_method({"name": "ria", "a": 0.0}, {"pattern": "unstructured"}, {"name": "none"})
    assert ri.prune_layer("l", weight, LayerStats()).pruned.equal(dedicated.prune_layer("l", weight, stats).pruned)


def test_general_score_hand_computed():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    stats = LayerStats(sq_norm=torch.tensor([4.0, 9.0]), out_sq_norm=torch.tensor([16.0, 1.0]))

    def score(**params):
        return SCORES.build({"name": "symwanda", **params}).fn(weight, stats, layer="l")

    magnitude = weight.abs()
    # symmetric: |W_ij| (||W_:,j||_2 + ||W_i,:||_2); column norms sqrt(10), sqrt(20); row norms sqrt(5), 5
    expected = magnitude * (torch.tensor([[10.0, 20.0]]).sqrt() + torch.tensor([[5.0], [25.0]]).sqrt())
    assert torch.allclose(score(input="weight_l2", output="weight_l2"), expected)
    # owanda: |W_ij| ||Y_i||, output norms 4 and 1; weighted general_sym: 2|W|A_j + 0.5|W|B_i
    assert torch.allclose(score(input="zero", output="activation"), magnitude * torch.tensor([[4.0], [1.0]]))
    general = score(input="activation", output="activation", w_in=2.0, w_out=0.5)
    assert torch.allclose(general, 2 * magnitude * torch.tensor([[2.0, 3.0]]) + 0.5 * magnitude * torch.tensor([[4.0], [1.0]]))
    # l-inf RIA: |W| / max|W_:,j| + |W| / max|W_i,:|, times ||X_:,j||^a with a = 1
    linf = magnitude / torch.tensor([[3.0, 4.0]]) + magnitude / torch.tensor([[2.0], [4.0]])
    assert torch.allclose(score(input="inv_lp", output="inv_lp", p=float("inf"), a=1.0), linf * torch.tensor([[2.0, 3.0]]))
    # l2 RIA
    l2 = magnitude / torch.tensor([[10.0, 20.0]]).sqrt() + magnitude / torch.tensor([[5.0], [25.0]]).sqrt()
    assert torch.allclose(score(input="inv_lp", output="inv_lp", p=2.0), l2)


def test_required_statistics_follow_the_factors():
    def needs(**params):
        return SCORES.build({"name": "symwanda", **params}).meta("stats")

    assert needs(input="activation") == {"sq_norm"}
    assert needs(input="zero", output="activation") == {"out_sq_norm"}
    assert needs(input="inv_lp", output="inv_lp") == frozenset()
    assert needs(input="inv_lp", output="inv_lp", a=0.5) == {"sq_norm"}


def test_activation_factor_without_statistics_is_a_clear_error():
    weight, _ = layer(0)
    with pytest.raises(ValueError, match="symwanda's activation factor needs the calibration statistic 'out_sq_norm'"):
        SCORES.build({"name": "symwanda", "input": "zero", "output": "activation"}).fn(weight, LayerStats(), layer="l")


# --- stochRIA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sparsity", ["unstructured", "nm_2_4"])
def test_stochria_with_beta_one_is_ria_exactly(seed, sparsity):
    weight, stats = layer(seed)
    stoch = preset("stochria", "score.beta=1.0", sparsity=sparsity)
    ria = preset("ria_reference", sparsity=sparsity)
    assert scores_of(stoch, weight, stats).equal(scores_of(ria, weight, stats))
    assert stoch.prune_layer("l", weight, stats).pruned.equal(ria.prune_layer("l", weight, stats).pruned)


def test_stochria_is_seeded_per_run_and_per_layer():
    weight, stats = layer(0)
    first, again = preset("stochria"), preset("stochria")
    other_seed = preset("stochria", "score.seed=1")
    mask = first.prune_layer("model.layers.0.mlp.up_proj", weight, stats).pruned
    assert mask.equal(again.prune_layer("model.layers.0.mlp.up_proj", weight, stats).pruned)
    assert not mask.equal(other_seed.prune_layer("model.layers.0.mlp.up_proj", weight, stats).pruned)
    assert not mask.equal(first.prune_layer("model.layers.1.mlp.up_proj", weight, stats).pruned)


@pytest.mark.parametrize("replacement", [False, True])
def test_sampled_sums_draw_ceil_beta_entries(replacement):
    from symprune.prune.scores.symwanda import sampled_sums

    ones = torch.ones(30, 50)
    generator = torch.Generator().manual_seed(0)
    columns = sampled_sums(ones, 0, 0.1, replacement, generator)  # each column: ceil(0.1 · 30) = 3 draws
    rows = sampled_sums(ones, 1, 0.1, replacement, generator)  # each row: ceil(0.1 · 50) = 5 draws
    assert columns.shape == (50,) and (columns == 3).all()
    assert rows.shape == (30,) and (rows == 5).all()


def test_stochria_switches_change_the_scores():
    weight, stats = layer(2)
    base = scores_of(preset("stochria"), weight, stats)
    rescaled = scores_of(preset("stochria", "score.rescale=true"), weight, stats)
    assert torch.allclose(rescaled, base * 0.1)  # both normalisers scaled by 1/beta
    without_activation = scores_of(preset("stochria", "score.a=0.0"), weight, stats)
    assert torch.allclose(without_activation * stats.sq_norm.sqrt() ** 0.5, base)
    with_replacement = scores_of(preset("stochria", "score.replacement=true"), weight, stats)
    assert not with_replacement.equal(base)


@pytest.mark.parametrize(
    "override,message",
    [
        ("score.p=0.5", "norm p=0.5 must be a number >= 1"),
        ("score.p=nan", "norm p=nan must be a number >= 1"),
        ("score.beta=0.0", r"sampling ratio beta=0.0 is outside \(0, 1\]"),
        ("score.beta=1.5", r"sampling ratio beta=1.5 is outside \(0, 1\]"),
        ("score.input=gradient", "unknown input factor 'gradient'; valid: activation, inv_lp"),
        ("score.reference_group=column", "unknown reference_group 'column'"),
    ],
)
def test_bad_parameters(override, message):
    cfg = compose_run("score=stochria", override)
    with pytest.raises(ConfigError, match=message):
        build_method(cfg.score, cfg.sparsity, cfg.refine)


def test_p_must_be_a_number():
    with pytest.raises(ConfigCompositionException, match="score.p=large"):
        compose_run("score=ria_l2", "score.p=large")
    with pytest.raises(ConfigError, match="score 'symwanda'.*large"):
        SCORES.build({"name": "symwanda", "p": "large"})


def test_both_factors_zero_is_rejected():
    with pytest.raises(ConfigError, match="both 'zero'"):
        SCORES.build({"name": "symwanda", "input": "zero", "output": "zero"})
