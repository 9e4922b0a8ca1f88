"""Perplexity by the references' protocol (docs/methods.md §6).

The token stream is cut into non-overlapping windows of ``seqlen`` tokens (the
last partial window is dropped); each window's mean next-token loss is scaled
by ``seqlen`` and ``ppl = exp(Σ nll / (windows · seqlen))``, exactly as the
Wanda, RIA and DSnoT evaluation code computes it (``eval.perplexity.bos`` may put a BOS
token in front of every window instead: symprune/data/bos.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from symprune.data.bos import prepend_bos


@dataclass
class PerplexityResult:
    perplexity: float
    windows: int
    available_windows: int
    seqlen: int


@torch.inference_mode()
def perplexity(
    model: nn.Module,
    tokens: torch.Tensor,
    seqlen: int,
    *,
    batch_size: int = 1,
    max_windows: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "perplexity",
    bos_token_id: int | None = None,
) -> PerplexityResult:
    """With ``bos_token_id`` (``eval.perplexity.bos=window``), each window is that token followed by the
    next ``seqlen - 1`` tokens of the stream (symprune/data/bos.py)."""
    length = seqlen if bos_token_id is None else seqlen - 1
    available = tokens.numel() // length
    windows = available if max_windows is None else min(available, max_windows)
    if windows == 0:
        raise ValueError(f"{desc}: the text has {tokens.numel()} tokens, fewer than one window of {length}")
    stream = tokens.reshape(-1)[: windows * length].reshape(windows, length)
    if bos_token_id is not None:
        stream = prepend_bos(stream, bos_token_id)
    loss_fn = nn.CrossEntropyLoss()
    nlls = []
    for start in tqdm(range(0, windows, batch_size), desc=desc, disable=not progress):
        inputs = stream[start : start + batch_size].to(device)
        logits = model(inputs, use_cache=False).logits
        shift_logits = logits[:, :-1, :].contiguous()
        loss = loss_fn(shift_logits.reshape(-1, shift_logits.size(-1)), inputs[:, 1:].reshape(-1))
        nlls.append(loss.float() * seqlen * inputs.shape[0])
    ppl = torch.exp(torch.stack(nlls).sum() / (windows * seqlen))
    return PerplexityResult(float(ppl), windows, available, seqlen)
