"""DSnoT and R²-DSnoT: invariants, a plain per-row loop against the vectorised code, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_run, tiny_model

from symprune import data
from symprune.errors import ConfigError
from symprune.model.placement import ActivationStore, Placement
from symprune.model.structure import find_blocks, find_matrices
from symprune.prune.driver import capture_block_inputs, collect_stats, prune_model
from symprune.prune.method import build_method
from symprune.prune.scores.norms import weight_lp_norm
from symprune.prune.stats import LayerStats
from symprune.run.plan import plan_run

SHAPES = [(5, 16), (24, 64), (64, 96)]
PATTERNS = {
    "row50": {"pattern": "unstructured", "ratio": 0.5, "group": "row"},
    "row60": {"pattern": "unstructured", "ratio": 0.6, "group": "row"},
    "row70": {"pattern": "unstructured", "ratio": 0.7, "group": "row"},
    "layer60": {"pattern": "unstructured", "ratio": 0.6, "group": "layer"},
    "nm2:4": {"pattern": "nm", "n": 2, "m": 4},
    "nm4:8": {"pattern": "nm", "n": 4, "m": 8},
    "nm3:4": {"pattern": "nm", "n": 3, "m": 4},  # N > M - N: blocks can run out of prune candidates
    "nm2:4-stable": {"pattern": "nm", "n": 2, "m": 4, "ties": "stable"},  # equal scores: the lower column first
}
DSNOT_OFF = {"reweight": "none", "alpha": 1.0, "gamma1": 0.0, "gamma2": 0.0}
REFINEMENTS = {
    "dsnot": {"name": "dsnot"},
    "dsnot-same-sign": {"name": "dsnot", "same_sign": True},
    "dsnot-no-same-sign": {"name": "dsnot", "same_sign": False},
    "dsnot-var0-thr0": {"name": "dsnot", "var_power": 0.0, "update_threshold": 0.0, "max_cycles": 7},
    "r2-none": {"name": "r2dsnot", **DSNOT_OFF},
    "r2-grow": {"name": "r2dsnot", **DSNOT_OFF, "reweight": "grow", "norm_p": 2.0},
    "r2-prune": {"name": "r2dsnot", **DSNOT_OFF, "reweight": "prune"},
    "r2-both": {"name": "r2dsnot", **DSNOT_OFF, "reweight": "both", "reweight_scale": 3.0},
    "r2-alpha": {"name": "r2dsnot", **DSNOT_OFF, "alpha": 0.5},
    "r2-gamma1": {"name": "r2dsnot", **DSNOT_OFF, "gamma1": 0.5},
    "r2-gamma2": {"name": "r2dsnot", **DSNOT_OFF, "gamma2": 0.5},
    "r2-default": {"name": "r2dsnot"},
}


def random_layer(shape, seed):
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = shape
    weight = torch.randn(d_out, d_in, generator=g)
    stats = LayerStats(
        sq_norm=torch.rand(d_in, generator=g) * 4,
        mean_sum=torch.randn(d_in, generator=g),
        var=torch.rand(d_in, generator=g) + 0.05,
    )
    return weight, stats


def refine(refinement, pattern, weight, stats, score="wanda", layer="model.layers.0.self_attn.q_proj"):
    """The first mask and the refined one, as ``PruningMethod.prune_layer`` composes them."""
    method = build_method({"name": score}, PATTERNS[pattern], {"sublayers": "all", **REFINEMENTS[refinement]})
    scores = method.score.fn(weight, stats)
    first = method.pattern.fn(scores)
    refined, info = method.refine.fn(weight, first, scores=scores, stats=stats, layer=layer, contract=method.contract)
    return first, refined, info, scores, method.refine.param_dict()


# --- the plain per-row loop, written from docs/methods.md §4.1 and §8, one row at a time ---------------


def loop_refine(weight, pruned, scores, stats, m, *, max_cycles=50, update_threshold=0.1, var_power=1.0,
                same_sign=None, reweight="none", norm_p=1.0, reweight_scale=1.0, alpha=1.0, gamma1=0.0,
                gamma2=0.0, sublayers=None, name=None):
    W = weight.float()
    same_sign = (m is not None) if same_sign is None else same_sign
    contributions = W * stats.mean_sum.reshape(1, -1)
    errors = torch.where(pruned, contributions, 0).sum(dim=1)  # e_i, by definition
    inverse_rows, inverse_columns = 1 / weight_lp_norm(W, norm_p, 1), 1 / weight_lp_norm(W, norm_p, 0)
    mask = pruned.clone()
    swaps, attempts = [], []
    for i in range(W.shape[0]):
        c = contributions[i]
        relative = inverse_rows[i] + inverse_columns
        grow_key = c / torch.pow(stats.var, var_power) if var_power else c
        if m is None:
            activation = torch.sqrt(stats.sq_norm)
            prune_key = W[i].abs() * (activation if alpha == 1 else activation ** alpha)
        else:
            prune_key = scores[i].float()
        if reweight in ("grow", "both"):
            grow_key = grow_key * (reweight_scale * relative)
        if reweight in ("prune", "both"):
            prune_key = prune_key * (reweight_scale * relative)
        importance = W[i].abs() * relative
        if gamma1:
            prune_key = prune_key + gamma1 * importance

        columns = range(W.shape[1])
        grow_list = sorted((j for j in columns if pruned[i, j]), key=lambda j: (float(grow_key[j]), j))
        kept = sorted((j for j in columns if not pruned[i, j]), key=lambda j: (float(prune_key[j]), j))
        prune_list = ([j for j in kept if c[j] < 0] + [j for j in kept if c[j] == 0]
                      + [j for j in reversed(kept) if c[j] > 0])
        e, sign0, done, tries = errors[i], torch.sign(errors[i]), 0, 0
        while tries < max_cycles:
            tries += 1
            if not grow_list or not e.abs() > update_threshold:
                break
            g = grow_list[-1] if e > 0 else grow_list[0]
            if m is None:
                if not prune_list:
                    break
                p = prune_list[-1] if e < 0 else prune_list[0]
            else:
                start = g - g % m
                block = [j for j in range(start, start + m) if not pruned[i, j] and not mask[i, j]]
                if not block:
                    break
                p = min(block, key=lambda j: (float(prune_key[j]), j))
            e_after = e + c[p] - c[g]
            if same_sign and torch.sign(e_after) != sign0:
                break
            if gamma2 and not e_after.abs() + gamma2 * (importance[p] - importance[g]) < e.abs():
                break
            mask[i, p], mask[i, g] = True, False
            grow_list.remove(g)
            if m is None:
                prune_list.remove(p)
            e, done = e_after, done + 1
        swaps.append(done)
        attempts.append(tries)
    info = {"cycles": max(attempts), "swaps": sum(swaps), "active_rows": sum(s == max_cycles for s in swaps)}
    return mask, info


@pytest.mark.parametrize("refinement", sorted(REFINEMENTS))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_vectorised_equals_per_row_loop(refinement, pattern):
    for seed, shape in enumerate(SHAPES):
        for score in ("wanda", "ria"):
            weight, stats = random_layer(shape, seed)
            first, refined, info, scores, params = refine(refinement, pattern, weight, stats, score)
            m = PATTERNS[pattern]["m"] if pattern.startswith("nm") else None
            expected, expected_info = loop_refine(weight, first, scores, stats, m, **params)
            assert refined.equal(expected), (shape, score)
            assert {k: info[k] for k in expected_info} == expected_info, (shape, score)


@pytest.mark.parametrize("refinement", ["dsnot", "dsnot-same-sign", "r2-default", "r2-both", "r2-gamma2"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_zeros_per_row_and_block_are_kept(refinement, pattern):
    swaps = 0
    for seed, shape in enumerate(SHAPES + [(3, 8), (17, 200)]):
        weight, stats = random_layer(shape, 100 + seed)
        first, refined, info, _, _ = refine(refinement, pattern, weight, stats, score="ria")
        assert refined.sum(dim=1).equal(first.sum(dim=1))
        if "m" in PATTERNS[pattern]:
            m = PATTERNS[pattern]["m"]
            assert refined.reshape(shape[0], -1, m).sum(-1).equal(first.reshape(shape[0], -1, m).sum(-1))
        assert info["refined"] == 1 and refined.equal(first) == (info["swaps"] == 0)
        swaps += info["swaps"]
    assert swaps > 0  # masks actually changed


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_r2dsnot_with_every_switch_off_is_dsnot(pattern):
    for seed, shape in enumerate(SHAPES):
        weight, stats = random_layer(shape, 200 + seed)
        _, dsnot_mask, dsnot_info, _, _ = refine("dsnot", pattern, weight, stats)
        _, r2_mask, r2_info, _, _ = refine("r2-none", pattern, weight, stats)
        assert r2_mask.equal(dsnot_mask) and r2_info == dsnot_info
        _, other, _, _, _ = refine("r2-default", pattern, weight, stats)
        if not pattern.startswith("nm"):  # reweighting and α change the unstructured pruning order
            assert not other.equal(dsnot_mask)


def test_r2_pruning_order_is_ria_at_its_defaults():
    """reweight=prune, p=1, α=0.5: the unstructured pruning order is the RIA score, up to rounding."""
    from symprune.prune.refine.r2dsnot import R2DSnoTParams, r2_rankings
    from symprune.prune.scores.ria import ria

    weight, stats = random_layer((32, 48), 7)
    rankings = r2_rankings(weight, weight * stats.mean_sum, weight.abs(), stats, False, R2DSnoTParams())
    torch.testing.assert_close(rankings.prune, ria(weight, stats, a=0.5))


def test_error_and_info_are_reported():
    weight, stats = random_layer((64, 96), 3)
    first, refined, info, _, _ = refine("dsnot", "row50", weight, stats)
    contributions = weight * stats.mean_sum
    before = torch.where(first, contributions, 0).sum(1).abs().sum()
    after = torch.where(refined, contributions, 0).sum(1).abs().sum()
    assert info["abs_error_before"] == pytest.approx(float(before))
    assert info["abs_error_after"] == pytest.approx(float(after))
    assert info["error_grew"] == int(after > before)
    assert set(info) == {"refined", "cycles", "swaps", "active_rows", "abs_error_before", "abs_error_after",
                         "error_grew"}


@pytest.mark.parametrize("refinement", ["dsnot", "r2-default"])
def test_abs_error_shrinks_on_wide_random_layers(refinement):
    for seed, pattern in enumerate(["row50", "row70", "layer60", "nm2:4", "nm4:8"]):
        weight, stats = random_layer((256, 512), 300 + seed)
        _, _, info, _, _ = refine(refinement, pattern, weight, stats)
        assert info["abs_error_after"] <= info["abs_error_before"], pattern


def test_unselected_sublayer_keeps_its_mask():
    weight, stats = random_layer((24, 64), 5)
    method = build_method({"name": "wanda"}, PATTERNS["row50"], {"name": "dsnot"})  # default: attention only
    result = method.prune_layer("model.layers.0.mlp.down_proj", weight, stats)
    assert result.pruned.equal(method.pattern.fn(method.score.fn(weight, stats)))
    assert result.info == {"refined": 0, "cycles": 0, "swaps": 0, "active_rows": 0, "error_grew": 0}  # no error of its own


# --- the real model: statistics of SmolLM2's first block --------------------------------------------------


@pytest.fixture(scope="module")
def real_block0(smollm2, assets):
    """Block 0's seven linear layers of SmolLM2 with statistics from 8 × 256 WikiText-2 calibration tokens."""
    model, tokenizer = smollm2
    calibration, _ = data.calibration_ids("wikitext2", tokenizer, 8, 256, 0, str(assets))
    block = model.model.layers[0]
    matrices = find_matrices(block)
    cpu = torch.device("cpu")
    with ActivationStore(Placement(cpu)) as store, torch.inference_mode():
        inputs = capture_block_inputs(model, model.model.layers, calibration, 1, store, False)
        stats = collect_stats(block, matrices, inputs, {"sq_norm", "mean_sum", "var"}, cpu)
    return {f"model.layers.0.{name}": (matrix.weight.detach().clone(), stats[name]) for name, matrix in matrices.items()}


