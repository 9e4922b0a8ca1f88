"""Token corpora: token ids without text, for models without a tokenizer (synthetic models) or for
data tokenised elsewhere. They have the text corpora's interface (``symprune/data/corpora.py``).

- ``random``: uniform ids over the model's vocabulary; calibration samples drawn from
  ``calibration.seed``, the evaluation stream (``eval.perplexity.max_windows`` windows, a random
  stream has no length of its own) from a fixed seed of its own.
- a token file, named by its path: ``.pt`` (a tensor saved with ``torch.save``) or ``.npy``, integer
  ids of any shape, read as one stream; calibration takes seeded random windows of it (the
  WikiText-2 protocol's sampling), evaluation the whole stream. Results name it by its stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from symprune.data.protocols import random_windows
from symprune.errors import ConfigError
from symprune.files import file_sha256

TOKEN_FILE_SUFFIXES = (".pt", ".npy")
EVALUATION_SEED = 1


def is_token_file(name: str) -> bool:
    return name.endswith(TOKEN_FILE_SUFFIXES)


def _vocabulary(tokenizer, vocab_size: int | None) -> int:
    if vocab_size is not None:
        return vocab_size
    if tokenizer is None:
        raise ValueError("random token ids need the vocabulary size (no tokenizer to take it from)")
    return len(tokenizer)


def _uniform(shape: tuple[int, int], vocab_size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


class RandomTokens:
    needs_tokenizer = False

    def check(self, part: str, assets: str | None, windows: int | None = None) -> None:
        if part == "evaluation" and windows is None:
            raise ConfigError(
                "a random evaluation stream has no length of its own: set eval.perplexity.max_windows "
                "(eval=perplexity_random does)"
            )

    def identity(self, part: str, assets: str | None) -> dict[str, str]:
        return {"random": "uniform token ids, seeded (calibration.seed; the evaluation stream's own seed)"}

    def calibration_ids(self, tokenizer, nsamples: int, seqlen: int, seed: int, assets, vocab_size=None, bos: str = "stream"):
        vocab = _vocabulary(tokenizer, vocab_size)
        return _uniform((nsamples, seqlen), vocab, seed), f"random token ids, uniform over {vocab}, seed {seed}"

    def evaluation_ids(self, tokenizer, seqlen: int, assets, windows=None, vocab_size=None, bos: str = "stream"):
        vocab = _vocabulary(tokenizer, vocab_size)
        ids = _uniform((1, windows * seqlen), vocab, EVALUATION_SEED)
        return ids, f"random token ids, uniform over {vocab}, seed {EVALUATION_SEED}, {windows} windows"


RANDOM = RandomTokens()


@dataclass(frozen=True)
class TokenFile:
    path: str
    needs_tokenizer = False

    @property
    def label(self) -> str:
        return Path(self.path).stem

    def check(self, part: str, assets: str | None, windows: int | None = None) -> None:
        if not Path(self.path).expanduser().is_file():
            raise ConfigError(f"token file {self.path} does not exist")

    def identity(self, part: str, assets: str | None) -> dict[str, str]:
        return {"file": Path(self.path).name, "sha256": file_sha256(Path(self.path))}

    def read(self, vocab_size: int | None) -> torch.Tensor:
        """The file's ids as a (1 × tokens) int64 stream, checked against the vocabulary."""
        path = Path(self.path).expanduser()
        if path.suffix == ".pt":
            ids = torch.load(path, weights_only=True)
        else:
            import numpy

            ids = torch.from_numpy(numpy.load(path, allow_pickle=False))
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ConfigError(f"token file {path} must hold one integer array of token ids")
        ids = ids.reshape(1, -1).long()
        if ids.numel() == 0:
            raise ConfigError(f"token file {path} holds no token ids")
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise ConfigError(f"token file {path} has negative token ids (the smallest is {low})")
        if vocab_size is not None and high >= vocab_size:
            raise ConfigError(f"token file {path} has token id {high}, beyond the model's vocabulary of {vocab_size}")
        return ids

    def calibration_ids(self, tokenizer, nsamples: int, seqlen: int, seed: int, assets, vocab_size=None, bos: str = "stream"):
        ids = random_windows(self.read(vocab_size), nsamples, seqlen, seed, f"token file {self.path}")
        return ids, f"token file {self.path}, {nsamples} random windows, seed {seed}"

    def evaluation_ids(self, tokenizer, seqlen: int, assets, windows=None, vocab_size=None, bos: str = "stream"):
        ids = self.read(vocab_size)
        return ids, f"token file {self.path} ({ids.shape[1]} tokens)"
