"""Calibration samples and evaluation token streams (algorithms.md §6), from the hub or local files.

Every dataset has a calibration split and an evaluation split. Each split is
read from the Hugging Face Hub, or, when an offline assets directory is set
(``paths.assets``, by default the ``SYMPRUNE_ASSETS`` environment variable),
from a file in it. The protocols (seeded sampling, joins, truncation) are the
reference implementations' and do not depend on where the text came from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from symprune.registry import ConfigError

ASSETS_ENV = "SYMPRUNE_ASSETS"
C4_EVAL_DOCUMENTS = 1100  # the references' C4 perplexity text: the first 1,100 validation documents
C4_EVAL_WINDOWS = 256  # ... truncated to 256 windows of seqlen tokens


@dataclass(frozen=True)
class Split:
    """One split of a corpus as a list of texts, from the hub or from a file under the assets directory."""

    hub: Callable[[], list[str]]
    hub_name: str
    local_file: str
    read_local: Callable[[Path], list[str]]
    local_note: str = ""

    def locate(self, assets: str | None) -> Path | None:
        """The local file when offline assets are configured (error if it is missing), else None (hub)."""
        if not assets:  # unset, or an empty SYMPRUNE_ASSETS
            return None
        path = Path(assets).expanduser() / self.local_file
        if not path.is_file():
            raise ConfigError(
                f"offline data file {path} does not exist (paths.assets={assets}, from {ASSETS_ENV} or the config); "
                f"it should hold {self.hub_name}"
            )
        return path

    def load(self, assets: str | None) -> tuple[list[str], str]:
        """The texts and a description of where they came from, for the run record."""
        path = self.locate(assets)
        if path is not None:
            return self.read_local(path), f"local {path}" + (f" ({self.local_note})" if self.local_note else "")
        try:
            return self.hub(), f"hub {self.hub_name}"
        except Exception as error:  # datasets raises many types when offline or unreachable
            raise ConfigError(
                f"cannot load {self.hub_name} from the Hugging Face Hub ({type(error).__name__}: {error}). "
                f"Offline, set {ASSETS_ENV}=/path/to/assets (or paths.assets=...) to read local files instead"
            ) from None


def _hub_wikitext(split: str) -> Callable[[], list[str]]:
    def load() -> list[str]:
        from datasets import load_dataset

        return list(load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)["text"])

    return load


def _hub_c4(split: str, shard: str) -> Callable[[], list[str]]:
    def load() -> list[str]:
        from datasets import load_dataset

        return list(load_dataset("allenai/c4", data_files={split: shard}, split=split)["text"])

    return load


def _read_jsonl_text(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines]


def _read_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as lines:
        return lines.readlines()


def _read_c4_like(first: int | None, last: int | None) -> Callable[[Path], list[str]]:
    def read(path: Path) -> list[str]:
        with path.open(encoding="utf-8") as lines:
            documents = [json.loads(line) for line in lines]
        return [doc["prefix"] + doc["gold_completion"] for doc in documents[first:last]]

    return read


def _tokenize(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


# --- calibration protocols ------------------------------------------------------------------


def sample_documents(tokenizer, texts: list[str], nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """C4 protocol: repeatedly pick a random document longer than seqlen, then a random window in it."""
    rng = random.Random(seed)
    tokenized: dict[int, torch.Tensor] = {}
    samples = []
    for _ in range(nsamples):
        while True:
            index = rng.randint(0, len(texts) - 1)
            if index not in tokenized:
                tokenized[index] = _tokenize(tokenizer, texts[index])
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


def sample_joined(tokenizer, texts: list[str], nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """WikiText-2 protocol: join the split with spaces, then take random windows of the token stream."""
    ids = _tokenize(tokenizer, " ".join(texts))
    if ids.shape[1] <= seqlen + 1:
        raise ConfigError(f"the calibration text has {ids.shape[1]} tokens, too few for calibration.seqlen={seqlen}")
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.shape[1] - seqlen - 1) for _ in range(nsamples)]
    return torch.cat([ids[:, start : start + seqlen] for start in starts])


# --- evaluation protocols -------------------------------------------------------------------


def wikitext_stream(tokenizer, texts: list[str], seqlen: int) -> torch.Tensor:
    return _tokenize(tokenizer, "\n\n".join(texts))


def c4_stream(tokenizer, texts: list[str], seqlen: int) -> torch.Tensor:
    return _tokenize(tokenizer, " ".join(texts[:C4_EVAL_DOCUMENTS]))[:, : C4_EVAL_WINDOWS * seqlen]


@dataclass(frozen=True)
class Dataset:
    calibration: Split
    evaluation: Split
    sample: Callable[..., torch.Tensor]
    stream: Callable[..., torch.Tensor]


C4_LIKE_NOTE = "C4-like substitute documents, not the c4 shard the papers use"
DATASETS = {
    "wikitext2": Dataset(
        calibration=Split(
            _hub_wikitext("train"), "WikiText-2 raw train split", "wikitext-2/wiki.valid.tokens", _read_lines,
            "WikiText-2 validation split, tokenised form: offline calibration text, disjoint from the test split",
        ),
        evaluation=Split(
            _hub_wikitext("test"), "WikiText-2 raw test split", "wikitext-2-raw/test_rows.jsonl", _read_jsonl_text,
            "identical to the hub's test split",
        ),
        sample=sample_joined,
        stream=wikitext_stream,
    ),
    "c4": Dataset(
        calibration=Split(
            _hub_c4("train", "en/c4-train.00000-of-01024.json.gz"), "C4 en train shard 00000-of-01024",
            "c4_like/documents.jsonl", _read_c4_like(C4_EVAL_DOCUMENTS, None),
            C4_LIKE_NOTE + f"; documents {C4_EVAL_DOCUMENTS} onwards, disjoint from the evaluation ones",
        ),
        evaluation=Split(
            _hub_c4("validation", "en/c4-validation.00000-of-00008.json.gz"), "C4 en validation shard 00000-of-00008",
            "c4_like/documents.jsonl", _read_c4_like(None, C4_EVAL_DOCUMENTS),
            C4_LIKE_NOTE + f"; the first {C4_EVAL_DOCUMENTS} documents",
        ),
        sample=sample_documents,
        stream=c4_stream,
    ),
}


def dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; valid datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def calibration_ids(name: str, tokenizer, nsamples: int, seqlen: int, seed: int, assets: str | None):
    """(samples × seqlen) token ids and where the text came from."""
    data = dataset(name)
    texts, origin = data.calibration.load(assets)
    return data.sample(tokenizer, texts, nsamples, seqlen, seed), origin


def evaluation_ids(name: str, tokenizer, seqlen: int, assets: str | None):
    """(1 × tokens) token stream for perplexity and where the text came from."""
    data = dataset(name)
    texts, origin = data.evaluation.load(assets)
    return data.stream(tokenizer, texts, seqlen), origin
