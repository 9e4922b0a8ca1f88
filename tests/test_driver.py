"""The layer-wise driver on tiny random models of five families, and on every current decoder-only architecture."""

import copy
import math

import pytest
import torch
from conftest import ARCHITECTURES, TINY_VOCAB, tiny_architecture, tiny_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from symprune.evaluate.perplexity import perplexity
from symprune.model.structure import find_blocks, find_matrices, linear_shapes
from symprune.model.placement import ActivationStore, Placement
from symprune.prune.driver import capture_block_inputs, collect_stats, prune_model, run_block
from symprune.prune.method import build_method
from symprune.prune.stats import StatsAccumulator
from symprune.prune.targets import Targets

# Written out per family on purpose: an independent check of the driver's family-agnostic discovery.
BLOCK_PATHS = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "opt": "model.decoder.layers",
    "gpt_neox": "gpt_neox.layers",
    "gpt2": "transformer.h",
}
LINEARS_PER_BLOCK = {"llama": 7, "qwen2": 7, "opt": 6, "gpt_neox": 4, "gpt2": 4}


def method(score="wanda", **sparsity):
    sparsity = sparsity if "pattern" in sparsity else {"pattern": "unstructured", "ratio": 0.5, **sparsity}
    return build_method({"name": score}, sparsity, {"name": "none"})


def calibration(samples=4, tokens=32, seed=1):
    return torch.randint(0, TINY_VOCAB, (samples, tokens), generator=torch.Generator().manual_seed(seed))


def matrix(layer):
    return layer.weight.t() if isinstance(layer, Conv1D) else layer.weight


