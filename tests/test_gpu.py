"""The CUDA path: masks against the CPU's, bfloat16 weights, offloading, device_map, the 2:4 export,
save and reload, synthetic models built on the device.

Tests parametrised by ``device`` run on the CPU everywhere (the same checks, so CI exercises them)
and on CUDA as the ``gpu`` marker's cases: ``pytest -m gpu`` selects exactly the CUDA cases. Without
CUDA they are skipped, saying why, or fail when SYMPRUNE_REQUIRE_GPU=1 (benchmarks/gpu_check.sh sets
it, so the check cannot pass without a GPU). This file imports neither lm-eval nor datasets: the GPU
check runs it on a machine without them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, TINY_VOCAB, compose_run, reference_nm_selection, tiny_model
from test_placement import calibration
from transformers import AutoModelForCausalLM

from symprune.config import settings
from symprune.evaluate.perplexity import perplexity
from symprune.model.loading import ModelSource, load_placed
from symprune.model.placement import Placement, place_model
from symprune.model.saving import SEMI_STRUCTURED_FILE, load_semi_structured, save_pruned
from symprune.model.structure import find_blocks, find_linears, weight_matrix
from symprune.model.synthetic import synthetic_model
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.scores.symwanda import sampled_sums
from symprune.prune.stats import StatsAccumulator

REQUIRE_GPU = "SYMPRUNE_REQUIRE_GPU"
CPU = torch.device("cpu")
# Where float reductions differ between devices (activation norms, RIA's sums), scores near a
# threshold may swap places: at most this fraction of a model's prunable weights may be masked
# differently on CUDA than on the CPU. Magnitude's scores are |W| on every device: no difference.
DEVICE_MASK_BOUND = 1e-3


def cuda_or_skip() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get(REQUIRE_GPU) == "1":
        pytest.fail(f"{REQUIRE_GPU}=1, but CUDA is not available (torch {torch.__version__})")
    pytest.skip(f"CUDA is not available (torch.cuda.is_available() is False); {REQUIRE_GPU}=1 makes this a failure")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> torch.device:
    return CPU if request.param == "cpu" else cuda_or_skip()


@pytest.fixture
def cuda() -> torch.device:
    return cuda_or_skip()


@functools.lru_cache(maxsize=None)
def method(*overrides: str):
    """The pruning method a run with these overrides would use (composed once: methods are immutable)."""
    cfg = compose_run(*overrides)
    return build_method(cfg.score, cfg.sparsity, cfg.refine)


def pruned_masks(model) -> dict[str, torch.Tensor]:
    """Every prunable layer's zeros, on the CPU, by full name."""
    prefix, blocks = find_blocks(model)
    return {
        f"{prefix}.{index}.{name}": (weight_matrix(layer) == 0).cpu()
        for index, block in enumerate(blocks)
        for name, layer in find_linears(block).items()
    }


def differing_entries(one, other) -> tuple[int, int]:
    masks, others = pruned_masks(one), pruned_masks(other)
    return sum(int((masks[name] != others[name]).sum()) for name in masks), sum(mask.numel() for mask in masks.values())


MASK_METHODS = {
    "magnitude": ("score=magnitude",),
    "wanda": ("score=wanda",),
    "ria": ("score=ria",),
    "wanda_2_4": ("score=wanda", "sparsity=nm_2_4"),
    "ria_4_8": ("score=ria", "sparsity=nm_4_8"),
    "stochria": ("score=stochria",),  # its random subsets are drawn on the CPU: the same on every device
}


@pytest.mark.parametrize("name", sorted(MASK_METHODS))
def test_float32_masks_on_the_device_equal_the_cpu_masks(device, family, name, record_property):
    pruning = method(*MASK_METHODS[name])
    reference = tiny_model(family)
    prune_model(reference, pruning, calibration(), progress=False)
    candidate = tiny_model(family).to(device)
    prune_model(candidate, pruning, calibration(), placement=Placement(device), progress=False)
    differing, total = differing_entries(reference, candidate)
    record_property("differing_mask_entries", differing)
    print(f"{family} {name} on {device}: {differing} of {total} mask entries differ from the CPU's")
    bound = 0 if name == "magnitude" else int(DEVICE_MASK_BOUND * total)
    assert differing <= bound


