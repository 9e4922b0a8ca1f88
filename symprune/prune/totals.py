"""Totals whose last bits do not depend on the number of CPU threads.

torch sums a large tensor to one number in one partial sum per thread, so such a total's last bits
follow the thread count. Whatever symprune decides from a total (a threshold, a comparison of two
totals) or reports as a number of a run sums it here instead.
"""

import torch

TOTAL_CHUNK = 1024  # entries summed by one output of the first reduction (below torch's parallel grain)


def ordered_total(values: torch.Tensor) -> torch.Tensor:
    """The sum of every entry, in float64, in an order that does not depend on the thread count.

    Consecutive chunks of TOTAL_CHUNK entries are summed first (a reduction with several outputs is
    split between threads by output, each output summed by one thread; a single chunk is too small to
    be split at all), and the chunk sums are then added one after another (a cumulative sum along one
    axis is sequential).
    """
    flat = values.reshape(-1).double()
    whole = flat.numel() - flat.numel() % TOTAL_CHUNK
    chunks = flat[:whole].reshape(-1, TOTAL_CHUNK).sum(dim=1)
    return torch.cat([chunks, flat[whole:].sum().reshape(1)]).cumsum(0)[-1]
