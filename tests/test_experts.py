"""Mixture of experts: each expert of a fused experts parameter is pruned as its own matrices, with
statistics from exactly the tokens the router sent to it; routers stay dense."""

import copy
import dataclasses
import logging
import math

import pytest
import torch
from conftest import ALTERNATING, TINY_ARCHITECTURE, compose_run, tiny_architecture
from test_driver import calibration, method, wanda_row_mask
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from symprune.errors import ConfigError
from symprune.model.placement import ActivationStore, Placement
from symprune.model.structure import find_blocks, find_matrices, skeleton
from symprune.model.support import check_architecture
from symprune.prune.driver import capture_block_inputs, collect_stats, prune_model
from symprune.prune.method import build_method
from symprune.prune.scores import SCORES
from symprune.prune.stats import StatsAccumulator
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute

CPU = torch.device("cpu")
MOE = ("mixtral", "qwen3_moe")


def routed_by_hand(model, ids):
    """Per calibration sequence: what block 0's MoE layer receives, and the experts its router picks per token
    (the top k of the router's logits)."""
    mlp = find_blocks(model)[1][0].mlp
    router = mlp.router if hasattr(mlp, "router") else mlp.gate
    seen = []
    hook = mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0][0]))
    with torch.no_grad():
        for sample in ids:
            model(sample.unsqueeze(0), use_cache=False)
    hook.remove()
    top_k = model.config.num_experts_per_tok
    return [(x, torch.topk(F.linear(x, router.weight, getattr(router, "bias", None)), top_k).indices) for x in seen]


def expert_inputs_by_hand(model, routed, expert):
    """Per sequence that sent a token to ``expert``: the gate/up inputs (those tokens) and the down inputs
    silu(x W_gateᵀ) · (x W_upᵀ)."""
    assert model.config.hidden_act == "silu"
    gate_up = find_blocks(model)[1][0].mlp.experts.gate_up_proj[expert]
    width = gate_up.shape[0] // 2
    sequences = []
    for x, routes in routed:
        tokens = x[(routes == expert).any(dim=-1)]
        if len(tokens):
            sequences.append((tokens, F.silu(tokens @ gate_up[:width].t()) * (tokens @ gate_up[width:].t())))
    return sequences


def driver_stats(model, ids, batch_size):
    _, blocks = find_blocks(model)
    with ActivationStore(Placement(CPU)) as store, torch.no_grad():
        inputs = capture_block_inputs(model, blocks, ids, batch_size, store, progress=False)
        return collect_stats(blocks[0], find_matrices(blocks[0]), inputs, {"sq_norm"}, CPU)


@pytest.mark.parametrize("family", MOE)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_expert_statistics_are_those_of_its_routed_tokens(family, batch_size):
    """‖X_:,j‖² of each expert's matrices over the tokens routed to it, as a mean over the sequences that
    routed any: gate/up read the routed tokens, down reads their gated activations."""
    model = tiny_architecture(family)
    ids = calibration(samples=3, tokens=24)
    stats = driver_stats(model, ids, batch_size)
    routed = routed_by_hand(model, ids)
    for expert in range(model.config.num_local_experts if family == "mixtral" else model.config.num_experts):
        sequences = expert_inputs_by_hand(model, routed, expert)
        assert sequences, "every expert of the tiny model gets calibration tokens"
        tokens = torch.stack([x.pow(2).sum(0) for x, _ in sequences]).mean(0)
        hidden = torch.stack([h.pow(2).sum(0) for _, h in sequences]).mean(0)
        for part, expected in (("gate_proj", tokens), ("up_proj", tokens), ("down_proj", hidden)):
            layer = stats[f"mlp.experts.{expert}.{part}"]
            assert layer.n_tokens == sum(len(x) for x, _ in sequences) and layer.n_sequences == len(sequences)
            torch.testing.assert_close(layer.sq_norm, expected, rtol=1e-5, atol=1e-7)


