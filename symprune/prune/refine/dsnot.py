"""DSnoT (Zhang et al., ICLR 2024): training-free mask surgery after the first mask (docs/methods.md §4.1).

Per output row i, with contributions c_ij = W_ij · mean_sum_j, the row's reconstruction error is
e_i = Σ_{j pruned} c_ij. Every cycle, each active row swaps one pruned weight back in (grow: e_i -= c_ig)
for one kept weight out (prune: e_i += c_ip), steering e_i toward zero. Weights never change, and every
row — and every N:M block — keeps its number of zeros.

All rows move together: the per-row candidate lists are index tensors consumed through per-row
pointers, so there is no Python loop over rows or columns, only over cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from symprune.errors import ConfigError
from symprune.options import NON_NEGATIVE, POSITIVE, option
from symprune.prune.patterns.contract import NM, UNSTRUCTURED, Contract
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.refine import REFINEMENTS
from symprune.prune.scores.wanda import wanda
from symprune.prune.stats import LayerStats
from symprune.prune.targets import Targets
from symprune.prune.totals import ordered_total

ATTENTION = r"(?i)(^|\.)[^.]*(attn|attention)[^.]*(\.|$)"  # a module path component naming attention
SUBLAYER_SELECTIONS = {"attention": Targets((ATTENTION,)), "mlp": Targets(ignore=(ATTENTION,)), "all": Targets()}
SUBLAYERS = tuple(SUBLAYER_SELECTIONS)
STATS = frozenset({"sq_norm", "mean_sum", "var"})


@dataclass
class DSnoTParams:
    """Training-free grow/prune swaps on the first mask (docs/methods.md §4.1); the reference's defaults."""

    max_cycles: int = option(50, range=POSITIVE)
    """At most this many swap cycles (reference: max_cycle_time)."""
    update_threshold: float = option(0.1, range=NON_NEGATIVE)
    """A row stops once |e_i| ≤ this (reference: update_threshold)."""
    var_power: float = option(1.0, range=NON_NEGATIVE)
    """γ: growing candidates ranked by c_ij / var_j^γ (reference: pow_of_var_regrowing)."""
    same_sign: Optional[bool] = None
    """Also stop a row when a swap would flip e_i's sign; null: the reference's rule per path (off for
    unstructured masks, where its flag cannot turn it on; on for N:M)."""
    sublayers: str = option("attention", choices=SUBLAYERS)
    """Which layers are refined: attention, mlp or all (reference: skip_layer=mlp, i.e. attention only)."""

    def __post_init__(self):
        if self.max_cycles <= 0:
            raise ConfigError(f"refine.max_cycles={self.max_cycles} must be a positive integer")
        if not (math.isfinite(self.update_threshold) and self.update_threshold >= 0):
            raise ConfigError(f"refine.update_threshold={self.update_threshold} must be a finite number >= 0")
        if not (math.isfinite(self.var_power) and self.var_power >= 0):
            raise ConfigError(f"refine.var_power={self.var_power} (the variance exponent γ) must be a finite number >= 0")
        if self.sublayers not in SUBLAYERS:
            raise ConfigError(f"unknown refine.sublayers '{self.sublayers}'; valid: {', '.join(SUBLAYERS)}")


@dataclass
class Rankings:
    """What orders the candidates of one layer (all float32, d_out × d_in).

    grow: pruned weights are ranked ascending by it; when e_i > 0 the highest remaining one is grown,
        otherwise the lowest.
    prune: an importance of the kept weights (lowest pruned first). Unstructured masks split the kept
        weights by the sign of c_ij: negatives by ascending importance, then zero contributions, then
        positives by descending importance; e_i < 0 takes from the positive end, otherwise from the
        negative end. N:M masks prune, in the grown weight's block, the least important weight that
        was kept in the first mask and still is.
    importance, accept_penalty: R²-DSnoT's accept rule (off when accept_penalty is 0):
        accept only if |e_i + c_ip - c_ig| + accept_penalty · (importance_ip - importance_ig) < |e_i|.
    """

    grow: torch.Tensor
    prune: torch.Tensor
    importance: Optional[torch.Tensor] = None
    accept_penalty: float = 0.0


def is_selected(layer: str, sublayers: str) -> bool:
    """Whether ``sublayers`` refines ``layer``: a layer is attention when a component of its module path says so
    (self_attn, attn, attention); the choice is a layer selection like the run's ``targets``/``ignore``."""
    return SUBLAYER_SELECTIONS[sublayers].selects(layer)


