"""Masks do not depend on the number of CPU threads: what symprune itself computes (statistics, scores, selection,
channel permutations) gives the same bits under 1, 2 and 4 threads, ties included.

torch reduces a large tensor to a single number in one partial sum per thread, so such a total's last bits
follow the thread count; a reduction with many outputs gives each output to one thread and is the same under
any count. Whatever symprune decides from a total must therefore sum it in a fixed order.
"""

import math

import pytest
import torch

from conftest import compose_run, reference_nm_selection, threads

from symprune.prune.allocation.owl import outlier_ratio
from symprune.prune.method import build_method
from symprune.prune.patterns.nm import nm_mask
from symprune.prune.patterns.permutation import channel_permutation, heuristic_reallocation, retained_score
from symprune.prune.patterns.unstructured import prune_per_layer, prune_per_row
from symprune.prune.stats import STATISTICS, LayerStats, StatsAccumulator
from symprune.prune.totals import ordered_total

THREADS = (1, 2, 4)


def under_each_thread_count(compute):
    """``compute()`` under every count of THREADS."""
    results = []
    for count in THREADS:
        with threads(count):
            results.append(compute())
    return results


def all_equal(results) -> bool:
    first = results[0]
    if isinstance(first, (tuple, list)):
        return all(all_equal(list(parts)) for parts in zip(*results))
    if isinstance(first, dict):
        return all(all_equal([result[key] for result in results]) for key in first)
    return all(torch.equal(first, other) for other in results[1:])


def block_moving_scores(seed: int, rows: int = 512, groups: int = 64, m: int = 4) -> torch.Tensor:
    """Scores whose column totals make the heuristic reallocation move whole blocks (every block keeps its
    columns, the blocks change places): the kept scores are one multiset in either column order, so the
    retained totals of the identity and of the reallocation are equal in exact arithmetic, and only the
    order in which they are summed tells them apart."""
    generator = torch.Generator().manual_seed(seed)
    rank = torch.randperm(groups, generator=generator)  # block b holds the rank[b]-th column of every slice
    totals = torch.empty(groups * m, dtype=torch.float64)
    for block in range(groups):
        for position in range(m):  # odd slices are dealt in reverse (zig-zag)
            within = rank[block] if position % 2 == 0 else groups - 1 - rank[block]
            totals[block * m + position] = (position * groups + within + 1) * 1000.0
    raw = torch.rand(rows, groups * m, generator=generator, dtype=torch.float64) + 0.01
    return (raw * (totals / raw.sum(dim=0))).float()


def test_block_moving_scores_are_an_exact_tie_between_two_column_orders():
    scores = block_moving_scores(0)
    index = heuristic_reallocation(scores, 4)
    assert not torch.equal(index, torch.arange(scores.shape[1]))
    assert sorted(sorted(block) for block in index.reshape(-1, 4).tolist()) == [
        list(range(4 * block, 4 * block + 4)) for block in range(64)]
    kept = torch.topk(scores.reshape(512, -1, 4), 2, dim=-1).values
    kept_permuted = torch.topk(scores[:, index].reshape(512, -1, 4), 2, dim=-1).values
    assert sorted(kept.flatten().tolist()) == sorted(kept_permuted.flatten().tolist())


def test_ordered_total_is_the_sum_under_any_thread_count():
    generator = torch.Generator().manual_seed(0)
    for size in (0, 1, 1023, 1024, 1025, 70_001, 400_000):
        values = torch.rand(size, generator=generator) * torch.logspace(-6, 6, size)
        totals = under_each_thread_count(lambda: ordered_total(values))
        assert all_equal(totals), size
        assert totals[0].dtype == torch.float64 and totals[0].shape == ()
        assert float(totals[0]) == pytest.approx(math.fsum(values.double().tolist()), rel=1e-13, abs=0)
    matrix = torch.rand(300, 7, 5, generator=generator)
    assert ordered_total(matrix).equal(ordered_total(matrix.flatten()))


def test_owl_outlier_ratio_is_the_same_under_any_thread_count_and_counts_above_m_times_the_exact_mean():
    """OWL's threshold is M × the mean of a block's scores; the mean is a total over millions of entries."""
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(rows, 576, generator=generator) ** 4 * 10.0 ** torch.randint(-3, 3, (rows, 576),
                                                                                       generator=generator)
              for rows in (576, 1536, 192)]
    for M in (3.0, 5.0):
        ratios = under_each_thread_count(lambda: outlier_ratio(scores, M))
        assert len(set(ratios)) == 1
        count = sum(score.numel() for score in scores)
        mean = math.fsum(value for score in scores for value in score.double().flatten().tolist()) / count
        outliers = sum(int((score > mean * M).sum()) for score in scores)
        assert ratios[0] == pytest.approx(100.0 * outliers / count, abs=1e-12) and 0 < outliers < count


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_retained_score_is_the_same_under_any_thread_count(seed):
    scores = block_moving_scores(seed)
    index = heuristic_reallocation(scores, 4)
    for order in (scores, scores[:, index]):
        retained = under_each_thread_count(lambda: retained_score(order, 2, 4))
        assert all_equal(retained)
        kept = torch.topk(order.reshape(512, -1, 4), 2, dim=-1).values
        assert float(retained[0]) == pytest.approx(math.fsum(kept.double().flatten().tolist()), rel=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 3])
