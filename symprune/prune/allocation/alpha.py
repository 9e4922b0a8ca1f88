"""AlphaPruning (Lu et al. 2024; reference haiquanlu/AlphaPruning): matrices whose weight spectrum is less
heavy-tailed (a larger power-law exponent α) are pruned more. No calibration data.

α is the Hill estimator of the eigenvalues of WᵀW (the squared singular values), as the reference's
``net_esd_estimator``: with ``metric=alpha_peak`` (its default) the tail's start x_min is searched near the
peak of the log-eigenvalue histogram and the fit with the smallest Kolmogorov–Smirnov distance wins; with
``alpha_mid`` x_min is the middle eigenvalue. With ``mapping=block_wise`` (its default) each block takes the
mean α of its matrices. α maps linearly onto [1 − ε, 1 + ε], scaled so the size-weighted mean is the target.
"""

from dataclasses import dataclass

import torch

from symprune.errors import ConfigError
from symprune.options import UNIT, option
from symprune.prune.allocation import ALLOCATIONS, Layout, unit_range

METRICS = ("alpha_peak", "alpha_mid")
MAPPINGS = ("block_wise", "layer_wise")
HISTOGRAM_BINS = 100  # reference: bins
MIDDLE = 2  # alpha_mid's x_min: eigenvalue int(N / 2) (reference: xmin_pos)


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


def hill_alpha(weight: torch.Tensor, metric: str = "alpha_peak") -> float:
    """The power-law exponent of the eigenvalue spectrum of WᵀW by the Hill estimator (the reference's fit)."""
    eigs = torch.sort(torch.linalg.svdvals(weight.detach().float().cpu()) ** 2).values
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
                      matrix_evidence=lambda params: lambda weight: hill_alpha(weight, params.metric))
def alpha(layout: Layout, target: float, evidence: torch.Tensor, epsilon: float, metric: str,
          mapping: str) -> torch.Tensor:
    """``evidence``: each matrix's α."""
    alphas = evidence.double()
    if mapping == "block_wise":
        alphas = layout.per_layer(layout.block_means(alphas))
    ratios = unit_range(alphas) * (2 * epsilon) + (1 - epsilon)
    sizes = layout.size_tensor()
    return ratios * (sizes.sum() * target / (sizes * ratios).sum())
