"""Layer targeting and layer-wise sparsity allocation: the rules against literal re-implementations of their
references' formulas, the driver's masks and ratios on tiny models, and every bad value at plan time."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import TINY_VOCAB, compose_run, tiny_architecture, tiny_model

from symprune.errors import ConfigError
from symprune.model.structure import find_blocks, linear_shapes
from symprune.prune import driver
from symprune.prune.allocation import ALLOCATIONS, Layout
from symprune.prune.allocation.alpha import hill_alpha
from symprune.prune.allocation.owl import outlier_ratio
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.targets import Targets
from symprune.run.plan import plan_run


def wanda_method(ratio=0.6, group="row", refine="none"):
    return build_method({"name": "wanda"}, {"pattern": "unstructured", "ratio": ratio, "group": group}, {"name": refine})


def calibration(samples=4, tokens=32, seed=1):
    return torch.randint(0, TINY_VOCAB, (samples, tokens), generator=torch.Generator().manual_seed(seed))


def allocation(name, **params):
    return ALLOCATIONS.build({"name": name, **params})


def pruned_masks(model, method, **options):
    model = copy.deepcopy(model)
    report = prune_model(model, method, calibration(), progress=False, **options)
    return report, {name: report.masks.mask(name) for name in report.masks.shapes}


# --- the rules against their references' formulas ----------------------------------------------------------


def reference_owl(outlier_ratios, target, lam):
    """luuyin/OWL's allocation, written as its reference computes it (numpy, a plain mean over the blocks)."""
    ratios = np.array(outlier_ratios)
    ratios = (ratios - ratios.min()) * (1 / (ratios.max() - ratios.min()) * lam * 2)
    ratios = ratios - np.mean(ratios) + (1 - target)
    return 1 - ratios


def test_owl_ratios_are_the_references_formula():
    blocks, per_block = 5, 3
    layout = Layout(tuple(f"b{b}.m{m}" for b in range(blocks) for m in range(per_block)),
                    tuple(b for b in range(blocks) for _ in range(per_block)), (64 * 32,) * (blocks * per_block))
    outliers = [2.5, 7.0, 4.25, 9.5, 3.0]
    evidence = layout.per_layer(torch.tensor(outliers, dtype=torch.float64))
    ratios = allocation("owl", lam=0.08).fn(layout, 0.7, evidence)
    expected = np.repeat(reference_owl(outliers, 0.7, 0.08), per_block)
    np.testing.assert_allclose(ratios.numpy(), expected, rtol=0, atol=1e-12)
    assert ratios[3 * per_block] == ratios.min()  # the block with the most outliers keeps the most
    assert float((ratios * layout.size_tensor()).sum() / layout.size_tensor().sum()) == pytest.approx(0.7, abs=1e-12)


def test_outlier_ratio_is_the_references_count():
    torch.manual_seed(0)
    scores = [torch.rand(8, 16) ** 4, torch.rand(4, 16) * 3]
    flat = torch.cat([s.flatten() for s in scores])
    for M in (1.5, 3.0, 5.0):
        expected = float((flat > torch.mean(flat) * M).sum()) / flat.numel() * 100
        assert outlier_ratio(scores, M) == pytest.approx(expected, abs=1e-12)


def matrix_with_spectrum(singular_values, d_out, d_in, seed=0):
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=generator, dtype=torch.float64))
    rank = len(singular_values)
    return (u[:, :rank] * torch.tensor(singular_values, dtype=torch.float64)) @ v[:, :rank].T


def literal_hill(eigs, i):
    """α = 1 + n / Σ_{k ≥ i} log(λ_k / λ_i) over the n largest eigenvalues from the i-th (ascending order)."""
    tail = np.sort(eigs)[i:]
    return 1 + len(tail) / np.sum(np.log(tail / tail[0]))