def test_blocks_and_linears_are_discovered(family):
    model = tiny_model(family)
    name, blocks = find_blocks(model)
    assert name == BLOCK_PATHS[family] and len(blocks) == 2
    shapes = linear_shapes(model)
    assert len(shapes) == 2 * LINEARS_PER_BLOCK[family]
    assert all(name.startswith(BLOCK_PATHS[family]) for name in shapes)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_exact_sparsity_in_every_linear_and_dense_rest(family, batch_size):
    model = tiny_model(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = prune_model(model, method(), calibration(samples=5), batch_size=batch_size, progress=False)

    pruned_names = {f"{layer.name}.weight" for layer in report.layers}
    assert len(report.layers) == 2 * LINEARS_PER_BLOCK[family]
    for layer in report.layers:
        weight = matrix(model.get_submodule(layer.name))
        d_in = weight.shape[1]
        assert ((weight == 0).sum(dim=1) == d_in // 2).all(), layer.name
        assert layer.zeros == weight.numel() // 2 and layer.sparsity == 0.5
    assert report.overall_sparsity == 0.5
    # embeddings, LM head, norms and biases are untouched
    for name, parameter in model.named_parameters():
        if name not in pruned_names:
            assert parameter.equal(before[name]), name


def test_nm_pattern_on_every_family(family):
    model = tiny_model(family)
    report = prune_model(model, method(pattern="nm", n=2, m=4), calibration(), progress=False)
    for layer in report.layers:
        weight = matrix(model.get_submodule(layer.name))
        assert ((weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1) == 2).all(), layer.name


def test_methods_without_statistics_need_no_calibration(family):
    model = tiny_model(family)
    report = prune_model(model, method("magnitude", group="layer"), None, progress=False)
    for layer in report.layers:  # random weights have no ties: k + 1 zeros per layer
        assert layer.zeros == int(layer.numel * 0.5) + 1


# The routers and shared-expert gates of the tiny architectures, by name: never pruned.
ROUTERS = ("mlp.router", "router.proj", "mlp.shared_expert_gate")


def fused_experts(block):
    """The 3-D expert parameters of a block, by name (relative to the block)."""
    return {name: p for name, p in block.named_parameters() if p.dim() == 3 and name.endswith(("up_proj", "down_proj"))}


def expert_part_names(name, parameter):
    """The matrices a fused parameter holds per expert, as the driver names them."""
    module, _, kind = name.rpartition(".")
    parts = {"gate_up_proj": ("gate_proj", "up_proj")}.get(kind, (kind,))
    return [f"{module}.{expert}.{part}" for expert in range(parameter.shape[0]) for part in parts]


def expected_matrices(model, blocks_path):
    """Every matrix that should be pruned, found independently of the driver: the blocks' linears but the
    routers, and each expert's slices of the fused parameters."""
    names = []
    for index, block in enumerate(model.get_submodule(blocks_path)):
        prefix = f"{blocks_path}.{index}"
        names += [f"{prefix}.{n}" for n, m in block.named_modules()
                  if isinstance(m, (nn.Linear, Conv1D)) and not n.endswith(ROUTERS)]
        names += [f"{prefix}.{n}" for name, p in fused_experts(block).items() for n in expert_part_names(name, p)]
    return sorted(names)


def wanda_row_mask(weight, X, ratio, n_samples):
    """Wanda per row from the inputs X (tokens × d_in); weight magnitude alone when no token reached the layer."""
    norms = (X.double().pow(2).sum(0) / n_samples).sqrt() if len(X) else torch.ones(weight.shape[1], dtype=torch.double)
    scores = weight.detach().abs().double() * norms
    k = int(weight.shape[1] * ratio)
    pruned = torch.zeros_like(weight, dtype=torch.bool)
    pruned.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)
    return pruned


def reference_layerwise_wanda(model, blocks_path, input_ids, ratio, monkeypatch=None):
    """Wanda the plain way: for each block, run the *whole model* on every sample with hooks on
    that block's linears, score with ‖X_:,j‖ and prune per row. No captured block inputs.
    Fused experts: every ``F.linear`` call on one expert's slice of a fused parameter is what that expert
    receives (the models' own eager expert loop), recorded by patching ``F.linear``."""
    for block in model.get_submodule(blocks_path):
        linears = {n: m for n, m in block.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and not n.endswith(ROUTERS)}
        inputs = {n: [] for n in linears}
        hooks = [
            m.register_forward_hook(lambda mod, args, out, n=n: inputs[n].append(args[0].reshape(-1, args[0].shape[-1])))
            for n, m in linears.items()
        ]
        fused = fused_experts(block)
        routed = {(name, e): [] for name, p in fused.items() for e in range(p.shape[0])}
        if fused:
            linear = nn.functional.linear

            def recording(x, weight, bias=None):
                for name, p in fused.items():
                    if weight._base is p:
                        routed[(name, (weight.data_ptr() - p.data_ptr()) // (p.stride(0) * p.element_size()))].append(x)
                return linear(x, weight, bias)

            monkeypatch.setattr(nn.functional, "linear", recording)
        with torch.no_grad():
            for sample in input_ids:
                model(sample.unsqueeze(0), use_cache=False)
        if fused:
            monkeypatch.undo()
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for name, layer in linears.items():
                weight = matrix(layer)
                weight.masked_fill_(wanda_row_mask(weight, torch.cat(inputs[name]), ratio, len(input_ids)), 0)
            for (name, expert), xs in routed.items():
                weight = fused[name][expert]
                X = torch.cat(xs) if xs else torch.empty(0, weight.shape[1])
                weight.masked_fill_(wanda_row_mask(weight, X, ratio, len(input_ids)), 0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_driver_matches_whole_model_reference(family, attention):
    """Captured block inputs and keyword arguments reproduce the model's own forward exactly,
    so the masks equal those of a reference that runs the whole model for every block."""
    model = tiny_model(family, attention=attention)
    reference = copy.deepcopy(model)
    ids = calibration(samples=4, tokens=24)
    prune_model(model, method(), ids, progress=False)
    reference_layerwise_wanda(reference, BLOCK_PATHS[family], ids, 0.5)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters()):
        assert (ours == 0).equal(theirs == 0), name


def test_calibration_batch_size_keeps_the_masks(family):
    """Batched block passes (OPT flattens its MLP inputs) still count sequences: same masks as batch 1."""
    masks = []
    for batch_size in (1, 3):
        model = tiny_model(family)
        prune_model(model, method(), calibration(samples=6), batch_size=batch_size, progress=False)
        masks.append([(p == 0) for p in model.parameters()])
    assert all(a.equal(b) for a, b in zip(*masks))


def test_current_architectures(architecture, monkeypatch):
    """Every current decoder-only family, tiny and random: the driver finds exactly the matrices to prune
    (linears and each expert's matrices; not embeddings, LM head or routers), its masks equal a
    whole-model reference loop's, every matrix keeps exact sparsity, the rest stays dense, and perplexity
    evaluation runs on the pruned model."""
    model = tiny_architecture(architecture)
    blocks_path = ARCHITECTURES[architecture][1]
    assert find_blocks(model)[0] == blocks_path
    reference = copy.deepcopy(model)
    if fused_experts(find_blocks(model)[1][-1]):
        reference.set_experts_implementation("eager")  # the models' own per-expert loop, which the reference reads
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = calibration(samples=3, tokens=24)
    report = prune_model(model, method(), ids, progress=False)
    reference_layerwise_wanda(reference, blocks_path, ids, 0.5, monkeypatch)

    assert sorted(layer.name for layer in report.layers) == expected_matrices(reference, blocks_path)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters()):
        assert (ours == 0).equal(theirs == 0), name
    views = {f"{blocks_path}.{index}.{name}": m for index, block in enumerate(find_blocks(model)[1])
             for name, m in find_matrices(block).items()}
    for layer in report.layers:
        weight = views[layer.name].weight
        assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all(), layer.name
    pruned = {f"{layer.name}.weight" for layer in report.layers}
    pruned |= {f"{blocks_path}.{index}.{name}" for index, block in enumerate(find_blocks(model)[1])
               for name in fused_experts(block)}  # every slice pruned
    for name, parameter in model.named_parameters():
        if name not in pruned:
            assert parameter.equal(before[name]), name
    result = perplexity(model, calibration(samples=2, tokens=16, seed=2).reshape(-1), 16, progress=False)
    assert result.windows == 2 and math.isfinite(result.perplexity)


@pytest.mark.parametrize("wanted", [{"sq_norm"}, {"sq_norm", "mean_sum", "var", "hessian", "out_sq_norm"}])
def test_layers_reading_one_tensor_compute_its_statistics_once(wanted, monkeypatch):
    """q/k/v and gate/up read one tensor: its terms are computed once per sequence, and every layer's
    statistics equal, bit for bit, an accumulator of its own fed with that layer's recorded inputs."""
    model = tiny_model("llama")
    block = find_blocks(model)[1][0]
    ids = calibration(samples=3, tokens=16)
    with torch.inference_mode(), ActivationStore(Placement(torch.device("cpu"))) as store:
        inputs = capture_block_inputs(model, find_blocks(model)[1], ids, 1, store, False)
        matrices = find_matrices(block, Targets().selects, "model.layers.0.")
        recorded = {name: [] for name in matrices}
        hooks = [m.layer.register_forward_hook(lambda mod, args, out, n=n: recorded[n].append((args[0].clone(), out.clone())))
                 for n, m in matrices.items()]
        run_block(block, inputs, torch.device("cpu"))
        for hook in hooks:
            hook.remove()
        computed = []
        original = StatsAccumulator._input_terms
        monkeypatch.setattr(StatsAccumulator, "_input_terms", lambda self, x, n: computed.append(n) or original(self, x, n))
        stats = collect_stats(block, matrices, inputs, wanted, torch.device("cpu"))
    assert len(computed) == 4 * len(ids)  # attention input, o_proj's, MLP input, down_proj's
    for name, matrix in matrices.items():
        alone = StatsAccumulator(matrix.weight.shape[1], wanted, "cpu", d_out=matrix.weight.shape[0])
        for layer_input, output in recorded[name]:
            alone.add_batch(layer_input, output)
        for statistic in wanted:
            assert getattr(stats[name], statistic).equal(getattr(alone.stats, statistic)), (name, statistic)