def refine_block(real_block0, refinement, pattern, score):
    return {name: refine(refinement, pattern, weight, stats, score, layer=name)
            for name, (weight, stats) in real_block0.items()}


@pytest.mark.real_model
@pytest.mark.parametrize("refinement", ["dsnot", "r2-default", "r2-gamma2"])
@pytest.mark.parametrize("pattern", ["row70", "layer60", "nm2:4"])
def test_real_block0_keeps_its_zeros(real_block0, refinement, pattern):
    for name, (first, refined, info, _, _) in refine_block(real_block0, refinement, pattern, "ria").items():
        assert refined.sum(dim=1).equal(first.sum(dim=1)), name
        if pattern.startswith("nm"):
            assert refined.reshape(-1, 4).sum(-1).equal(first.reshape(-1, 4).sum(-1)), name
        assert info["refined"] == 1 and info["swaps"] > 0, name


@pytest.mark.real_model
@pytest.mark.parametrize("refinement", ["dsnot", "r2-grow", "r2-prune", "r2-both"])
@pytest.mark.parametrize("score", ["wanda", "ria"])
def test_real_block0_error_falls_in_every_layer_at_60_percent(real_block0, refinement, score):
    """Measured on this block, not a guarantee (see the next test)."""
    for name, (_, _, info, _, _) in refine_block(real_block0, refinement, "row60", score).items():
        assert info["abs_error_after"] < info["abs_error_before"], name


