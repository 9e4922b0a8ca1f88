import math

import pytest
import torch

from symprune.prune.stats import StatsAccumulator, token_norms

ALL = {"sq_norm", "mean_sum", "var", "hessian"}


def sequences(seed=0, lengths=(7, 12, 5, 9), d_in=6):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(length, d_in, generator=generator) * 2 + 0.5 for length in lengths]


def test_statistics_equal_their_definitions():
    seqs = sequences()
    accumulator = StatsAccumulator(6, ALL, "cpu")
    for sequence in seqs:
        accumulator.add_batch(sequence.unsqueeze(0))
    stats = accumulator.stats
    X = torch.cat(seqs).double()
    n = len(seqs)
    assert (stats.n_sequences, stats.n_tokens) == (4, 33)
    assert torch.allclose(stats.sq_norm.double(), (X**2).sum(0) / n, rtol=1e-5)
    assert torch.allclose(stats.mean_sum.double(), X.sum(0) / n, rtol=1e-5, atol=1e-5)
    assert torch.allclose(stats.hessian.double(), 2 / n * X.T @ X, rtol=1e-5, atol=1e-5)
    # token-weighted mean of each sequence's own (population) variance — not the pooled variance
    within = sum(s.double().var(0, unbiased=False) * len(s) for s in seqs) / X.shape[0]
    assert torch.allclose(stats.var.double(), within, rtol=1e-5)
    assert not torch.allclose(stats.var.double(), X.var(0, unbiased=False), rtol=1e-3)


def test_output_norms_are_those_of_the_layer_outputs():
    seqs = sequences()
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(5))
    accumulator = StatsAccumulator(6, {"out_sq_norm"}, "cpu", d_out=3)
    for sequence in seqs:
        accumulator.add_batch(sequence.unsqueeze(0), (sequence @ weight.t()).unsqueeze(0))
    Y = torch.cat([s.double() @ weight.t().double() for s in seqs])
    assert torch.allclose(accumulator.stats.out_sq_norm.double(), (Y**2).sum(0) / len(seqs), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the layer's outputs"):
        accumulator.add_batch(seqs[0].unsqueeze(0))


def test_recurrence_is_the_references_bit_for_bit():
    """The running means follow s ← s·n/(n+1); n ← n+1; s += f(x)/n in float32, op for op."""
    seqs = sequences(lengths=(8, 8, 8, 8, 8))
    accumulator = StatsAccumulator(6, ALL, "cpu")
    accumulator.add_batch(torch.stack(seqs))
    sq_norm = torch.zeros(6)
    mean_sum = torch.zeros(6)
    hessian = torch.zeros(6, 6)
    var, tokens = None, 0
    for n, sequence in enumerate(seqs):
        x = sequence.t().float()
        seq_var = torch.var(x, dim=1, unbiased=False)
        var = seq_var if tokens == 0 else (var * tokens + seq_var * x.shape[1]) / (tokens + x.shape[1])
        tokens += x.shape[1]
        sq_norm *= n / (n + 1)
        mean_sum *= n / (n + 1)
        hessian *= n / (n + 1)
        sq_norm += torch.norm(x, p=2, dim=1) ** 2 / (n + 1)
        mean_sum += torch.sum(x, dim=1) / (n + 1)
        scaled = math.sqrt(2 / (n + 1)) * x
        hessian += scaled.matmul(scaled.t())
    stats = accumulator.stats
    assert stats.sq_norm.equal(sq_norm) and stats.mean_sum.equal(mean_sum)
    assert stats.hessian.equal(hessian) and stats.var.equal(var)


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_token_norms_are_torch_norm_bit_for_bit(threads, monkeypatch):
    """The statistics' column norms (features × tokens, token-major as the references lay inputs out) equal
    torch.norm's bits at model widths and sequence lengths, with zeros and a dynamic range of 10^30, whatever
    the thread count; on this torch build the sequential sum is the one that runs."""
    from symprune.prune import stats as stats_module

    assert stats_module._sequential_sum_is_torch_norm()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(threads)
        for tokens, features in ((1, 7), (512, 576), (2048, 1536), (700, 4096)):
            rows = torch.randn(tokens, features, generator=generator) * torch.logspace(-15, 15, features)
            rows[:, ::5] = 0
            x = rows.t()
            assert token_norms(x).equal(torch.norm(x, p=2, dim=1))
            assert token_norms(x.contiguous()).equal(torch.norm(x.contiguous(), p=2, dim=1))  # torch.norm itself
    finally:
        torch.set_num_threads(previous)
    sequential = []
    monkeypatch.setattr(stats_module, "_sequential_norms", lambda rows: sequential.append(rows.shape) or torch.zeros(0))
    token_norms(torch.ones(5, 3).t())
    token_norms(torch.ones(3, 5))
    assert sequential == [(5, 3)]  # the token-major layout takes the sequential sum, the other torch.norm


def test_batched_adds_equal_one_sequence_at_a_time():
    seqs = torch.stack(sequences(lengths=(10,) * 6))
    one_by_one = StatsAccumulator(6, ALL, "cpu")
    for sequence in seqs:
        one_by_one.add_batch(sequence.unsqueeze(0))
    batched = StatsAccumulator(6, ALL, "cpu")
    batched.add_batch(seqs[:4])
    batched.add_batch(seqs[4:])
    for name in ALL:
        assert getattr(batched.stats, name).equal(getattr(one_by_one.stats, name)), name


def test_statistics_are_float32_for_half_inputs_and_only_the_wanted_ones():
    accumulator = StatsAccumulator(6, {"sq_norm"}, "cpu")
    accumulator.add_batch(torch.stack(sequences()[:1]).to(torch.bfloat16))
    assert accumulator.stats.sq_norm.dtype == torch.float32
    assert accumulator.stats.var is None and accumulator.stats.hessian is None


def test_unknown_statistic_is_rejected():
    with pytest.raises(ValueError, match="unknown statistics \\['norms'\\]"):
        StatsAccumulator(6, {"norms"}, "cpu")


def test_terms_reused_from_a_layer_with_the_same_inputs_are_added_bit_for_bit():
    """Layers reading one tensor (q/k/v) share what it adds; terms for other sequence numbers or other
    statistics are computed again, never added."""
    first, second = torch.stack(sequences(lengths=(8, 8))), torch.stack(sequences(seed=3, lengths=(8, 8)))
    leader, follower, alone = (StatsAccumulator(6, ALL, "cpu") for _ in range(3))
    for batch in (first, second):
        terms = leader.add_batch(batch)
        assert follower.add_batch(batch, reuse=terms) is terms
        alone.add_batch(batch)
    for name in ALL:
        assert getattr(follower.stats, name).equal(getattr(alone.stats, name)), name
    stale = StatsAccumulator(6, ALL, "cpu").add_batch(second)  # sequences 1-2, offered for sequences 5-6
    assert leader.add_batch(second, reuse=stale) is not stale
    other = StatsAccumulator(6, {"sq_norm"}, "cpu").add_batch(first)
    fresh = StatsAccumulator(6, ALL, "cpu")
    assert fresh.add_batch(first, reuse=other) is not other and fresh.stats.hessian.abs().sum() > 0
