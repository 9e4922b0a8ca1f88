"""AlphaPruning's spectra cached across runs: a second computation reads them (no SVD) and gives the same α bit
for bit, any change of the weights or of what decides the numerics misses, a corrupt entry is computed again,
no cache writes nothing, and whole prunes and runs report their hits and misses."""

import copy
import json
import logging

import pytest
import torch
from conftest import compose_run, threads, tiny_architecture

from symprune.prune.allocation import ALLOCATIONS, EvidenceCache
from symprune.prune.allocation.alpha import SPECTRA, eigenvalues, hill_alpha, spectrum, spectrum_key
from symprune.prune.driver import prune_model
from symprune.prune.method import build_method
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute

METRICS = ("alpha_peak", "alpha_mid")


@pytest.fixture
def svd_calls(monkeypatch):
    """The matrices ``torch.linalg.svdvals`` is called on, in order."""
    calls = []
    svdvals = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda matrix, *args, **kwargs: calls.append(matrix) or svdvals(
        matrix, *args, **kwargs))
    return calls


def weight(seed=0, shape=(48, 64), dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def entries(directory):
    return sorted((directory / SPECTRA).glob("*.json"))


def test_the_cpu_spectrum_is_the_svd_of_the_float32_weights():
    matrix = weight(dtype=torch.bfloat16)
    expected = torch.sort(torch.linalg.svdvals(matrix.float().cpu()) ** 2).values
    assert torch.equal(eigenvalues(matrix), expected) and eigenvalues(matrix).dtype == torch.float32


def test_a_second_computation_reads_the_cache_and_gives_the_same_alpha(tmp_path, svd_calls):
    matrix = weight()
    uncached = {metric: hill_alpha(matrix, metric) for metric in METRICS}
    assert len(svd_calls) == 2
    first, second = EvidenceCache(tmp_path), EvidenceCache(tmp_path)
    cold = {metric: hill_alpha(matrix, metric, first) for metric in METRICS}
    assert len(svd_calls) == 3  # one spectrum for both metrics: the second reads the first's entry
    warm = {metric: hill_alpha(matrix, metric, second) for metric in METRICS}
    assert len(svd_calls) == 3
    assert cold == warm == uncached  # bit for bit
    assert first.record() == {SPECTRA: {"hits": 1, "misses": 1, "dir": str(tmp_path.resolve() / SPECTRA)}}
    assert (second.record()[SPECTRA]["hits"], second.record()[SPECTRA]["misses"]) == (2, 0)
    assert torch.equal(spectrum(matrix, second), eigenvalues(matrix)) and len(entries(tmp_path)) == 1


def test_one_changed_weight_misses(tmp_path, svd_calls):
    matrix = weight()
    spectrum(matrix, EvidenceCache(tmp_path))
    changed = matrix.clone()
    changed[3, 5] = torch.nextafter(changed[3, 5], torch.tensor(float("inf")))  # the smallest change there is
    cache = EvidenceCache(tmp_path)
    assert torch.equal(spectrum(changed, cache), eigenvalues(changed))
    assert cache.record()[SPECTRA]["misses"] == 1 and len(entries(tmp_path)) == 2


def test_the_key_covers_the_bytes_dtype_shape_and_numerics():
    matrix = weight()
    key = spectrum_key(matrix)
    assert key == spectrum_key(matrix.clone())
    assert key["numerics"] == {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "threads": torch.get_num_threads()}
    assert key["svd_dtype"] == "float32" and key["device"] == "cpu"
    assert spectrum_key(matrix.reshape(64, 48))["weight_sha256"] == key["weight_sha256"]  # same bytes, other shape
    assert spectrum_key(matrix.reshape(64, 48)) != key
    assert spectrum_key(matrix.to(torch.bfloat16))["dtype"] == "bfloat16"
    assert spectrum_key(matrix.T)["weight_sha256"] != key["weight_sha256"]  # the matrix, not its storage
    with threads(torch.get_num_threads() + 1):
        assert spectrum_key(matrix) != key


@pytest.mark.parametrize("content", [
    "{\"key\": ",  # cut short
    "\x00\xff garbage",
    "[1, 2, 3]",
    "{}",
])
def test_a_corrupt_entry_is_computed_again_and_overwritten(tmp_path, svd_calls, caplog, content):
    matrix = weight()
    spectrum(matrix, EvidenceCache(tmp_path))
    (entry,) = entries(tmp_path)
    entry.write_text(content)
    cache = EvidenceCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="symprune"):
        assert torch.equal(spectrum(matrix, cache), eigenvalues(matrix))
    assert f"unreadable spectrum cache entry {entry}" in caplog.text
    assert cache.record()[SPECTRA]["misses"] == 1 and len(svd_calls) == 3  # cold, again, and eigenvalues above
    rewritten = EvidenceCache(tmp_path)
    assert torch.equal(spectrum(matrix, rewritten), eigenvalues(matrix)) and len(svd_calls) == 4
    assert rewritten.record()[SPECTRA]["hits"] == 1