def test_gate_and_up_of_an_expert_compute_their_statistics_once(monkeypatch):
    """An expert's gate and up projections read the same routed tokens: their input terms are computed once per
    sequence, and both equal, bit for bit, an accumulator of their own fed with those tokens."""
    model = tiny_architecture("mixtral")
    ids = calibration(samples=3, tokens=24)
    wanted = {"sq_norm", "var", "hessian"}
    computed = []
    original = StatsAccumulator._input_terms
    monkeypatch.setattr(StatsAccumulator, "_input_terms", lambda self, x, n: computed.append(x.shape) or original(self, x, n))
    _, blocks = find_blocks(model)
    with ActivationStore(Placement(CPU)) as store, torch.no_grad():
        inputs = capture_block_inputs(model, blocks, ids, 1, store, progress=False)
        stats = collect_stats(blocks[0], find_matrices(blocks[0]), inputs, wanted, CPU)
    monkeypatch.undo()
    routed = routed_by_hand(model, ids)
    experts = range(model.config.num_local_experts)
    routed_sequences = sum(len(expert_inputs_by_hand(model, routed, expert)) for expert in experts)
    assert len(computed) == 2 * len(ids) + 2 * routed_sequences  # q/k/v, o_proj (routers stay dense); per expert: gate/up, down
    for expert in experts:
        alone = StatsAccumulator(model.config.hidden_size, wanted, CPU)
        for tokens, _ in expert_inputs_by_hand(model, routed, expert):
            alone.add_batch(tokens.unsqueeze(0))
        for part in ("gate_proj", "up_proj"):
            for statistic in wanted:
                torch.testing.assert_close(getattr(stats[f"mlp.experts.{expert}.{part}"], statistic),
                                           getattr(alone.stats, statistic), rtol=1e-5, atol=1e-6)
        assert stats[f"mlp.experts.{expert}.gate_proj"].hessian.equal(stats[f"mlp.experts.{expert}.up_proj"].hessian)


@pytest.mark.parametrize("family", MOE)
def test_expert_masks_are_wanda_on_the_routed_tokens(family):
    model = tiny_architecture(family)
    ids = calibration(samples=3, tokens=24)
    routed = routed_by_hand(model, ids)
    dense = copy.deepcopy(find_blocks(model)[1][0].mlp.experts)
    by_expert = [expert_inputs_by_hand(model, routed, expert) for expert in range(dense.down_proj.shape[0])]
    report = prune_model(model, method(), ids, progress=False)
    experts = find_blocks(model)[1][0].mlp.experts
    routed_tokens = {layer.name: layer.info["routed_tokens"] for layer in report.layers if "routed_tokens" in layer.info}
    for expert, sequences in enumerate(by_expert):
        width = dense.gate_up_proj.shape[1] // 2
        hand = {
            "gate_proj": (dense.gate_up_proj[expert][:width], torch.cat([x for x, _ in sequences])),
            "up_proj": (dense.gate_up_proj[expert][width:], torch.cat([x for x, _ in sequences])),
            "down_proj": (dense.down_proj[expert], torch.cat([h for _, h in sequences])),
        }
        ours = {"gate_proj": experts.gate_up_proj[expert][:width], "up_proj": experts.gate_up_proj[expert][width:],
                "down_proj": experts.down_proj[expert]}
        for part, (weight, X) in hand.items():
            assert (ours[part] == 0).equal(wanda_row_mask(weight, X, 0.5, len(ids))), (expert, part)
            assert routed_tokens[f"model.layers.0.mlp.experts.{expert}.{part}"] == len(X)
    assert find_blocks(model)[1][0].mlp.gate.weight.equal(find_blocks(tiny_architecture(family))[1][0].mlp.gate.weight)


def test_experts_without_calibration_tokens_are_pruned_by_magnitude_and_reported(caplog):
    """Eight experts, one per token, three calibration tokens: at least five experts get none. Those are
    pruned by weight magnitude under the same pattern (exact sparsity), reported with routed_tokens 0
    and a warning; the others by Wanda on their tokens."""
    model = tiny_architecture("mixtral", num_local_experts=8, num_experts_per_tok=1)
    ids = calibration(samples=1, tokens=3)
    routed = routed_by_hand(model, ids)
    dense = copy.deepcopy(find_blocks(model)[1][0].mlp.experts)
    with caplog.at_level(logging.WARNING, logger="symprune"):
        report = prune_model(model, method(), ids, progress=False)
    reports = {layer.name: layer for layer in report.layers}
    experts = find_blocks(model)[1][0].mlp.experts
    unrouted = [expert for expert in range(8) if not expert_inputs_by_hand(model, routed, expert)]
    assert len(unrouted) >= 5
    for expert in unrouted:
        layer = reports[f"model.layers.0.mlp.experts.{expert}.down_proj"]
        assert layer.info["routed_tokens"] == 0 and layer.sparsity == 0.5
        no_tokens = torch.empty(0, dense.down_proj.shape[2])
        assert (experts.down_proj[expert] == 0).equal(wanda_row_mask(dense.down_proj[expert], no_tokens, 0.5, 1))
        assert f"model.layers.0.mlp.experts.{expert}.down_proj: no calibration token" in caplog.text
    assert all(reports[f"model.layers.0.mlp.experts.{e}.up_proj"].info["routed_tokens"] > 0
               for e in set(range(8)) - set(unrouted))