BFLOAT16_METHODS = {
    "magnitude": ("score=magnitude",),
    "wanda": ("score=wanda",),
    "ria": ("score=ria",),
    "stochria": ("score=stochria",),
    "sparsegpt": ("score=sparsegpt",),
    "dsnot": ("score=wanda", "refine=dsnot"),
    "r2dsnot": ("score=wanda", "refine=r2dsnot"),
}


@pytest.mark.parametrize("replacement", [False, True])
def test_stochria_draws_the_same_subsets_on_every_device(device, replacement):
    """|W| = 2^i along each summed line: a sum spells out which entries (and how often) its subset drew."""
    powers = 2.0 ** torch.arange(20, dtype=torch.float32)
    for dim, magnitude in ((0, powers.reshape(-1, 1).repeat(1, 24)), (1, powers.repeat(24, 1))):
        sums = [sampled_sums(magnitude.to(where), dim, 0.3, replacement, torch.Generator().manual_seed(5)).cpu()
                for where in (CPU, device)]
        assert sums[0].equal(sums[1])
        assert len(set(sums[0].tolist())) > 1  # different lines draw different subsets


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_ties_on_the_device_are_the_references_topk_call(device, n, m, record_property):
    """N:M's default tie rule is the references' torch.topk per block of M columns on the device it runs on:
    equal to their call there, ties included. How many entries CUDA's choice differs from the CPU's is recorded."""
    generator = torch.Generator().manual_seed(n * m)
    scores = torch.randint(0, 3, (256, 64 * m), generator=generator).float()  # ties in nearly every block
    on_device = scores.to(device)
    pruned = nm_mask(on_device, n, m)
    assert pruned.equal(reference_nm_selection(on_device, n, m))
    record_property("entries_differing_from_the_cpu_choice", int((pruned.cpu() != nm_mask(scores, n, m)).sum()))


