"""Mixture-of-experts layouts beyond fused experts: experts stored as a list of modules (transformers 4's
Mixtral and Qwen-MoE), their routers and shared-expert gates, layouts symprune cannot prune (refused), and
router-weighted statistics (score.routing=gate)."""

import copy
import logging

import pytest
import torch
from conftest import tiny_architecture, tiny_model
from test_driver import calibration
from torch import nn
from torch.nn import functional as F

from symprune.errors import ConfigError
from symprune.model.placement import ActivationStore, Placement
from symprune.model.structure import find_blocks, find_matrices, prunable_names
from symprune.model.support import check_architecture
from symprune.prune.driver import capture_block_inputs, collect_stats, prune_model
from symprune.prune.method import build_method
from symprune.run.plan import _check_experts

CPU = torch.device("cpu")


class ListExpert(nn.Module):
    def __init__(self, gate, up, down):
        super().__init__()
        self.w1, self.w3, self.w2 = (nn.Linear(w.shape[1], w.shape[0], bias=False) for w in (gate, up, down))
        for layer, weight in ((self.w1, gate), (self.w3, up), (self.w2, down)):
            layer.weight.data.copy_(weight)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ListMoE(nn.Module):
    """Mixtral's sparse MoE block as transformers 4 stored it: a router linear and a list of expert modules;
    optionally a shared expert with a one-output gate (Qwen-MoE)."""

    def __init__(self, fused, top_k, shared=False):
        super().__init__()
        experts = fused.experts
        self.top_k = top_k
        self.gate = nn.Linear(fused.gate.weight.shape[1], fused.gate.weight.shape[0], bias=False)
        self.gate.weight.data.copy_(fused.gate.weight)
        width = experts.gate_up_proj.shape[1] // 2
        self.experts = nn.ModuleList(ListExpert(experts.gate_up_proj[e, :width], experts.gate_up_proj[e, width:],
                                                experts.down_proj[e]) for e in range(experts.down_proj.shape[0]))
        if shared:
            self.shared_expert = copy.deepcopy(self.experts[0])
            self.shared_expert_gate = nn.Linear(self.gate.weight.shape[1], 1, bias=False)

    def routes(self, x):
        weights, chosen = torch.topk(F.softmax(self.gate(x), dim=-1, dtype=torch.float), self.top_k, dim=-1)
        return weights / weights.sum(dim=-1, keepdim=True), chosen

    def forward(self, hidden):
        x = hidden.reshape(-1, hidden.shape[-1])
        weights, chosen = self.routes(x)
        out = torch.zeros_like(x)
        for index, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == index)
            if len(token):
                out.index_add_(0, token, expert(x[token]) * weights[token, slot, None].to(x.dtype))
        if hasattr(self, "shared_expert"):
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return out.reshape(hidden.shape)


def list_moe_model(experts=4, top_k=2, shared=False):
    model = tiny_architecture("mixtral", num_local_experts=experts, num_experts_per_tok=top_k)
    for block in find_blocks(model)[1]:
        block.mlp = ListMoE(block.mlp, top_k, shared)
    return model


def wanda(**options):
    return build_method({"name": "wanda", **options}, {"pattern": "unstructured", "ratio": 0.5}, {"name": "none"})


def test_a_list_of_experts_computes_as_the_fused_layer_it_came_from():
    fused = tiny_architecture("mixtral", num_local_experts=4, num_experts_per_tok=2)
    ids = calibration(samples=2, tokens=16)
    with torch.no_grad():
        torch.testing.assert_close(list_moe_model()(ids).logits, fused(ids).logits, rtol=1e-5, atol=1e-5)


def test_routers_and_shared_expert_gates_of_a_list_of_experts_stay_dense():
    model = list_moe_model(shared=True)
    defaults = prunable_names(model)
    for index in range(2):
        assert defaults[f"model.layers.{index}.mlp.gate"] is False
        assert defaults[f"model.layers.{index}.mlp.shared_expert_gate"] is False
        assert defaults[f"model.layers.{index}.mlp.experts.3.w2"] and defaults[f"model.layers.{index}.mlp.shared_expert.w1"]
    pruned = copy.deepcopy(model)
    report = prune_model(pruned, wanda(), calibration(), progress=False)
    assert not any(name.endswith((".gate", ".shared_expert_gate")) for name in report.masks.shapes)
    assert all(pruned.get_submodule(f"model.layers.{index}.mlp.{router}").weight.equal(
        model.get_submodule(f"model.layers.{index}.mlp.{router}").weight)
        for index in range(2) for router in ("gate", "shared_expert_gate"))
    assert sum(".experts." in name for name in report.masks.shapes) == 2 * 4 * 3