@pytest.mark.real_model
def test_real_block0_error_can_grow(real_block0):
    """At 70% per row DSnoT leaves q_proj with a larger Σ|e_i| than RIA's first mask: a few rows overshoot
    through a near-constant input channel (tiny var_j) whose weights rank first for growing."""
    weight, stats = real_block0["model.layers.0.self_attn.q_proj"]
    _, _, info, _, _ = refine("dsnot", "row70", weight, stats, "ria")
    assert info["abs_error_after"] > 1.4 * info["abs_error_before"]
    assert float(stats.var.min()) < 1e-6 < float(stats.var.median())


def test_one_swap_can_overshoot_and_same_sign_stops_it():
    """Wanda prunes columns 0-2 (scores 1, 1, 1, 2, 2, 2): e = 6 - 5 - 0.5 = 0.5 > 0, so the first swap grows
    the largest contribution (6) and prunes the negative one (-0.25): e = -5.75, unless same_sign stops it."""
    weight = torch.ones(1, 6)
    stats = LayerStats(sq_norm=torch.tensor([1.0, 1, 1, 4, 4, 4]), mean_sum=torch.tensor([6.0, -5, -0.5, -0.25, 0.25, 0.5]),
                       var=torch.ones(6))
    for same_sign, expected in [(False, 5.75), (True, 0.5)]:
        method = build_method({"name": "wanda"}, PATTERNS["row50"],
                              {"name": "dsnot", "max_cycles": 1, "same_sign": same_sign, "sublayers": "all"})
        result = method.prune_layer("attn", weight, stats)
        assert result.info["abs_error_before"] == 0.5 and result.info["abs_error_after"] == expected