def test_an_entry_with_the_wrong_number_of_eigenvalues_is_computed_again(tmp_path, caplog):
    matrix = weight()
    spectrum(matrix, EvidenceCache(tmp_path))
    (entry,) = entries(tmp_path)
    stored = json.loads(entry.read_text())
    entry.write_text(json.dumps(stored | {"result": {"eigenvalues": stored["result"]["eigenvalues"][1:]}}))
    cache = EvidenceCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="symprune"):
        assert torch.equal(spectrum(matrix, cache), eigenvalues(matrix))
    assert "47 eigenvalues stored for a matrix with 48 singular values" in caplog.text
    assert cache.record()[SPECTRA]["misses"] == 1
    assert len(json.loads(entry.read_text())["result"]["eigenvalues"]) == 48


def test_without_a_cache_directory_nothing_is_written(tmp_path, monkeypatch, svd_calls):
    monkeypatch.chdir(tmp_path)
    cache = EvidenceCache(None)
    first, second = hill_alpha(weight(), cache=cache), hill_alpha(weight(), cache=cache)
    assert first == second and len(svd_calls) == 2
    assert cache.record() == {SPECTRA: {"hits": 0, "misses": 2, "dir": None}}
    assert list(tmp_path.iterdir()) == []


def alpha_prune(model, cache_dir):
    method = build_method({"name": "wanda"}, {"pattern": "unstructured", "ratio": 0.5, "group": "row"},
                          {"name": "none"})
    model = copy.deepcopy(model)
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    return prune_model(model, method, ids, progress=False, allocation=ALLOCATIONS.build({"name": "alpha"}),
                       cache_dir=cache_dir)


def test_a_prune_twice_with_one_cache_makes_the_same_masks_from_hits_only(tmp_path, svd_calls):
    model = tiny_architecture("llama3", num_hidden_layers=3)
    uncached = alpha_prune(model, None)
    matrices = len(uncached.layers)
    assert uncached.caches == {SPECTRA: {"hits": 0, "misses": matrices, "dir": None}}
    cold, warm = alpha_prune(model, tmp_path), alpha_prune(model, tmp_path)
    assert len(svd_calls) == 2 * matrices
    assert cold.caches[SPECTRA]["misses"] == matrices and cold.caches[SPECTRA]["hits"] == 0
    assert warm.caches[SPECTRA] == {"hits": matrices, "misses": 0, "dir": str(tmp_path.resolve() / SPECTRA)}
    for report in (cold, warm):
        assert [layer.target for layer in report.layers] == [layer.target for layer in uncached.layers]
        assert report.masks.sha256() == uncached.masks.sha256()
    assert len(set(layer.target for layer in uncached.layers)) > 1


def test_a_run_records_its_spectra_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default relative paths would go
    run = ("model=synthetic", "calibration=random", "eval=perplexity_random", "calibration.nsamples=4",
           "calibration.seqlen=32", "eval.perplexity.seqlen=32", "eval.perplexity.max_windows=2", "logger=none",
           "progress=false", "allocation=alpha")
    cache = tmp_path / "cache"
    first, second = (execute(plan_run(compose_run(*run, f"paths.cache={cache}")), NoLogger()) for _ in range(2))
    matrices = len(first.layers)
    assert first.caches[SPECTRA] == {"hits": 0, "misses": matrices, "dir": str(cache.resolve() / SPECTRA)}
    assert second.caches[SPECTRA] == {"hits": matrices, "misses": 0, "dir": str(cache.resolve() / SPECTRA)}
    assert second.masks.sha256() == first.masks.sha256() and len(entries(cache)) == matrices
    uncached = execute(plan_run(compose_run(*run, "paths.cache=null")), NoLogger())
    assert uncached.caches[SPECTRA] == {"hits": 0, "misses": matrices, "dir": None}
    assert uncached.masks.sha256() == first.masks.sha256()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache"]