def test_each_listed_expert_counts_exactly_its_routed_tokens():
    model = list_moe_model()
    ids = calibration(samples=3, tokens=16)
    mlp = find_blocks(model)[1][0].mlp
    seen = []
    _, blocks = find_blocks(model)
    with ActivationStore(Placement(CPU)) as store, torch.no_grad():
        inputs = capture_block_inputs(model, blocks, ids, 1, store, progress=False)
        hook = mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
        stats = collect_stats(blocks[0], find_matrices(blocks[0]), inputs, {"sq_norm"}, CPU)
        hook.remove()
        chosen = [mlp.routes(x)[1] for x in seen]
    for expert in range(4):
        routed = [x[(routes == expert).any(dim=-1)] for x, routes in zip(seen, chosen)]
        counted = [tokens for tokens in routed if len(tokens)]
        assert stats[f"mlp.experts.{expert}.w1"].n_tokens == sum(len(tokens) for tokens in counted) > 0
        by_hand = sum((tokens ** 2).sum(dim=0) for tokens in counted) / len(counted)
        torch.testing.assert_close(stats[f"mlp.experts.{expert}.w1"].sq_norm, by_hand, rtol=1e-5, atol=1e-6)


def test_a_listed_expert_no_token_reached_is_pruned_by_magnitude(caplog):
    model = list_moe_model(experts=8, top_k=1)
    with caplog.at_level(logging.WARNING, logger="symprune"):
        report = prune_model(model, wanda(), calibration(samples=1, tokens=3), progress=False)
    unreached = [layer for layer in report.layers if layer.info.get("routed_tokens") == 0]
    assert len(unreached) >= 15 and all(".experts." in layer.name for layer in unreached)
    assert "no calibration token was routed to this expert" in caplog.text


def test_the_plan_refuses_what_a_layout_cannot_give():
    listed, fused, dense = list_moe_model(), tiny_architecture("mixtral"), tiny_model("llama")
    with pytest.raises(ConfigError, match="this model stores its experts as a list of modules: use score.routing=none"):
        _check_experts(listed, wanda(routing="gate"), 1)
    with pytest.raises(ConfigError, match="this model has no mixture-of-experts layer: use score.routing=none"):
        _check_experts(dense, wanda(routing="gate"), 1)
    with pytest.raises(ConfigError, match="calibration.batch_size=2: this model stores its experts as a list"):
        _check_experts(listed, wanda(), 2)
    _check_experts(fused, wanda(routing="gate"), 4)
    _check_experts(listed, wanda(), 1)
    with pytest.raises(ConfigError, match="unknown score.routing 'router'; valid: none, gate"):
        wanda(routing="router")


class UnknownExperts(nn.Module):
    """Experts in one 3-D parameter without transformers' experts interface."""

    def __init__(self, hidden):
        super().__init__()
        self.gate = nn.Linear(hidden, 8, bias=False)
        self.expert_weights = nn.Parameter(torch.zeros(8, 4 * hidden, hidden))


def test_a_block_mostly_outside_the_prunable_matrices_is_refused_naming_them():
    model = tiny_model("llama")
    for block in find_blocks(model)[1]:
        block.mlp = UnknownExperts(model.config.hidden_size)
    with pytest.raises(ConfigError, match=r"of block model.layers.0 lie outside the matrices symprune prunes .*"
                                          r"e.g. mlp.expert_weights \(8, 256, 64\)"):
        check_architecture(model.config, model)


def test_gate_routing_scales_each_routed_token_by_its_routing_weight():
    model = tiny_architecture("mixtral", num_local_experts=4, num_experts_per_tok=2)
    ids = calibration(samples=2, tokens=16)
    experts = find_blocks(model)[1][0].mlp.experts
    seen = []
    _, blocks = find_blocks(model)
    matrices = find_matrices(blocks[0])
    with ActivationStore(Placement(CPU)) as store, torch.no_grad():
        inputs = capture_block_inputs(model, blocks, ids, 1, store, progress=False)
        hook = experts.register_forward_pre_hook(lambda module, args: seen.append(args))
        plain = collect_stats(blocks[0], matrices, inputs, {"sq_norm"}, CPU)
        hook.remove()
        gated = collect_stats(blocks[0], matrices, inputs, {"sq_norm"}, CPU, routing="gate")
    for expert in range(4):
        weighted = []
        for hidden, index, weights in seen:
            rows = (index == expert).any(dim=-1)
            if rows.any():
                weighted.append(hidden[rows] * (weights * (index == expert)).sum(dim=-1)[rows, None])
        name = f"mlp.experts.{expert}.up_proj"
        assert gated[name].n_tokens == plain[name].n_tokens == sum(len(tokens) for tokens in weighted)
        by_hand = sum((tokens ** 2).sum(dim=0) for tokens in weighted) / len(weighted)
        torch.testing.assert_close(gated[name].sq_norm, by_hand, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(gated[name].sq_norm, plain[name].sq_norm)