@pytest.mark.parametrize("pattern", ["unstructured", "nm_2_4"])
@pytest.mark.parametrize("name", sorted(BFLOAT16_METHODS))
def test_bfloat16_weights_prune_with_exact_sparsity(device, name, pattern):
    """Every method on bfloat16 weights: the weights stay bfloat16 on the device, the pattern's zeros are
    exact (per row: int(d_in / 2); per 2:4 group: 2), and the pruned model still computes finite perplexity.
    Unstructured scores compare per row (a whole-layer threshold also zeroes ties, which bfloat16 makes
    common); SparseGPT chooses per block of columns: the reference's threshold, ties included."""
    sparsegpt = name == "sparsegpt"
    group = () if sparsegpt or pattern != "unstructured" else ("sparsity.group=row",)
    pruning = method(*BFLOAT16_METHODS[name], f"sparsity={pattern}", *group)
    model = tiny_model("llama").to(device, torch.bfloat16)
    prune_model(model, pruning, calibration(), placement=Placement(device), progress=False)
    for layer, pruned in pruned_masks(model).items():
        weight = model.get_parameter(layer + ".weight")
        assert weight.dtype == torch.bfloat16 and weight.device.type == device.type
        d_out, d_in = pruned.shape
        if pattern == "nm_2_4":
            assert (pruned.reshape(d_out, d_in // 4, 4).sum(dim=-1) == 2).all(), layer
        elif sparsegpt:
            assert d_out * d_in // 2 < int(pruned.sum()) <= d_out * d_in * 0.51, layer
        else:
            assert (pruned.sum(dim=1) == d_in // 2).all(), layer
    tokens = torch.randint(0, TINY_VOCAB, (1, 256), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(torch.tensor(perplexity(model, tokens, 64, device=device, progress=False).perplexity))


def test_statistics_of_bfloat16_inputs_are_float32(device):
    accumulator = StatsAccumulator(16, {"sq_norm", "mean_sum", "var", "hessian", "out_sq_norm"}, device, d_out=8)
    inputs = torch.randn(2, 5, 16, device=device, dtype=torch.bfloat16)
    accumulator.add_batch(inputs, torch.randn(2, 5, 8, device=device, dtype=torch.bfloat16))
    for name in ("sq_norm", "mean_sum", "var", "hessian", "out_sq_norm"):
        assert getattr(accumulator.stats, name).dtype == torch.float32
    float_inputs = inputs.float()
    expected = (float_inputs**2).sum(dim=1).mean(dim=0)
    assert torch.allclose(accumulator.stats.sq_norm, expected, rtol=1e-5)


@pytest.mark.parametrize("activations", ["cpu", "disk"])
def test_offloaded_blocks_give_the_masks_of_a_resident_model(device, family, activations, tmp_path):
    single, offloaded = tiny_model(family).to(device), tiny_model(family)
    prune_model(single, method("score=wanda"), calibration(), placement=Placement(device), progress=False)
    placement = Placement(device, offload_blocks=True, activations=activations, disk_dir=str(tmp_path))
    place_model(offloaded, find_blocks(offloaded)[0], placement)
    prune_model(offloaded, method("score=wanda"), calibration(), placement=placement, progress=False)
    assert differing_entries(single, offloaded)[0] == 0
    assert all(parameter.device.type == "cpu" for parameter in find_blocks(offloaded)[1].parameters())


def test_device_map_auto_runs_and_prunes_like_single(device, tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "tiny")
    source = ModelSource(str(tmp_path / "tiny"), None, True)
    mapped = load_placed(source, "float32", Placement(device, activations="cpu", device_map="auto"))
    single = load_placed(source, "float32", Placement(device))
    assert {parameter.device.type for parameter in mapped.parameters()} == {device.type}
    for model, placement in ((mapped, Placement(device, activations="cpu", device_map="auto")), (single, Placement(device))):
        prune_model(model, method("score=wanda"), calibration(), placement=placement, progress=False)
    assert differing_entries(single, mapped)[0] == 0


def test_semi_structured_export_loads_back_and_multiplies_like_the_dense_masked_weights(cuda, tmp_path):
    model = tiny_model("llama").to(cuda, torch.bfloat16)
    prune_model(model, method("score=wanda", "sparsity=nm_2_4"), calibration(), placement=Placement(cuda), progress=False)
    directory = save_pruned(model, None, tmp_path / "pruned", semi_structured=True)
    sparse = load_semi_structured(directory / SEMI_STRUCTURED_FILE, cuda)
    assert set(sparse) == set(pruned_masks(model))
    worst = 0.0
    for name, tensor in sparse.items():
        weight = model.get_parameter(name + ".weight")
        columns = torch.randn(weight.shape[1], 64, device=cuda, dtype=torch.bfloat16)  # 64 tokens, one per column
        dense = weight @ columns
        error = float((torch.mm(tensor, columns).float() - dense.float()).abs().max() / dense.float().abs().max())
        worst = max(worst, error)
        assert tensor.dtype == torch.bfloat16 and error <= 2**-7, name  # bfloat16's epsilon
    print(f"2:4 semi-structured matmuls: largest error {worst:.2e} of the largest output")


def test_saved_and_reloaded_model_has_the_same_perplexity(device, tmp_path):
    model = tiny_model("llama").to(device, torch.bfloat16)
    prune_model(model, method("score=wanda"), calibration(), placement=Placement(device), progress=False)
    directory = save_pruned(model, None, tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    tokens = torch.randint(0, TINY_VOCAB, (1, 512), generator=torch.Generator().manual_seed(1))
    before = perplexity(model, tokens, 128, device=device, progress=False).perplexity
    after = perplexity(reloaded, tokens, 128, device=device, progress=False).perplexity
    print(f"perplexity on {device}: {before} before saving, {after} after reloading")
    assert after == pytest.approx(before, rel=1e-6)


# A synthetic model of about 120 M parameters (a 1-D memory figure far above the noise of a process).
MEMORY_SHAPE = ("model.shape.hidden_size=1024", "model.shape.intermediate_size=2816", "model.shape.num_layers=4",
                "model.shape.num_heads=16", "model.shape.num_kv_heads=16", "model.shape.vocab_size=32000")
MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import psutil, torch
    sys.path[:0] = ["tests", "benchmarks"]
    from conftest import compose_run
    from prune_speed import PeakMemory
    from symprune.config import settings
    from symprune.model.placement import Placement
    from symprune.model.synthetic import synthetic_model

    device = torch.device(sys.argv[1])
    spec = synthetic_model(settings(compose_run("model=synthetic", *sys.argv[2:])).model)
    if device.type == "cuda":  # the CUDA context and the kernels used, loaded before measuring
        torch.ones(1, device=device).normal_(generator=torch.Generator(device=device)).to("cpu")
        torch.cuda.reset_peak_memory_stats(device)
    cpu, before = PeakMemory(torch.device("cpu")), psutil.Process().memory_info().rss
    with cpu.measure():
        model = spec.build(torch.bfloat16, Placement(device))
    print(json.dumps({
        "parameter_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "cpu_peak_growth": cpu.peak - before,
        "device_peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        "devices": sorted({p.device.type for p in model.parameters()}),
    }))
""")


def test_synthetic_model_is_built_once_on_its_device_in_its_dtype(device):
    """The parameters exist once, where they run: building never holds a second copy of the model (on
    the CPU: peak memory grows by 0.8 to 1.6 times the parameters, where a second copy would make it 2;
    the allocator and the process's own growth account for the rest; on CUDA: the CPU's by less than a
    quarter of them, and the GPU's peak is at most 1.1 times them)."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(device), *MEMORY_SHAPE], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"synthetic model on {device}: {measured}")
    size = measured["parameter_bytes"]
    assert measured["dtypes"] == ["torch.bfloat16"] and measured["devices"] == [device.type]
    if device.type == "cpu":
        assert 0.8 * size <= measured["cpu_peak_growth"] <= 1.6 * size
    else:
        assert measured["cpu_peak_growth"] <= 0.25 * size
        assert measured["device_peak"] <= 1.1 * size


def test_synthetic_model_under_offload_equals_the_resident_one(device):
    spec = synthetic_model(settings(compose_run("model=synthetic")).model)
    resident = spec.build(torch.float32, Placement(device))
    offloaded = spec.build(torch.float32, Placement(device, offload_blocks=True, activations="cpu"))
    prefix = find_blocks(offloaded)[0]
    for (name, a), (_, b) in zip(resident.named_parameters(), offloaded.named_parameters()):
        assert a.device.type == device.type
        assert b.device.type == ("cpu" if name.startswith(prefix + ".") else device.type)
        assert a.cpu().equal(b.cpu()), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA reports")
def test_gpu_cases_without_cuda_are_skipped_or_fail_when_required():
    """`pytest -m gpu` without CUDA: every case skipped with the reason, none passing; with
    SYMPRUNE_REQUIRE_GPU=1 every case fails (an error in its fixture), so the GPU check cannot pass
    without a GPU. Two pytest processes (about 20 s): the marker's behaviour is the thing tested."""
    command = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0",
               "-k", "float32_masks or semi_structured or synthetic_model_under"]
    environment = {key: value for key, value in os.environ.items() if key != REQUIRE_GPU}
    skipped = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)
    summary = skipped.stdout.splitlines()[-1]
    assert skipped.returncode == 0 and re.match(r"(\d+) skipped, \d+ deselected", summary), skipped.stdout[-3000:]
    assert "CUDA is not available" in skipped.stdout
    required = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**environment, REQUIRE_GPU: "1"})
    cases = int(summary.split()[0])
    assert cases > 20 and required.returncode == 1, required.stdout[-3000:]
    last = required.stdout.splitlines()[-1]  # the requirement fails in the fixture: pytest counts errors
    assert "passed" not in last and f"{cases} errors" in last, required.stdout[-3000:]


def test_alpha_spectra_are_computed_on_the_blocks_device_and_cached(device, tmp_path, monkeypatch):
    """AlphaPruning's SVD runs where the block is visited (offloaded blocks: on the device), its cache keys name
    that device's numerics, and a second prune with the same cache reads every spectrum."""
    from symprune.prune.allocation import ALLOCATIONS
    from symprune.prune.allocation.alpha import SPECTRA, eigenvalues, spectrum_key

    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(eigenvalues(weight.to(device)), eigenvalues(weight), rtol=1e-4, atol=1e-3)
    expected = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else spectrum_key(weight)["numerics"]
    assert spectrum_key(weight.to(device))["numerics"] == expected
    devices = []
    svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda matrix: devices.append(matrix.device.type) or svdvals(matrix))
    placement = Placement(device, offload_blocks=True, activations="cpu")
    reports = []
    for _ in range(2):
        model = tiny_model("llama")
        place_model(model, find_blocks(model)[0], placement)
        reports.append(prune_model(model, method("score=wanda"), calibration(), placement=placement, progress=False,
                                   allocation=ALLOCATIONS.build({"name": "alpha"}), cache_dir=tmp_path))
    cold, warm = reports
    assert devices == [device.type] * len(cold.layers)
    assert warm.caches[SPECTRA]["hits"] == len(cold.layers) and warm.masks.sha256() == cold.masks.sha256()
