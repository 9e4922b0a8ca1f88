"""The layer-wise driver on tiny random models of five families."""

import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from conftest import TINY_VOCAB, tiny_model
from symprune.driver import prune_model
from symprune.method import build_method
from symprune.models import find_blocks, linear_shapes

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


def reference_layerwise_wanda(model, family, input_ids, ratio):
    """Wanda the plain way: for each block, run the *whole model* on every sample with hooks on
    that block's linears, score with ‖X_:,j‖ and prune per row. No captured block inputs."""
    blocks = model.get_submodule(BLOCK_PATHS[family])
    for block in blocks:
        linears = {n: m for n, m in block.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
        inputs = {n: [] for n in linears}
        hooks = [
            m.register_forward_hook(lambda mod, args, out, n=n: inputs[n].append(args[0].reshape(-1, args[0].shape[-1])))
            for n, m in linears.items()
        ]
        with torch.no_grad():
            for sample in input_ids:
                model(sample.unsqueeze(0), use_cache=False)
        for hook in hooks:
            hook.remove()
        for name, layer in linears.items():
            X = torch.cat(inputs[name]).double()
            weight = matrix(layer)
            scores = weight.detach().abs().double() * (X.pow(2).sum(0) / len(input_ids)).sqrt()
            k = int(weight.shape[1] * ratio)
            pruned = torch.zeros_like(weight, dtype=torch.bool)
            pruned.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)
            with torch.no_grad():
                weight.masked_fill_(pruned, 0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_driver_matches_whole_model_reference(family, attention):
    """Captured block inputs and keyword arguments reproduce the model's own forward exactly,
    so the masks equal those of a reference that runs the whole model for every block."""
    model = tiny_model(family, attention=attention)
    reference = copy.deepcopy(model)
    ids = calibration(samples=4, tokens=24)
    prune_model(model, method(), ids, progress=False)
    reference_layerwise_wanda(reference, family, ids, 0.5)
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
