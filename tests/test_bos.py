"""Where the BOS token goes (calibration.bos, eval.perplexity.bos) and GGUF files assembled from chunk packages."""

import hashlib
import math
from types import SimpleNamespace

import pytest
import torch

from symprune.data.bos import prepend_bos, text_encoder
from symprune.data.corpora import Dataset
from symprune.data.protocols import sample_joined, wikitext_stream
from symprune.data.splits import Split
from symprune.errors import ConfigError
from symprune.evaluate.perplexity import perplexity
from symprune.model.chunked import assemble

BOS = 7


class BosTokenizer:
    """Characters as token ids (their code point), with a BOS first, as LLaMA-2 and Gemma tokenizers do."""

    bos_token_id = BOS

    def __call__(self, text, return_tensors="pt"):
        return SimpleNamespace(input_ids=torch.tensor([[BOS] + [ord(c) for c in text]]))


TEXTS = ["abcdefghij" * 3, "klmnopqrst" * 3]
CORPUS = Dataset(
    calibration=Split(lambda: TEXTS, "texts", "texts", "none", None),
    evaluation=Split(lambda: TEXTS, "texts", "texts", "none", None),
    sample=sample_joined,
    stream=wikitext_stream,
)


def test_the_encoder_keeps_or_drops_the_leading_bos():
    tokenizer = BosTokenizer()
    assert text_encoder(tokenizer, "stream")("ab").tolist() == [[BOS, 97, 98]]
    assert text_encoder(tokenizer, "none")("ab").tolist() == [[97, 98]]
    assert text_encoder(tokenizer, "window")("ab").tolist() == [[97, 98]]
    assert prepend_bos(torch.tensor([[1, 2], [3, 4]]), BOS).tolist() == [[BOS, 1, 2], [BOS, 3, 4]]


def test_calibration_samples_by_bos_mode():
    tokenizer = BosTokenizer()
    stream = CORPUS.calibration_ids(tokenizer, 64, 8, 0, None, bos="stream")[0]
    none = CORPUS.calibration_ids(tokenizer, 64, 8, 0, None, bos="none")[0]
    window = CORPUS.calibration_ids(tokenizer, 64, 8, 0, None, bos="window")[0]
    assert stream.shape == none.shape == window.shape == (64, 8)
    assert (window[:, 0] == BOS).all() and not (window[:, 1:] == BOS).any()  # one BOS per sample, in front
    text = torch.tensor([ord(c) for c in " ".join(TEXTS)])

    def windows_of(tokens, rows, length):
        return all(any(torch.equal(row, tokens[start:start + length]) for start in range(len(tokens) - length + 1))
                   for row in rows)

    assert windows_of(torch.cat([torch.tensor([BOS]), text]), stream, 8)  # the stream, its one BOS included
    assert windows_of(text, none, 8) and windows_of(text, window[:, 1:], 7)


def test_perplexity_puts_the_bos_before_every_window():
    """eval.perplexity.bos=window: each window is BOS + seqlen - 1 stream tokens, the loss on those tokens."""
    torch.manual_seed(0)
    vocab, seqlen = 16, 5
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab))
    wrapped = lambda ids, use_cache=False: SimpleNamespace(logits=model(ids))  # noqa: E731
    stream = torch.randint(1, vocab, (1, 17))
    result = perplexity(wrapped, stream, seqlen, progress=False, bos_token_id=0)
    assert (result.windows, result.available_windows, result.seqlen) == (4, 4, seqlen)
    losses = []
    for start in range(0, 16, 4):
        window = torch.cat([torch.tensor([0]), stream[0, start:start + 4]])[None]
        losses.append(torch.nn.functional.cross_entropy(model(window)[0, :-1], window[0, 1:]))
    assert result.perplexity == pytest.approx(math.exp(torch.stack(losses).mean().item()), rel=1e-5)
    plain = perplexity(wrapped, stream, seqlen, progress=False)
    assert (plain.windows, plain.available_windows) == (3, 3)


def test_chunks_assemble_once_into_the_checked_file(tmp_path):
    parts = []
    for index, content in enumerate([b"GGUF-part-one|", b"part-two|", b"three"]):
        parts.append(tmp_path / f"model.gguf.part0{index}")
        parts[-1].write_bytes(content)
    notice = tmp_path / "NOTICE.md"
    notice.write_text("terms")
    sha256 = hashlib.sha256(b"GGUF-part-one|part-two|three").hexdigest()
    with pytest.raises(ConfigError, match="paths.cache, which is null"):
        assemble(parts, "model.gguf", sha256, None, [notice])
    with pytest.raises(ConfigError, match=f"not the published {'0' * 64}"):
        assemble(parts, "model.gguf", "0" * 64, str(tmp_path / "cache"), [notice])
    assert not list((tmp_path / "cache").rglob("*.gguf*"))  # no partial file left behind
    directory = assemble(parts, "model.gguf", sha256, str(tmp_path / "cache"), [notice])
    assert (directory / "model.gguf").read_bytes() == b"GGUF-part-one|part-two|three"
    assert (directory / "NOTICE.md").read_text() == "terms"
    parts[0].write_bytes(b"changed")  # assembled once: a later call reuses the checked file
    assert assemble(parts, "model.gguf", sha256, str(tmp_path / "cache"), [notice]) == directory
