"""AlphaPruning (Lu et al. 2024; reference haiquanlu/AlphaPruning): matrices whose weight spectrum is less
heavy-tailed (a larger power-law exponent α) are pruned more. No calibration data.

α is the Hill estimator of the eigenvalues of WᵀW (the squared singular values), as the reference's
``net_esd_estimator``: with ``metric=alpha_peak`` (its default) the tail's start x_min is searched near the
peak of the log-eigenvalue histogram and the fit with the smallest Kolmogorov–Smirnov distance wins; with
``alpha_mid`` x_min is the middle eigenvalue. With ``mapping=block_wise`` (its default) each block takes the
mean α of its matrices. α maps linearly onto [1 − ε, 1 + ε], scaled so the size-weighted mean is the target.

The eigenvalues are computed in float32 on the device the matrix is on (its block's compute device), and
cached across runs: one JSON entry per matrix under ``<paths.cache>/spectra/``, keyed by the SHA-256 of the
matrix's bytes with its dtype and shape, the dtype the SVD runs in, the device's numerics
(``provenance.numerics``: a GPU's name, or the CPU's vector instructions and thread count) and torch's version.
An entry holds the sorted eigenvalues, not α, so both metrics read it. One entry per matrix rather than one
per model: the evidence needs nothing but the matrix, another selection of the same model's matrices reuses
the entries, and the parallel jobs of a sweep each write whole entries of their own, atomically.
"""

import hashlib
import logging
from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.evaluate.cache import CacheEntry, cache_entry
from symprune.options import UNIT, option
from symprune.prune.allocation import ALLOCATIONS, EvidenceCache, Layout, unit_range
from symprune.provenance import numerics

log = logging.getLogger("symprune")

METRICS = ("alpha_peak", "alpha_mid")
MAPPINGS = ("block_wise", "layer_wise")
HISTOGRAM_BINS = 100  # reference: bins
MIDDLE = 2  # alpha_mid's x_min: eigenvalue int(N / 2) (reference: xmin_pos)
SPECTRA = "spectra"  # the cache's folder for the eigenvalues
SVD_DTYPE = torch.float32


@dataclass
class AlphaParams:
    """AlphaPruning's parameters, with the reference's defaults."""

    epsilon: float = option(0.3, range=UNIT)
    """ε: ratios span target × [1 − ε, 1 + ε] before scaling (reference: epsilon)."""
    metric: str = option("alpha_peak", choices=METRICS)
    """alpha_peak: x_min near the spectrum's histogram peak; alpha_mid: the middle eigenvalue."""
    mapping: str = option("block_wise", choices=MAPPINGS)
    """block_wise: each block takes its matrices' mean α; layer_wise: each matrix its own."""

    def __post_init__(self):
        if not 0.0 <= self.epsilon < 1.0:
            raise ConfigError(f"allocation.epsilon={self.epsilon} is outside [0, 1)")
        if self.metric not in METRICS:
            raise ConfigError(f"unknown allocation.metric '{self.metric}'; valid: {', '.join(METRICS)}")
        if self.mapping not in MAPPINGS:
            raise ConfigError(f"unknown allocation.mapping '{self.mapping}'; valid: {', '.join(MAPPINGS)}")


def eigenvalues(weight: torch.Tensor) -> torch.Tensor:
    """The eigenvalues of WᵀW (the squared singular values) in ascending order, computed on the weight's device,
    returned on the CPU."""
    return torch.sort(torch.linalg.svdvals(weight.detach().to(SVD_DTYPE)) ** 2).values.cpu()


def spectrum_key(weight: torch.Tensor) -> dict:
    """What decides ``eigenvalues(weight)``: the matrix's bytes as stored, the SVD's dtype and the numerics of
    the device it runs on."""
    stored = weight.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return {"weight_sha256": hashlib.sha256(stored.numpy()).hexdigest(),
            "dtype": str(weight.dtype).removeprefix("torch."), "shape": list(weight.shape),
            "svd_dtype": str(SVD_DTYPE).removeprefix("torch."), "device": weight.device.type,
            "numerics": numerics(weight.device), "torch": torch.__version__}