def literal_alpha_peak(eigs, bins=100):
    """haiquanlu/AlphaPruning's xmin_peak fit in numpy: every x_min near the histogram peak, the smallest KS distance."""
    eigs = np.sort(eigs)
    log10 = np.log10(eigs)
    counts, edges = np.histogram(log10, bins=bins, range=(log10.min(), log10.max()))
    peak = 10 ** edges[np.argmax(counts)]
    best = (math.inf, None)
    for i, xmin in enumerate(eigs[:-1]):
        if xmin < np.log10(0.95 * peak):
            continue
        if xmin > 1.5 * peak:
            break
        n = len(eigs) - i
        alpha = literal_hill(eigs, i)
        distance = np.max(np.abs(1 - (eigs[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n)) if alpha > 1 else 1.0
        if distance < best[0]:
            best = (distance, alpha)
    return best[1]


def test_hill_exponents_on_a_known_spectrum():
    # a power-law spectrum: eigenvalues λ = s² with a Pareto tail of exponent 3 (singular values rising)
    eigs = (1 - np.linspace(0, 0.98, 48)) ** (-1 / 2.0)
    weight = matrix_with_spectrum(np.sqrt(eigs)[::-1].copy(), 64, 48)
    assert hill_alpha(weight, "alpha_mid") == pytest.approx(literal_hill(eigs, len(eigs) // 2), rel=1e-4)
    assert hill_alpha(weight, "alpha_peak") == pytest.approx(literal_alpha_peak(eigs), rel=1e-4)


def test_alpha_ratios_are_the_references_mapping():
    layout = Layout(tuple(f"b{b}.m{m}" for b in range(3) for m in range(2)), (0, 0, 1, 1, 2, 2),
                    (100, 300, 100, 300, 100, 300))
    alphas = torch.tensor([2.0, 4.0, 3.0, 3.0, 6.0, 5.0], dtype=torch.float64)
    ratios = allocation("alpha", epsilon=0.3).fn(layout, 0.5, alphas)
    block_means = torch.tensor([3.0, 3.0, 3.0, 3.0, 5.5, 5.5], dtype=torch.float64)
    s1, s2 = 0.7, 1.3
    mapped = (block_means - block_means.min()) / (block_means.max() - block_means.min()) * (s2 - s1) + s1
    sizes = layout.size_tensor()
    expected = mapped * (sizes.sum() * 0.5 / (sizes * mapped).sum())
    torch.testing.assert_close(ratios, expected, rtol=0, atol=1e-12)
    assert ratios[4] > ratios[0]  # the less heavy-tailed block is pruned more


def test_linear_ratios_rise_over_the_depth_and_average_the_target():
    layout = Layout(("a", "b", "c", "d"), (0, 1, 2, 3), (10, 10, 10, 10))
    rising = allocation("linear", spread=0.12).fn(layout, 0.5, None)
    torch.testing.assert_close(rising, torch.tensor([0.44, 0.48, 0.52, 0.56], dtype=torch.float64))
    falling = allocation("linear", spread=0.12, direction="falling").fn(layout, 0.5, None)
    torch.testing.assert_close(falling, rising.flip(0))


# --- the driver --------------------------------------------------------------------------------------------


def test_uniform_and_equal_lists_give_todays_masks():
    model = tiny_model("llama")
    _, today = pruned_masks(model, wanda_method())
    _, uniform = pruned_masks(model, wanda_method(), allocation=allocation("uniform"))
    report, listed = pruned_masks(model, wanda_method(), allocation=allocation("list", ratios=[0.6, 0.6]))
    assert today.keys() == uniform.keys() == listed.keys()
    assert all(today[name].equal(uniform[name]) and today[name].equal(listed[name]) for name in today)
    assert {layer.target for layer in report.layers} == {0.6}


def dense_block_outliers(model, ids, M):
    """OWL's D_l by hand: the dense model's block inputs from one whole-model pass (output_hidden_states), every
    linear's ‖X_:,j‖² from forward hooks, Wanda scores, the share above M × their mean."""
    _, blocks = find_blocks(model)
    norms = {}
    hooks = [layer.register_forward_hook(lambda module, args, out, name=name: norms.__setitem__(
        name, norms.get(name, 0) + (args[0].double() ** 2).sum(dim=(0, 1))))
        for name, layer in model.named_modules() if isinstance(layer, torch.nn.Linear) and ".layers." in name]
    with torch.no_grad():
        for sample in ids:
            model(sample[None])
    for hook in hooks:
        hook.remove()
    outliers = []
    for index in range(len(blocks)):
        scores = [model.get_submodule(name).weight.double().abs() * norm.sqrt()
                  for name, norm in norms.items() if name.startswith(f"model.layers.{index}.")]
        flat = torch.cat([score.flatten() for score in scores])
        outliers.append(100 * float((flat > flat.mean() * M).sum()) / flat.numel())
    return outliers


def test_owl_in_the_driver_measures_the_dense_model():
    model = tiny_architecture("llama3", num_hidden_layers=4)
    ids = calibration()
    outliers = dense_block_outliers(model, ids, M=2.0)
    assert len(set(outliers)) > 1
    report, _ = pruned_masks(model, wanda_method(0.6), allocation=allocation("owl", M=2.0, lam=0.1))
    expected = reference_owl(outliers, 0.6, 0.1)
    for block, target, achieved in report.block_sparsities():
        assert target == pytest.approx(expected[block], abs=1e-9)
        assert 0 <= target - achieved < 1 / 64  # each row prunes int(d_in · ratio), d_in ≥ 64
    assert 0 <= 0.6 - report.overall_sparsity < 1 / 64


def test_alpha_in_the_driver_uses_each_matrixs_spectrum():
    model = tiny_architecture("llama3", num_hidden_layers=3)
    report, _ = pruned_masks(model, wanda_method(0.5), allocation=allocation("alpha", mapping="layer_wise"))
    _, blocks = find_blocks(model)
    alphas = {layer.name: hill_alpha(model.get_submodule(layer.name).weight) for layer in report.layers}
    order = sorted(alphas, key=alphas.get)
    targets = {layer.name: layer.target for layer in report.layers}
    assert [targets[name] for name in order] == sorted(targets.values())  # larger α, more pruned
    sizes = {layer.name: layer.numel for layer in report.layers}
    assert sum(targets[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.5, abs=1e-12)


def test_targets_and_ignore_choose_the_pruned_matrices():
    model = tiny_model("llama")
    every = set(linear_shapes(model))
    mlp_only = Targets(("mlp",), ("layers\\.0\\.",))
    report, masks = pruned_masks(model, wanda_method(), targets=mlp_only)
    assert set(masks) == {name for name in every if ".mlp." in name and ".layers.1." in name}
    untouched = every - set(masks)
    original = dict(model.named_modules())
    pruned_model = copy.deepcopy(model)
    prune_model(pruned_model, wanda_method(), calibration(), progress=False, targets=mlp_only)
    for name in untouched:
        assert pruned_model.get_submodule(name).weight.equal(original[name].weight), name


def test_a_router_is_pruned_only_when_named():
    model = tiny_architecture("phimoe")
    report, masks = pruned_masks(model, wanda_method(0.5))
    assert not any(name.endswith(".router") for name in masks) and any(".experts." in name for name in masks)
    report, masks = pruned_masks(model, wanda_method(0.5), targets=Targets((r"\.router$",)))
    assert sorted(masks) == ["model.layers.0.mlp.router", "model.layers.1.mlp.router"]
    assert report.overall_sparsity == 0.5


# --- plan-time errors ------------------------------------------------------------------------------------


def plan(*overrides):
    return plan_run(compose_run("model=synthetic", "calibration=random", "eval=perplexity_random", "logger=none",
                                "device=cpu", *overrides))


@pytest.mark.parametrize("overrides, message", [
    (("allocation=owl", "sparsity=nm_2_4"), "fixes its own in every matrix: use allocation=uniform"),
    (("allocation=list", "allocation.ratios=[0.5,0.5,0.5]"), "has 3 entries; the model has 2 blocks"),
    (("allocation=list", "allocation.ratios=[0.5,0.7]"), "prune 0.600000 of the pruned weights, but sparsity.ratio is 0.5"),
    (("allocation=list", "allocation.ratios={mlp: 0.5}"), "no pattern of mlp matches model.layers.0.self_attn.q_proj"),
    (("allocation=list",), "allocation=list needs allocation.ratios"),
    (("allocation=linear", "allocation.spread=0.9", "sparsity.ratio=0.9"), "outside [0, 1)"),
    (("allocation=owl", "allocation.M=0"), "allocation.M=0.0 must be positive"),
    (("allocation=alpha", "allocation.metric=alpha_max"), "unknown allocation.metric 'alpha_max'; valid: alpha_peak, alpha_mid"),
    (("targets=[q_prj]",), "'q_prj' matches no prunable matrix of the model; closest names"),
    (("targets=[lm_head]",), "'lm_head' matches lm_head, outside the decoder blocks"),
    (("ignore=[proj]",), "leave no matrix to prune"),
    (("targets=['(']",), "targets: '(' is not a regular expression"),
])
def test_bad_allocations_and_targets_fail_at_plan_time(overrides, message):
    with pytest.raises(ConfigError) as error:
        plan("model.shape.num_layers=2", *overrides)
    assert message in str(error.value)


def test_defaults_keep_the_run_identity():
    default = plan()
    explicit = plan("allocation=uniform", "targets=null", "ignore=[]")
    assert default.config_hash == explicit.config_hash
    assert plan("allocation=owl").config_hash != default.config_hash
    assert plan("ignore=[down_proj]").config_hash != default.config_hash
    assert plan("allocation=owl").needs_calibration and not plan("score=magnitude").needs_calibration


@pytest.mark.parametrize("refine", ["none", "dsnot"])  # DSnoT reads block 0's mean and variance as well
def test_owls_masks_are_the_methods_at_owls_ratios(refine, monkeypatch):
    """The dense pass leaves the calibration inputs at block 0 as captured and hands the pruning pass block 0's
    statistics (one statistics pass fewer): pruning at OWL's ratios given as a list, which measures block 0
    again, makes the same masks; a score without statistics works with OWL too."""
    passes = []
    counted = driver.collect_stats
    monkeypatch.setattr(driver, "collect_stats", lambda block, *args, **kwargs: passes.append(block) or counted(block, *args, **kwargs))
    model = tiny_architecture("llama3", num_hidden_layers=4)
    report, owl_masks = pruned_masks(model, wanda_method(0.6, refine=refine), allocation=allocation("owl", M=2.0, lam=0.1))
    assert len(passes) == 4 + 3  # the dense pass, then blocks 1-3
    ratios = [target for _, target, _ in report.block_sparsities()]
    _, listed = pruned_masks(model, wanda_method(0.6, refine=refine), allocation=allocation("list", ratios=ratios))
    assert len(passes) == 7 + 4
    assert owl_masks.keys() == listed.keys() and all(owl_masks[name].equal(listed[name]) for name in owl_masks)
    magnitude = build_method({"name": "magnitude"}, {"pattern": "unstructured", "ratio": 0.6, "group": "row"},
                             {"name": "none"})
    report, _ = pruned_masks(model, magnitude, allocation=allocation("owl", M=2.0, lam=0.1))
    assert [target for _, target, _ in report.block_sparsities()] == pytest.approx(ratios, abs=1e-12)
