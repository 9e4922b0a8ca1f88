"""The corpora symprune calibrates and evaluates on: each a calibration split, an evaluation split
and the references' protocol for each (docs/methods.md §6).

Every split is read from the Hugging Face Hub, or, when an offline assets directory is set
(``paths.assets``, by default the ``SYMPRUNE_ASSETS`` environment variable), from a file in it.
The protocols (seeded sampling, joins, truncation) do not depend on where the text came from.
Corpora of token ids without text (random ids, token files: ``symprune/data/tokens.py``) have the
same interface, so a run reads either kind the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from symprune.data.bos import prepend_bos, text_encoder, text_length
from symprune.data.protocols import C4_EVAL_DOCUMENTS, c4_stream, sample_documents, sample_joined, wikitext_stream
from symprune.data.splits import Split, hub_c4, hub_wikitext, read_c4_like, read_jsonl_text, read_lines
from symprune.data.tokens import RANDOM, TokenFile, is_token_file
from symprune.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    """A text corpus: where each split's text comes from and how it becomes tokens."""

    calibration: Split
    evaluation: Split
    sample: Callable[..., torch.Tensor]
    stream: Callable[..., torch.Tensor]
    needs_tokenizer: ClassVar[bool] = True

    def check(self, part: str, assets: str | None, windows: int | None = None) -> None:
        """Before anything loads: the split's local file exists (when offline assets are configured)."""
        getattr(self, part).locate(assets)

    def identity(self, part: str, assets: str | None) -> dict[str, str]:
        """What identifies the split's text: where it comes from, the protocol being the corpus's own."""
        return getattr(self, part).identity(assets)

    def calibration_ids(self, tokenizer, nsamples: int, seqlen: int, seed: int, assets: str | None, vocab_size=None,
                        bos: str = "stream"):
        texts, origin = self.calibration.load(assets)
        samples = self.sample(text_encoder(tokenizer, bos), texts, nsamples, text_length(seqlen, bos), seed)
        return (prepend_bos(samples, tokenizer.bos_token_id) if bos == "window" else samples), origin

    def evaluation_ids(self, tokenizer, seqlen: int, assets: str | None, windows=None, vocab_size=None,
                       bos: str = "stream"):
        """The stream of text tokens; with ``bos=window`` the perplexity puts a BOS before each window."""
        texts, origin = self.evaluation.load(assets)
        return self.stream(text_encoder(tokenizer, bos), texts, text_length(seqlen, bos)), origin


C4_LIKE_NOTE = "C4-like substitute documents, not the c4 shard the papers use"
DATASETS = {
    "wikitext2": Dataset(
        calibration=Split(
            hub_wikitext("train"), "WikiText-2 raw train split", "Salesforce/wikitext wikitext-2-raw-v1 train",
            "wikitext-2/wiki.valid.tokens", read_lines,
            "WikiText-2 validation split, tokenised form: offline calibration text, disjoint from the test split",
        ),
        evaluation=Split(
            hub_wikitext("test"), "WikiText-2 raw test split", "Salesforce/wikitext wikitext-2-raw-v1 test",
            "wikitext-2-raw/test_rows.jsonl", read_jsonl_text,
            "identical to the hub's test split",
        ),
        sample=sample_joined,
        stream=wikitext_stream,
    ),
    "c4": Dataset(
        calibration=Split(
            hub_c4("train", "en/c4-train.00000-of-01024.json.gz"), "C4 en train shard 00000-of-01024",
            "allenai/c4 en/c4-train.00000-of-01024.json.gz train", "c4_like/documents.jsonl", read_c4_like(C4_EVAL_DOCUMENTS, None),
            C4_LIKE_NOTE + f"; documents {C4_EVAL_DOCUMENTS} onwards, disjoint from the evaluation ones",
        ),
        evaluation=Split(
            hub_c4("validation", "en/c4-validation.00000-of-00008.json.gz"), "C4 en validation shard 00000-of-00008",
            "allenai/c4 en/c4-validation.00000-of-00008.json.gz validation", "c4_like/documents.jsonl", read_c4_like(None, C4_EVAL_DOCUMENTS),
            C4_LIKE_NOTE + f"; the first {C4_EVAL_DOCUMENTS} documents",
        ),
        sample=sample_documents,
        stream=c4_stream,
    ),
}


def dataset(name: str):
    """A text corpus of DATASETS, the random token ids, or a token file (a path ending in .pt or .npy)."""
    if name in DATASETS:
        return DATASETS[name]
    if name == "random":
        return RANDOM
    if is_token_file(name):
        return TokenFile(name)
    raise ConfigError(
        f"unknown dataset '{name}'; valid datasets: {', '.join(sorted(DATASETS))}, random (seeded random token ids), "
        f"or a token file (a path ending in .pt or .npy)"
    )


def label(name: str) -> str:
    """How a dataset is named in results: its name, or a token file's stem."""
    return dataset(name).label if is_token_file(name) else name


def calibration_ids(name: str, tokenizer, nsamples: int, seqlen: int, seed: int, assets: str | None, vocab_size=None,
                    bos: str = "stream"):
    """(samples × seqlen) token ids and where they came from. ``vocab_size`` bounds random token ids
    (default: the tokenizer's size); ``bos``: symprune/data/bos.py (text only)."""
    return dataset(name).calibration_ids(tokenizer, nsamples, seqlen, seed, assets, vocab_size, bos)


def evaluation_ids(name: str, tokenizer, seqlen: int, assets: str | None, windows=None, vocab_size=None,
                   bos: str = "stream"):
    """(1 × tokens) token stream for perplexity and where it came from (``windows``: the length of
    a random stream, in windows of seqlen; ``bos``: symprune/data/bos.py, text only)."""
    return dataset(name).evaluation_ids(tokenizer, seqlen, assets, windows, vocab_size, bos)