def test_owl_outlier_ratios_leave_out_the_experts_no_token_reached():
    """OWL's block evidence is the outlier ratio of the block's Wanda scores; an expert without calibration tokens
    has all-zero norms, and its zero scores would lower the block's mean and raise its ratio. Block 0's ratio is
    computed by hand from the matrices that saw tokens, each expert's squared norms taken per routed token (times
    the sequence's tokens) so that they compare with the attention matrices, which read every token."""
    from symprune.prune.allocation.owl import outlier_ratio
    from symprune.prune.driver import _dense_block_evidence
    from symprune.prune.scores.wanda import wanda

    model = tiny_architecture("mixtral", num_local_experts=8, num_experts_per_tok=1)
    ids = calibration(samples=1, tokens=3)
    stats = driver_stats(model, ids, 1)
    block0 = find_matrices(find_blocks(model)[1][0])
    def per_token(name):
        layer = stats[name]
        if ".experts." not in name:
            return layer
        return dataclasses.replace(layer, sq_norm=layer.sq_norm / layer.n_tokens * 3)  # one sequence of 3 tokens

    reached = [wanda(block0[name].weight, per_token(name)) for name in block0 if stats[name].n_tokens > 0]
    unscaled = [wanda(block0[name].weight, stats[name]) for name in block0 if stats[name].n_tokens > 0]
    everything = [wanda(block0[name].weight, stats[name]) for name in block0]
    assert len(everything) - len(reached) >= 15  # at least five experts × three matrices without tokens
    _, blocks = find_blocks(model)
    with ActivationStore(Placement(CPU)) as store, torch.no_grad():
        inputs = capture_block_inputs(model, blocks, ids, 1, store, progress=False)
        ratios, _ = _dense_block_evidence(blocks, [find_matrices(block) for block in blocks],
                                          lambda scores: outlier_ratio(scores, 5.0), SCORES.build({"name": "wanda"}),
                                          inputs, frozenset(), Placement(CPU), False, "none")
    assert float(ratios[0]) == outlier_ratio(reached, 5.0)
    assert outlier_ratio(reached, 5.0) != outlier_ratio(everything, 5.0)
    assert outlier_ratio(reached, 5.0) != outlier_ratio(unscaled, 5.0)  # the per-token scale matters here


@pytest.mark.parametrize("score, sparsity, refine, calibrated", [
    ("sparsegpt", {"pattern": "unstructured", "ratio": 0.5}, "none", True),
    ("wanda", {"pattern": "nm", "n": 2, "m": 4}, "none", True),
    ("wanda", {"pattern": "unstructured", "ratio": 0.5}, "dsnot", True),
    ("magnitude", {"pattern": "unstructured", "ratio": 0.5, "group": "layer"}, "none", False),
])
def test_every_expert_keeps_the_pattern(score, sparsity, refine, calibrated):
    """SparseGPT (Hessians of the routed tokens), N:M, DSnoT (means and variances of the routed tokens), and
    magnitude without calibration, on every expert."""
    model = tiny_architecture("qwen3_moe")
    report = prune_model(model, build_method({"name": score}, sparsity, {"name": refine}),
                         calibration(samples=2, tokens=16) if calibrated else None, progress=False)
    views = {f"model.layers.{i}.{name}": m for i, block in enumerate(find_blocks(model)[1])
             for name, m in find_matrices(block).items()}
    experts = [layer for layer in report.layers if ".experts." in layer.name]
    assert len(experts) == 2 * 4 * 3
    for layer in experts:
        weight = views[layer.name].weight
        if sparsity["pattern"] == "nm":
            assert ((weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1) == 2).all(), layer.name
        elif score == "magnitude":  # random weights have no ties: k + 1 zeros per layer
            assert layer.zeros == int(layer.numel * 0.5) + 1 and "routed_tokens" not in layer.info, layer.name
        elif score == "wanda":
            assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all() and "swaps" in layer.info, layer.name
        else:  # SparseGPT: k + 1 zeros per block of columns at most, the references' rounding
            assert 0.5 <= layer.sparsity <= 0.5 + 1 / weight.shape[1] and layer.info["routed_tokens"] > 0, layer.name


RUN = ("calibration=random", "eval=perplexity_random", "calibration.nsamples=4",
       "calibration.seqlen=32", "eval.perplexity.seqlen=32", "eval.perplexity.max_windows=2", "logger=none",
       "progress=false")