def contribution(weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """c_ij = W_ij · mean_sum_j: the expected change of output i caused by pruning W_ij."""
    return weight.float() * stats.require("mean_sum", "dsnot").reshape(1, -1)


def reconstruction_error(contributions: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """e_i = Σ_{j pruned} c_ij, per row."""
    return torch.sum(torch.where(pruned, contributions, 0), dim=1)


def growing_key(contributions: torch.Tensor, stats: LayerStats, var_power: float) -> torch.Tensor:
    """c_ij / var_j^γ; γ = 0 skips the division, as the reference does."""
    if not var_power:
        return contributions
    return contributions / torch.pow(stats.require("var", "dsnot").reshape(1, -1), var_power)


def dsnot_rankings(
    weight: torch.Tensor, contributions: torch.Tensor, scores: torch.Tensor, stats: LayerStats, nm: bool, var_power: float
) -> Rankings:
    """The reference's orders: pruning by the Wanda score (unstructured) or the first mask's score (N:M)."""
    prune = scores.float() if nm else wanda(weight.float(), stats)
    return Rankings(grow=growing_key(contributions, stats, var_power), prune=prune)


def _candidates_first(key: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Per row, the candidate columns in ascending key order (stable), then all other columns."""
    order = torch.sort(key, dim=1, stable=True).indices
    others_last = torch.sort((~candidate).gather(1, order).to(torch.int8), dim=1, stable=True).indices
    return order.gather(1, others_last)


def _sign_split_order(importance: torch.Tensor, contributions: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Per row, the kept columns: c < 0 by ascending importance, c = 0 ascending, c > 0 descending; then the rest."""
    by_importance = _candidates_first(importance, kept)
    width = kept.shape[1]
    positions = torch.arange(width, device=kept.device).expand_as(by_importance)
    rank = torch.empty_like(by_importance).scatter_(1, by_importance, positions)
    key = torch.where(contributions < 0, rank, torch.where(contributions == 0, width + rank, 3 * width - rank))
    return torch.argsort(torch.where(kept, key, 4 * width), dim=1, stable=True)


class _TwoEndedLists:
    """Per row, a list of candidate columns (the first ``count`` entries of ``order``) consumed from either end."""

    def __init__(self, order: torch.Tensor, count: torch.Tensor):
        self.order = order
        self.low = torch.zeros_like(count)
        self.high = count - 1

    def available(self) -> torch.Tensor:
        return self.low <= self.high

    def peek(self, from_high: torch.Tensor) -> torch.Tensor:
        position = torch.where(from_high, self.high, self.low).clamp(0, self.order.shape[1] - 1)
        return self.order.gather(1, position.unsqueeze(1)).squeeze(1)

    def pop(self, from_high: torch.Tensor, taken: torch.Tensor) -> None:
        self.low += (taken & ~from_high).long()
        self.high -= (taken & from_high).long()


class _BlockPruner:
    """N:M: in the grown weight's block, the least important weight kept by the first mask and still kept.

    The candidate is the block's lowest importance with every other weight at +inf, chosen by the N:M
    pattern's own selection (``nm_mask`` with one pruned of M) so equal importances follow the pattern's
    tie rule: ``topk`` as the reference's ``torch.topk(block, 1, largest=False)``, ``stable`` the lower column."""

    def __init__(self, importance: torch.Tensor, initially_kept: torch.Tensor, m: int, ties: str):
        self.importance = importance
        self.initially_kept = initially_kept
        self.m = m
        self.ties = ties

    def pick(self, grown: torch.Tensor, pruned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = grown - grown % self.m
        columns = start.unsqueeze(1) + torch.arange(self.m, device=grown.device)
        candidate = (self.initially_kept & ~pruned).gather(1, columns)
        values = self.importance.gather(1, columns).masked_fill(~candidate, float("inf"))
        lowest = nm_mask(values, 1, self.m, self.ties).to(torch.int8).argmax(dim=1)
        return start + lowest, candidate.any(dim=1)


def swap_cycles(
    pruned: torch.Tensor,
    contributions: torch.Tensor,
    rankings: Rankings,
    *,
    block_size: int | None,
    ties: str,
    update_threshold: float,
    same_sign: bool,
    max_cycles: int,
) -> tuple[torch.Tensor, dict[str, int]]:
    """DSnoT's grow/prune cycles on a first mask; ``block_size`` set: the N:M variant, choosing among equal
    candidates by the pattern's tie rule ``ties``.

    A row stops for good the first time, at the start of a cycle, |e_i| <= update_threshold, the swap
    would flip e_i's sign (same-sign rule on), R²'s accept rule rejects the swap, or it has no candidate
    left to grow or prune (symprune's guard; the reference would reuse columns and break the invariant).
    """
    pruned = pruned.clone()
    kept_first = ~pruned
    rows = torch.arange(pruned.shape[0], device=pruned.device)
    error = reconstruction_error(contributions, pruned)
    initial_sign = torch.sign(error)
    growing = _TwoEndedLists(_candidates_first(rankings.grow, pruned), pruned.sum(dim=1))
    if block_size is None:
        pruning = _TwoEndedLists(_sign_split_order(rankings.prune, contributions, kept_first), kept_first.sum(dim=1))
    else:
        block_pruner = _BlockPruner(rankings.prune, kept_first, block_size, ties)

    active = torch.ones_like(error, dtype=torch.bool)
    cycles = swaps = 0
    while cycles < max_cycles and bool(active.any()):
        cycles += 1
        grow_high = error > 0
        grown = growing.peek(grow_high)
        if block_size is None:
            prune_high = error < 0
            dropped, can_prune = pruning.peek(prune_high), pruning.available()
        else:
            dropped, can_prune = block_pruner.pick(grown, pruned)
        grown_c, dropped_c = contributions[rows, grown], contributions[rows, dropped]
        error_after = error + dropped_c - grown_c

        accept = active & growing.available() & can_prune & (error.abs() > update_threshold)
        if same_sign:
            accept &= torch.sign(error_after) == initial_sign
        if rankings.accept_penalty:
            importance = rankings.importance
            cost = rankings.accept_penalty * (importance[rows, dropped] - importance[rows, grown])
            accept &= error_after.abs() + cost < error.abs()

        pruned[rows, dropped] |= accept
        pruned[rows, grown] &= ~accept
        error = torch.where(accept, error_after, error)
        growing.pop(grow_high, accept)
        if block_size is None:
            pruning.pop(prune_high, accept)
        swaps += int(accept.sum())
        active = accept
    return pruned, {"cycles": cycles, "swaps": swaps, "active_rows": int(active.sum())}


RankingsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, LayerStats, bool], Rankings]


def refine_layer(
    weight: torch.Tensor,
    pruned: torch.Tensor,
    *,
    scores: torch.Tensor,
    stats: LayerStats,
    layer: str,
    contract: Contract,
    settings: DSnoTParams,
    rankings: RankingsFn,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Refine one layer's first mask if ``settings.sublayers`` selects it and report Σ|e_i| before and after
    (only then: summed over a run's layers, the errors are the refined layers' own). The pattern's contract
    says whether zeros are counted per block of M columns (N:M) or per row."""
    if not is_selected(layer, settings.sublayers):
        return pruned, {"refined": 0, "cycles": 0, "swaps": 0, "active_rows": 0, "error_grew": 0}
    contributions = contribution(weight, stats)
    before = float(ordered_total(reconstruction_error(contributions, pruned).abs()))
    nm = contract.kind == NM
    refined, counts = swap_cycles(
        pruned, contributions, rankings(weight, contributions, scores, stats, nm),
        block_size=contract.block,
        ties=contract.ties,
        update_threshold=settings.update_threshold,
        same_sign=nm if settings.same_sign is None else settings.same_sign,
        max_cycles=settings.max_cycles,
    )
    after = float(ordered_total(reconstruction_error(contributions, refined).abs()))
    return refined, {"refined": 1, **counts, "abs_error_before": before, "abs_error_after": after,
                     "error_grew": int(after > before)}


@REFINEMENTS.register("dsnot", params=DSnoTParams, stats=STATS, pattern_kinds=frozenset({UNSTRUCTURED, NM}))
def dsnot(weight, pruned, *, scores, stats, layer, contract, **params):
    """DSnoT with the reference's rules (docs/methods.md §4.1)."""
    settings = DSnoTParams(**params)

    def rankings(weight, contributions, scores, stats, nm):
        return dsnot_rankings(weight, contributions, scores, stats, nm, settings.var_power)

    return refine_layer(weight, pruned, scores=scores, stats=stats, layer=layer, contract=contract,
                        settings=settings, rankings=rankings)