@pytest.mark.parametrize("assignment", [False, True], ids=["heuristic", "lsa"])
def test_channel_permutation_is_the_same_under_any_thread_count(seed, assignment):
    """With the two retained totals tied, a total whose last bits follow the thread count made the reallocation
    kept under one count and dropped under another; the column order (which the mask and refinements use)
    is now one."""
    scores = block_moving_scores(seed)
    orders = under_each_thread_count(lambda: channel_permutation(scores, 2, 4, assignment=assignment))
    assert all_equal(orders)
    assert sorted(orders[0].tolist()) == list(range(scores.shape[1]))


@pytest.mark.parametrize("permutation", ["heuristic", "lsa"])
def test_permuted_nm_layer_is_the_same_under_any_thread_count(permutation):
    method = build_method({"name": "magnitude"}, {"pattern": "nm", "n": 2, "m": 4, "permutation": permutation},
                          {"name": "none"})
    weight = block_moving_scores(1)
    results = under_each_thread_count(lambda: method.prune_layer("l", weight, LayerStats()))
    assert all_equal([(result.pruned, result.order) for result in results])


def tied(shape, levels: int, seed: int) -> torch.Tensor:
    """Scores on a few levels: every row and every N:M block holds exact ties."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=generator).float() / levels


@pytest.mark.parametrize("levels", [2, 5, 64])
def test_selection_with_exact_ties_is_the_same_under_any_thread_count_and_follows_its_rule(levels):
    """Per row: the int(d_in·ratio) lowest, ties to the lower column; per layer: every score ≤ sorted[k];
    N:M: the N lowest of each block, ties to the lower column (stable) or as the references' per-block topk.
    Large enough that torch splits the work between threads."""
    scores = tied((1536, 576), levels, seed=levels)
    results = under_each_thread_count(lambda: (prune_per_row(scores, 0.5), prune_per_layer(scores, 0.5),
                                               nm_mask(scores, 2, 4, "stable"), nm_mask(scores, 4, 8, "stable"),
                                               nm_mask(scores, 2, 4), nm_mask(scores, 4, 8)))
    assert all_equal(results)
    per_row, per_layer, two_four, four_eight, two_four_topk, four_eight_topk = results[0]
    stable = torch.sort(scores, dim=1, stable=True).indices[:, :288]
    assert per_row.equal(torch.zeros_like(per_row).scatter_(1, stable, True))
    assert per_layer.equal(scores <= torch.sort(scores.flatten()).values[int(scores.numel() * 0.5)])
    for mask, n, m in ((two_four, 2, 4), (four_eight, 4, 8)):
        blocks = scores.reshape(1536, -1, m)
        lowest = torch.sort(blocks, dim=-1, stable=True).indices[..., :n]
        assert mask.equal(torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, lowest, True).reshape(1536, 576))
    assert two_four_topk.equal(reference_nm_selection(scores, 2, 4))
    assert four_eight_topk.equal(reference_nm_selection(scores, 4, 8))


# The real model (conftest's real_layers: dequantised 4-bit weights, many exact ties in |W|).

@pytest.mark.real_model
def test_statistics_of_real_inputs_are_the_same_under_any_thread_count(real_layers):
    def collect():
        out = {}
        for name, (inputs, outputs, weight) in real_layers.items():
            accumulator = StatsAccumulator(weight.shape[1], set(STATISTICS), "cpu", d_out=weight.shape[0])
            for x, y in zip(inputs, outputs):  # one sequence at a time, as the driver adds them
                accumulator.add_batch(x.unsqueeze(0), y.unsqueeze(0))
            out[name] = {statistic: getattr(accumulator.stats, statistic) for statistic in STATISTICS}
        return out

    results = under_each_thread_count(collect)
    assert all_equal(results)
    for name, (inputs, _, _) in real_layers.items():  # and each is its definition
        definition = (inputs.double() ** 2).sum(dim=1).sum(dim=0) / inputs.shape[0]
        assert torch.allclose(results[0][name]["sq_norm"].double(), definition, rtol=1e-5), name


@pytest.mark.real_model
@pytest.mark.parametrize("score", ["wanda", "ria", "stochria", "magnitude"])
@pytest.mark.parametrize("sparsity", ["unstructured", "nm_2_4"])
def test_real_layer_masks_are_the_same_under_any_thread_count(real_layers, score, sparsity):
    """Score and selection of real layers (their own statistics; |W| of 4-bit weights ties often)."""
    cfg = compose_run(f"score={score}", f"sparsity={sparsity}")
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    for name, (inputs, outputs, weight) in real_layers.items():
        accumulator = StatsAccumulator(weight.shape[1], method.required_stats, "cpu", d_out=weight.shape[0])
        for x, y in zip(inputs, outputs):
            accumulator.add_batch(x.unsqueeze(0), y.unsqueeze(0))
        context = {"layer": name} if method.score.meta("takes_layer") else {}
        stats = accumulator.stats
        results = under_each_thread_count(lambda: (method.score.fn(weight, stats, **context),
                                                   method.prune_layer(name, weight, stats).pruned))
        assert all_equal(results), name
