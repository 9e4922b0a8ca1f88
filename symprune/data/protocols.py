"""How text becomes tokens: the references' calibration sampling and evaluation streams (docs/methods.md §6).

Each protocol receives ``encode``, text to (1 × tokens) ids (symprune/data/bos.py decides whether a
text keeps the BOS its tokenizer gives it), and the number of text tokens per window."""

from __future__ import annotations

import random

import torch

from symprune.data.bos import Encoder
from symprune.errors import ConfigError

C4_EVAL_DOCUMENTS = 1100  # the references' C4 perplexity text: the first 1,100 validation documents
C4_EVAL_WINDOWS = 256  # ... truncated to 256 windows of seqlen tokens


# --- calibration protocols ------------------------------------------------------------------


def sample_documents(encode: Encoder, texts: list[str], nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """C4 protocol: repeatedly pick a random document longer than seqlen, then a random window in it."""
    rng = random.Random(seed)
    tokenized: dict[int, torch.Tensor] = {}
    samples = []
    for _ in range(nsamples):
        while True:
            index = rng.randint(0, len(texts) - 1)
            if index not in tokenized:
                tokenized[index] = encode(texts[index])
            ids = tokenized[index]
            if ids.shape[1] > seqlen:
                break
            if len(tokenized) == len(texts) and not any(t.shape[1] > seqlen for t in tokenized.values()):
                longest = max(t.shape[1] for t in tokenized.values())
                raise ConfigError(
                    f"no calibration document is longer than calibration.seqlen={seqlen} tokens "
                    f"(the longest has {longest}); lower calibration.seqlen or choose another calibration set"
                )
        start = rng.randint(0, ids.shape[1] - seqlen - 1)
        samples.append(ids[:, start : start + seqlen])
    return torch.cat(samples)


def sample_joined(encode: Encoder, texts: list[str], nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """WikiText-2 protocol: join the split with spaces, then take random windows of the token stream."""
    return random_windows(encode(" ".join(texts)), nsamples, seqlen, seed, "the calibration text")


def random_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int, what: str) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens at seeded random starts of a (1 × tokens) stream."""
    if ids.shape[1] <= seqlen + 1:
        raise ConfigError(f"{what} has {ids.shape[1]} tokens, too few for calibration.seqlen={seqlen}")
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.shape[1] - seqlen - 1) for _ in range(nsamples)]
    return torch.cat([ids[:, start : start + seqlen] for start in starts])


# --- evaluation protocols -------------------------------------------------------------------


def wikitext_stream(encode: Encoder, texts: list[str], seqlen: int) -> torch.Tensor:
    return encode("\n\n".join(texts))


def c4_stream(encode: Encoder, texts: list[str], seqlen: int) -> torch.Tensor:
    return encode(" ".join(texts[:C4_EVAL_DOCUMENTS]))[:, : C4_EVAL_WINDOWS * seqlen]