def spectrum(weight: torch.Tensor, cache: EvidenceCache | None = None) -> torch.Tensor:
    """``eigenvalues(weight)``, from ``cache`` when an earlier run stored them for the same key, else computed
    (and stored there when it has a directory)."""
    if cache is None or cache.directory is None:
        if cache is not None:
            cache.count(SPECTRA, hit=False)
        return eigenvalues(weight)
    entry = cache_entry(cache.directory, SPECTRA, spectrum_key(weight))
    stored = stored_eigenvalues(entry, min(weight.shape))
    cache.count(SPECTRA, hit=stored is not None)
    if stored is not None:
        return stored
    eigs = eigenvalues(weight)
    entry.write({"eigenvalues": eigs.tolist()})  # float32 → float → JSON → float32 is exact
    return eigs


def stored_eigenvalues(entry: CacheEntry, count: int) -> torch.Tensor | None:
    """The ``count`` eigenvalues ``entry`` holds; None when it holds none for this key, or, with a warning, when
    it cannot be read (its spectrum is computed again and the entry overwritten)."""
    try:
        stored = entry.read()
        if stored is None:
            return None
        eigs = torch.tensor(stored["eigenvalues"], dtype=SVD_DTYPE)
        if eigs.shape != (count,):
            raise ValueError(f"{eigs.numel()} eigenvalues stored for a matrix with {count} singular values")
        return eigs
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("unreadable spectrum cache entry %s (%s: %s); computing it again", entry.path,
                    type(error).__name__, error)
        return None


def hill_alpha(weight: torch.Tensor, metric: str = "alpha_peak", cache: EvidenceCache | None = None) -> float:
    """The power-law exponent of the eigenvalue spectrum of WᵀW by the Hill estimator (the reference's fit)."""
    return fit_hill(spectrum(weight, cache), metric)


def fit_hill(eigs: torch.Tensor, metric: str) -> float:
    """The Hill exponent of the ascending eigenvalues ``eigs`` (float32, CPU) under ``metric``."""
    log_eigs = torch.log(eigs)
    count = len(eigs)

    def fit(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = float(count - i)
        alpha = 1 + n / (log_eigs[i:].sum() - n * log_eigs[i])
        distance = torch.max(torch.abs(1 - (eigs[i:] / eigs[i]) ** (-alpha + 1) - torch.arange(n) / n))
        return alpha, distance

    if metric == "alpha_mid":
        return float(fit(count // MIDDLE)[0])
    log10 = torch.log10(eigs)
    counts = torch.histc(log10, HISTOGRAM_BINS, min=float(log10.min()), max=float(log10.max()))
    peak = 10 ** torch.linspace(float(log10.min()), float(log10.max()), HISTOGRAM_BINS + 1)[torch.argmax(counts)]
    lowest, highest = torch.log10(0.95 * peak), 1.5 * peak  # the reference compares x_min with these two as written
    alphas, distances = torch.zeros(count - 1), torch.ones(count - 1)
    for i, xmin in enumerate(eigs[:-1]):
        if xmin < lowest:
            continue
        if xmin > highest:
            break
        alphas[i], distance = fit(i)
        if alphas[i] > 1:
            distances[i] = distance
    return float(alphas[torch.argmin(distances)])


@ALLOCATIONS.register("alpha", params=AlphaParams,
                      matrix_evidence=lambda params: lambda weight, cache: hill_alpha(weight, params.metric, cache))
def alpha(layout: Layout, target: float, evidence: torch.Tensor, epsilon: float, metric: str,
          mapping: str) -> torch.Tensor:
    """``evidence``: each matrix's α."""
    alphas = evidence.double()
    if mapping == "block_wise":
        alphas = layout.per_layer(layout.block_means(alphas))
    ratios = unit_range(alphas) * (2 * epsilon) + (1 - epsilon)
    sizes = layout.size_tensor()
    return ratios * (sizes.sum() * target / (sizes * ratios).sum())