def test_a_moe_run_records_every_experts_sparsity():
    record = execute(plan_run(compose_run(*RUN, "model=synthetic", "model.architecture=mixtral")), NoLogger())
    layers = {layer["name"]: layer for layer in record.layers}
    experts = [name for name in layers if ".mlp.experts." in name]
    assert len(experts) == 2 * 8 * 3  # two blocks, eight experts, gate, up and down
    assert all(layers[name]["sparsity"] == 0.5 and layers[name]["info"]["routed_tokens"] >= 0 for name in experts)
    assert not any(".gate" in name and ".experts." not in name for name in layers)  # the router stays dense
    assert math.isfinite(record.metrics["perplexity"]["random"]["pruned"])


def test_the_plan_refuses_them_before_loading_weights(tmp_path):
    """A model directory with only its config: the plan stops at the architecture."""
    config = tiny_architecture("gemma4").config
    config.hidden_size_per_layer_input = 8
    config.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="hidden_size_per_layer_input=8 is not supported"):
        plan_run(compose_run(*RUN, "model=local", f"model.pretrained={tmp_path}"))


@pytest.mark.parametrize("setting", ["hidden_size_per_layer_input", "num_kv_shared_layers"])
def test_blocks_that_read_more_than_the_previous_blocks_output_are_refused(setting):
    """Per-layer token embeddings and shared keys/values cannot be replayed block by block: the plan refuses them."""
    config = tiny_architecture("gemma4").config
    shapes = skeleton(config)
    check_architecture(config, shapes)
    setattr(config, setting, 1)
    with pytest.raises(ConfigError, match=rf"'gemma4_text' with {setting}=1 is not supported"):
        check_architecture(config, shapes)


def test_transposed_interleaved_experts_with_biases():
    """GPT-OSS stores each expert transposed (hidden × 2·intermediate), gate and up interleaved (gate: columns
    0, 2, 4, …) and with biases: the views, the statistics of the routed tokens and the masks follow that layout."""
    config = AutoConfig.for_model("gpt_oss", **{**TINY_ARCHITECTURE, **ALTERNATING, "num_local_experts": 4,
                                                 "num_experts_per_tok": 2, "intermediate_size": 32, "head_dim": 16})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    experts = find_blocks(model)[1][0].mlp.experts
    with torch.no_grad():  # random biases, so that a missing bias shows
        experts.gate_up_proj_bias.normal_(0, 0.02)
    ids = calibration(samples=3, tokens=24)
    routed = routed_by_hand(model, ids)
    dense = copy.deepcopy(experts)
    stats = driver_stats(model, ids, batch_size=3)
    limit, alpha = experts.limit, experts.alpha
    inputs = {}
    for expert in range(4):
        tokens = [x[(routes == expert).any(dim=-1)] for x, routes in routed]
        gate_up = [t @ dense.gate_up_proj[expert] + dense.gate_up_proj_bias[expert] for t in tokens]
        gate = [g[:, ::2].clamp(max=limit) for g in gate_up]
        hidden = [(g[:, 1::2].clamp(-limit, limit) + 1) * a * torch.sigmoid(a * alpha) for g, a in zip(gate_up, gate)]
        used = [i for i, t in enumerate(tokens) if len(t)]
        inputs[expert] = {
            "gate_proj": (dense.gate_up_proj[expert][:, ::2].t(), [tokens[i] for i in used]),
            "up_proj": (dense.gate_up_proj[expert][:, 1::2].t(), [tokens[i] for i in used]),
            "down_proj": (dense.down_proj[expert].t(), [hidden[i] for i in used]),
        }
        matrices = find_matrices(find_blocks(model)[1][0])
        for part, (weight, xs) in inputs[expert].items():
            assert matrices[f"mlp.experts.{expert}.{part}"].weight.equal(weight)
            expected = torch.stack([x.pow(2).sum(0) for x in xs]).mean(0)
            torch.testing.assert_close(stats[f"mlp.experts.{expert}.{part}"].sq_norm, expected, rtol=1e-5, atol=1e-7)
    prune_model(model, method(), ids, progress=False)
    pruned = {"gate_proj": lambda e: experts.gate_up_proj[e][:, ::2].t(),
              "up_proj": lambda e: experts.gate_up_proj[e][:, 1::2].t(), "down_proj": lambda e: experts.down_proj[e].t()}
    for expert, parts in inputs.items():
        for part, (weight, xs) in parts.items():
            assert (pruned[part](expert) == 0).equal(wanda_row_mask(weight, torch.cat(xs), 0.5, len(ids))), (expert, part)
    assert experts.gate_up_proj_bias.equal(dense.gate_up_proj_bias) and experts.down_proj_bias.equal(dense.down_proj_bias)
