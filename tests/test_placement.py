"""Placement of weights and activations, calibration batching, and saving the pruned model."""

import pytest
import torch
from conftest import TINY_VOCAB, tiny_model
from transformers import AutoModelForCausalLM

from symprune.evaluate.perplexity import perplexity
from symprune.model.placement import ActivationStore, Placement, place_model, streamed
from symprune.model.saving import save_pruned
from symprune.model.structure import find_blocks, find_matrices
from symprune.prune.driver import capture_block_inputs, collect_stats, prune_model
from symprune.prune.method import build_method

CPU = torch.device("cpu")


def wanda(**sparsity):
    return build_method({"name": "wanda"}, {"pattern": "unstructured", "ratio": 0.5, **sparsity}, {"name": "none"})


def calibration(samples=6, tokens=32):
    return torch.randint(0, TINY_VOCAB, (samples, tokens), generator=torch.Generator().manual_seed(2))


def masks(model):
    return [p == 0 for p in model.parameters()]


@pytest.mark.parametrize(
    "placement",
    [
        Placement(CPU, offload_blocks=True, activations="cpu"),
        Placement(CPU, offload_blocks=True, activations="disk"),
        Placement(CPU, activations="disk"),
    ],
    ids=["offload-cpu", "offload-disk", "disk-activations"],
)
def test_offloaded_blocks_and_activations_give_the_same_masks(family, placement, tmp_path):
    placement = Placement(**{**placement.__dict__, "disk_dir": str(tmp_path)})
    reference, offloaded = tiny_model(family), tiny_model(family)
    prune_model(reference, wanda(), calibration(), placement=Placement(CPU), progress=False)
    place_model(offloaded, find_blocks(offloaded)[0], placement)
    prune_model(offloaded, wanda(), calibration(), placement=placement, progress=False)
    assert all(a.equal(b) for a, b in zip(masks(reference), masks(offloaded)))
    assert not list(tmp_path.iterdir())  # disk activations are removed afterwards


def test_disk_activations_are_memory_mapped_files(tmp_path):
    with ActivationStore(Placement(CPU, activations="disk", disk_dir=str(tmp_path))) as store:
        buffer = store.empty((3, 4, 5), torch.float16)
        buffer[:] = 1.5
        (directory,) = tmp_path.iterdir()
        (backing,) = directory.iterdir()
        assert backing.stat().st_size == 3 * 4 * 5 * 2
        assert torch.equal(buffer.sum(), torch.tensor(90.0, dtype=torch.float16))
    assert not list(tmp_path.iterdir())


def test_streamed_evaluation_equals_the_resident_model():
    model = tiny_model("llama")
    placement = Placement(CPU, offload_blocks=True)
    tokens = torch.randint(0, TINY_VOCAB, (1, 256), generator=torch.Generator().manual_seed(0))
    resident = perplexity(model, tokens, 64, progress=False).perplexity
    with streamed(find_blocks(model)[1], placement):
        assert perplexity(model, tokens, 64, progress=False).perplexity == resident


@pytest.mark.parametrize("batch_size", [2, 3, 6])
def test_batch_size_keeps_statistics_within_float_tolerance(family, batch_size):
    model = tiny_model(family)
    blocks = find_blocks(model)[1]
    stats = {}
    for size in (1, batch_size):
        with ActivationStore(Placement(CPU)) as store, torch.inference_mode():
            inputs = capture_block_inputs(model, blocks, calibration(), size, store, False)
            stats[size] = collect_stats(blocks[0], find_matrices(blocks[0]), inputs, {"sq_norm", "mean_sum", "var", "hessian"}, CPU)
    for name in stats[1]:
        for statistic in ("sq_norm", "mean_sum", "var", "hessian"):
            one, batched = getattr(stats[1][name], statistic), getattr(stats[batch_size][name], statistic)
            assert torch.allclose(one, batched, rtol=1e-5, atol=1e-6), (name, statistic)
        assert stats[batch_size][name].n_sequences == 6


def test_saved_model_reloads_with_plain_transformers(tmp_path):
    model = tiny_model("llama")
    prune_model(model, wanda(), calibration(), progress=False)

    class Tokenizer:  # the interface save_pruned needs
        def save_pretrained(self, directory):
            (directory / "tokenizer_marker.json").write_text("{}")

    target = save_pruned(model, Tokenizer(), tmp_path / "pruned")
    assert not (tmp_path / "pruned.partial").exists()
    assert (target / "model.safetensors").exists() and (target / "tokenizer_marker.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(target).eval()
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    tokens = torch.randint(0, TINY_VOCAB, (1, 256), generator=torch.Generator().manual_seed(1))
    assert perplexity(reloaded, tokens, 64, progress=False).perplexity == perplexity(model, tokens, 64, progress=False).perplexity