# --- through the driver on every tiny family ---------------------------------------------------------------

ATTENTION_LAYERS = {  # written out per family: an independent check of the attention/MLP classification
    "llama": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"},
    "qwen2": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"},
    "opt": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"},
    "gpt_neox": {"attention.query_key_value", "attention.dense"},
    "gpt2": {"attn.c_attn", "attn.c_proj"},
}


@pytest.mark.parametrize("sublayers", ["attention", "mlp", "all"])
def test_driver_refines_the_chosen_sublayers_of_every_family(family, sublayers):
    model = tiny_model(family)
    prefix, _ = find_blocks(model)
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    method = build_method({"name": "wanda"}, PATTERNS["row50"], {"name": "dsnot", "sublayers": sublayers})
    report = prune_model(model, method, ids, progress=False)
    for layer in report.layers:
        attention = layer.name.split(".", len(prefix.split(".")) + 1)[-1] in ATTENTION_LAYERS[family]
        expected = sublayers == "all" or (sublayers == "attention") == attention
        assert layer.info["refined"] == int(expected), layer.name
        assert layer.sparsity == 0.5  # every row keeps int(d_in/2) zeros
    assert any(layer.info["swaps"] > 0 for layer in report.layers)


# --- bad input: clear errors from the plan, before any weight loads ---------------------------------------


