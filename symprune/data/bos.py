"""Where the beginning-of-sequence token goes in calibration samples and evaluation windows.

- ``stream``: the tokenizer encodes each text as it would on its own (LLaMA-2 and Gemma
  tokenizers put one BOS at its start, SmolLM2's none) and windows are cut from that
  stream, so only a window that starts at the stream's start holds a BOS. The
  references' protocol (Wanda, RIA, DSnoT, SparseGPT).
- ``window``: the text is encoded without a leading BOS, each window holds ``seqlen - 1``
  text tokens and a BOS in front: the model sees ``seqlen`` tokens, as with ``stream``,
  and the loss is on the ``seqlen - 1`` text tokens after the BOS (the first text token
  of each window is predicted from the BOS alone).
- ``none``: the text is encoded without a leading BOS; windows of ``seqlen`` text tokens.
"""

from __future__ import annotations

from typing import Callable

import torch

BOS_MODES = ("stream", "window", "none")

Encoder = Callable[[str], torch.Tensor]


def text_encoder(tokenizer, mode: str) -> Encoder:
    """Text to (1 × tokens) ids: as the tokenizer encodes it (``stream``), or without a leading BOS."""
    bos = tokenizer.bos_token_id

    def encode(text: str) -> torch.Tensor:
        ids = tokenizer(text, return_tensors="pt").input_ids
        if mode != "stream" and bos is not None and ids.shape[1] and ids[0, 0] == bos:
            ids = ids[:, 1:]
        return ids

    return encode


def text_length(seqlen: int, mode: str) -> int:
    """How many text tokens a window of ``seqlen`` model positions holds."""
    return seqlen - 1 if mode == "window" else seqlen


def prepend_bos(windows: torch.Tensor, bos_token_id: int) -> torch.Tensor:
    """(n × length) text windows -> (n × length + 1), each starting with the BOS token."""
    return torch.cat([torch.full((windows.shape[0], 1), bos_token_id, dtype=windows.dtype), windows], dim=1)