def plan_error(tiny_model_dir, *overrides) -> str:
    with pytest.raises(ConfigError) as error:
        plan_run(compose_run("model=local", f"model.pretrained={tiny_model_dir}", *overrides))
    return str(error.value)


@pytest.mark.parametrize("refine", ["dsnot", "r2dsnot"])
def test_bad_refinement_values(tiny_model_dir, refine):
    def error(*overrides):
        return plan_error(tiny_model_dir, f"refine={refine}", *overrides)

    assert "refine.update_threshold=-0.1 must be a finite number >= 0" in error("refine.update_threshold=-0.1")
    assert "refine.max_cycles=0 must be a positive integer" in error("refine.max_cycles=0")
    assert "refine.max_cycles=-3 must be a positive integer" in error("refine.max_cycles=-3")
    assert "unknown refine.sublayers 'attn'; valid: attention, mlp, all" in error("refine.sublayers=attn")
    assert "refine.var_power=-1.0 (the variance exponent γ) must be a finite number >= 0" in error("refine.var_power=-1")
    assert "unknown config key refine.reweight_typo" in error("+refine.reweight_typo=grow")


def test_bad_r2dsnot_values(tiny_model_dir):
    def error(*overrides):
        return plan_error(tiny_model_dir, "refine=r2dsnot", *overrides)

    assert "unknown refine.reweight 'growing'; valid: none, grow, prune, both" in error("refine.reweight=growing")
    assert "refine.gamma1=-0.5 must be a finite number >= 0" in error("refine.gamma1=-0.5")
    assert "refine.gamma2=-1.0 must be a finite number >= 0" in error("refine.gamma2=-1")
    assert "refine.norm_p=0.5 must be a number >= 1 (or inf)" in error("refine.norm_p=0.5")
    assert "refine.reweight_scale=0.0 must be a finite number > 0" in error("refine.reweight_scale=0")
    assert "refine.alpha=-0.5 must be a finite number >= 0" in error("refine.alpha=-0.5")
    # DSnoT has no R² parameters
    assert "unknown config key refine.reweight" in plan_error(tiny_model_dir, "refine=dsnot", "+refine.reweight=grow")


def test_refinement_configs_describe_the_reference_defaults(tiny_model_dir):
    plan = plan_run(compose_run("model=local", f"model.pretrained={tiny_model_dir}", "refine=dsnot",
                                "eval.perplexity.seqlen=256"))
    assert plan.method.describe()["refine"] == {
        "name": "dsnot", "max_cycles": 50, "update_threshold": 0.1, "var_power": 1.0, "same_sign": None,
        "sublayers": "attention",
    }
    assert {"sq_norm", "mean_sum", "var"} <= plan.method.required_stats


def test_command_records_the_refinement_per_layer(tiny_model_dir, assets, tmp_path):
    """``symprune refine=r2dsnot`` end to end: the run record and the W&B layer table carry the refinement's numbers."""
    import json

    from test_cli import symprune, tiny, wandb_run_dir

    done = symprune(*tiny(tiny_model_dir, assets, tmp_path, "refine=r2dsnot", "refine.reweight=grow",
                          "sparsity.ratio=0.6", "eval.perplexity.datasets=[wikitext2]"))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["method"]["refine"]["name"] == "r2dsnot" and record["method"]["refine"]["reweight"] == "grow"
    counts = {"refined", "cycles", "swaps", "active_rows", "error_grew"}
    keys = counts | {"abs_error_before", "abs_error_after"}
    assert [layer["info"]["refined"] for layer in record["layers"]] == [1, 1, 1, 1, 0, 0, 0] * 2  # attention only
    assert all(set(layer["info"]) == (keys if layer["info"]["refined"] else counts) for layer in record["layers"])
    assert sum(layer["info"]["swaps"] for layer in record["layers"]) > 0
    totals = record["metrics"]["layer_totals"]  # what a table of whole runs reads
    refined = [layer["info"] for layer in record["layers"] if layer["info"]["refined"]]
    assert totals["swaps"] == sum(layer["info"]["swaps"] for layer in record["layers"]) and totals["refined"] == 8
    assert totals["error_grew"] == sum(info["abs_error_after"] > info["abs_error_before"] for info in refined)
    assert totals["abs_error_before"] == pytest.approx(sum(info["abs_error_before"] for info in refined))
    (table_file,) = wandb_run_dir(tmp_path).glob("files/media/table/sparsity/layers_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["layer", "block", "d_out", "d_in", "zeros", "numel", "target", "sparsity", *sorted(keys)]


# --- the reference's own behaviour (zyxxmu/DSnoT, lib/prune.py), re-expressed as a test oracle ------------


def _reference_sign_reorder(values):
    """The reference's reorder of the kept weights (ascending Wanda) by the sign of c: the negatives in
    order, the positives reversed; a position whose c is 0 gets index 0 (a copy of the first candidate)."""
    width = values.shape[1]
    positions = torch.arange(width, dtype=torch.float64).repeat(values.shape[0], 1)
    negative = torch.where(values < 0, positions, float("inf")).sort(dim=1).values
    positive = torch.where(values > 0, positions, float("inf")).sort(dim=1).values.flip(dims=[1])
    return (negative.nan_to_num(posinf=0) + positive.nan_to_num(posinf=0)).long()


def reference_dsnot(weight, first, stats, *, m=None, max_cycles=50, threshold=0.1, var_power=1.0, scores=None):
    """DSnoT as the reference computes it, defects included: the growing order spans the whole row (kept
    weights at value 0), pointers move and masks are written for stopped rows too. Same-sign rule as there:
    off for unstructured, on for N:M (whose prune candidate is the block's lowest first score, via topk)."""
    W = weight.float()
    c = W * stats.mean_sum.reshape(1, -1)
    mask = first.clone()
    grow_metric = torch.where(first, c, 0)
    error = grow_metric.sum(dim=1, keepdim=True)
    sign0 = torch.sign(error)
    if var_power:
        grow_metric = grow_metric / torch.pow(stats.var.reshape(1, -1), var_power)
    grow_order = torch.sort(grow_metric, dim=1, stable=True).indices
    rows = W.shape[0]
    grow_ptr = torch.stack([torch.zeros(rows, dtype=torch.long), torch.full((rows,), W.shape[1] - 1)], dim=1)
    step = torch.tensor([1, -1]).repeat(rows, 1)
    active = torch.ones(rows, 1, dtype=torch.bool)
    if m is None:
        wanda = W.abs() * torch.sqrt(stats.sq_norm.reshape(1, -1))
        kept_count = int((~first[0]).sum())
        kept_order = torch.sort(wanda.masked_fill(first, float("inf")), dim=1, stable=True).indices[:, :kept_count]
        prune_order = kept_order.gather(1, _reference_sign_reorder(c.gather(1, kept_order)))
        prune_ptr = torch.stack([torch.zeros(rows, dtype=torch.long), torch.full((rows,), kept_count - 1)], dim=1)
    else:
        block_metric = scores.float().masked_fill(first, float("inf"))
    for _ in range(max_cycles):
        if not active.any():
            break
        side = (error > 0).long()
        at = grow_ptr.gather(1, side)
        grown = grow_order.gather(1, at)
        if m is None:
            grow_ptr.scatter_(1, side, at + step.gather(1, side))
            prune_side = (error < 0).long()
            prune_at = prune_ptr.gather(1, prune_side)
            dropped = prune_order.gather(1, prune_at)
            prune_ptr.scatter_(1, prune_side, prune_at + step.gather(1, prune_side))
        else:
            start = grown - grown % m
            block = start + torch.arange(m).repeat(rows, 1)
            dropped = start + torch.topk(block_metric.gather(1, block), 1, dim=1, largest=False).indices
        grown_c, dropped_c = c.gather(1, grown), c.gather(1, dropped)
        after = error + dropped_c - grown_c
        active = active & (error.abs() > threshold)
        if m is not None:
            active = active & (sign0 == torch.sign(after))
            block_metric.scatter_(1, dropped, float("inf"))
        mask.scatter_(1, dropped, active)
        mask.scatter_(1, grown, ~active)
        error = error + torch.where(active, dropped_c, 0)
        error = error - torch.where(active, grown_c, 0)
        if m is not None:
            grow_ptr.scatter_(1, side, at + step.gather(1, side))
    return mask


@pytest.mark.real_model
@pytest.mark.parametrize("pattern", ["row60", "row70", "nm2:4", "nm4:8"])
@pytest.mark.parametrize("score", ["wanda", "ria", "magnitude"])
def test_real_block0_masks_equal_the_reference(real_block0, pattern, score):
    """At SmolLM2's widths the reference's defects never trigger: symprune's masks are the reference's."""
    for name, (weight, stats) in real_block0.items():
        first, refined, _, scores, _ = refine("dsnot", pattern, weight, stats, score, layer=name)
        m = PATTERNS[pattern].get("m")
        assert refined.equal(reference_dsnot(weight, first, stats, m=m, scores=scores)), name


@pytest.mark.real_model
def test_real_block0_stable_ties_prune_the_lower_column(real_block0):
    """With sparsity.ties=stable, the N:M block's prune candidate among equal magnitudes is the lower column,
    as the plain loop takes it (min over (score, column)); the reference's topk order gives another mask."""
    name = "model.layers.0.self_attn.q_proj"
    weight, stats = real_block0[name]
    first, refined, _, scores, params = refine("dsnot", "nm2:4-stable", weight, stats, "magnitude", layer=name)
    assert refined.equal(loop_refine(weight, first, scores, stats, 4, **params)[0])
    assert not refined.equal(refine("dsnot", "nm2:4", weight, stats, "magnitude", layer=name)[1])


@pytest.mark.parametrize("pattern", ["row60", "row70", "nm2:4", "nm4:8"])
def test_wide_random_masks_equal_the_reference(pattern):
    for seed, score in enumerate(("wanda", "ria")):
        weight, stats = random_layer((48, 768), 500 + seed)
        first, refined, info, scores, _ = refine("dsnot", pattern, weight, stats, score)
        assert info["swaps"] > 0
        assert refined.equal(reference_dsnot(weight, first, stats, m=PATTERNS[pattern].get("m"), scores=scores))


def test_the_reference_can_change_a_rows_zeros_on_narrow_layers():
    """The narrow-layer defect symprune does not copy (docs/methods.md §8): on a narrow layer the reference's
    growing pointer reaches kept weights (value 0 in its order) and a row ends with extra zeros."""
    changed = 0
    for seed in range(10):  # 7 cycles: the reference's pruning pointer would run past its list after 8
        weight, stats = random_layer((16, 16), 400 + seed)
        first, refined, _, _, _ = refine("dsnot-var0-thr0", "row50", weight, stats)
        reference = reference_dsnot(weight, first, stats, max_cycles=7, threshold=0.0, var_power=0.0)
        assert refined.sum(dim=1).equal(first.sum(dim=1))
        changed += int((reference.sum(dim=1) != first.sum(dim=1)).sum())
    assert changed > 0
