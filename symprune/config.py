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
from symprune.options import NON_NEGATIVE, POSITIVE, option
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
    """Width of the hidden states."""
    intermediate_size: Optional[int] = None
    """Width of the MLP's inner layer."""
    num_layers: Optional[int] = None
    """Number of decoder blocks."""
    num_heads: Optional[int] = None
    """Attention heads (must divide hidden_size)."""
    num_kv_heads: Optional[int] = None
    """Key-value heads (grouped-query attention; must divide num_heads)."""
    vocab_size: Optional[int] = None
    """Vocabulary size."""
    max_positions: Optional[int] = None
    """Longest sequence the model accepts."""


@dataclass
class ModelConfig:
    """The model to prune: a hub id, a local directory or GGUF file, a Python package shipping one, or a
    synthetic model (conf/model/)."""

    name: str = MISSING
    """The model's name in records and tables."""
    pretrained: Optional[str] = None
    """Hub id or local directory."""
    package: Optional[str] = None
    """Or: an installed Python package (import name) whose folder holds the files."""
    requirement: Optional[str] = None
    """The pip requirement that installs `package` (installed without its dependencies)."""
    gguf_file: Optional[str] = None
    """A GGUF file inside that directory, package or hub repository."""
    gguf_parts: List[str] = field(default_factory=list)
    """Or: a GGUF file shipped in chunk packages, "<package>/<path>" of each chunk in order, assembled into
    paths.cache as gguf_file."""
    gguf_sha256: Optional[str] = None
    """The assembled file's published SHA-256 (required with gguf_parts)."""
    keep_files: List[str] = field(default_factory=list)
    """Files of `package` kept beside the assembled file (terms of use, notice)."""
    dtype: str = option("float32", choices="symprune.model.loading:DTYPES")
    """The weights' dtype (every statistic is float32 whatever it is)."""
    revision: Optional[str] = None
    """Hub revision (a commit, tag or branch); part of the run's identity."""
    trust_remote_code: bool = False
    """Let transformers run the model repository's own code."""
    size: Optional[str] = option(None, choices="symprune.model.synthetic:PRESETS")
    """Synthetic model: a preset of a real model's shape (or null: every dimension from `shape`)."""
    architecture: Optional[str] = None
    """Synthetic model: a transformers model type (llama, opt, ...); null: the preset's."""
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    """Synthetic model: dimensions replacing the preset's."""
    seed: Optional[int] = None
    """Synthetic model: the random weights' seed (null: 0)."""

    @property
    def synthetic(self) -> bool:
        return self.size is not None or self.architecture is not None


@dataclass
class CalibrationConfig:
    """The calibration samples the statistics are collected on (conf/calibration/)."""

    name: str = MISSING
    """wikitext2 or c4 (symprune.data.DATASETS), random (seeded token ids), or a token file (.pt, .npy)."""
    nsamples: int = option(128, range=POSITIVE)
    """Number of calibration sequences."""
    seqlen: Any = 2048
    """Tokens per calibration sequence: a positive integer, or model: the model's maximum context (Wanda's
    protocol), resolved when the run is planned."""
    seed: int = 0
    """Seed of the sampling (which documents and windows)."""
    batch_size: int = option(1, range=POSITIVE)
    """Sequences per block forward; 1 reproduces the references' statistics bit for bit."""
    bos: str = option("stream", choices=BOS_MODES)
    """BOS token: stream (the references'), window (before every sample) or none (data/bos.py)."""

    def __post_init__(self):
        _positive("calibration", nsamples=self.nsamples, batch_size=self.batch_size)
        _seqlen("calibration", self.seqlen)
        _bos_mode("calibration", self.bos, self.seqlen)


@dataclass
class PerplexityConfig:
    """Perplexity evaluation by the references' protocol (docs/methods.md §6)."""

    datasets: List[str] = field(default_factory=lambda: ["wikitext2"])
    """Evaluation sets: wikitext2, c4, random, or token files (.pt, .npy); empty: no perplexity."""
    seqlen: Any = 2048
    """Tokens per evaluation window: a positive integer, or model: the model's maximum context (Wanda's
    protocol), resolved when the run is planned."""
    batch_size: int = option(1, range=POSITIVE)
    """Windows per forward pass."""
    max_windows: Optional[int] = option(None, range=POSITIVE)
    """Evaluate only the first this many windows; null: every window (the papers' protocol)."""
    cache_dense: bool = True
    """Reuse the dense perplexity of an identical earlier evaluation (paths.cache)."""
    bos: str = option("stream", choices=BOS_MODES)
    """BOS token: stream (the references'), window (before every window) or none (data/bos.py)."""

    def __post_init__(self):
        _positive("eval.perplexity", batch_size=self.batch_size, max_windows=self.max_windows)
        _seqlen("eval.perplexity", self.seqlen)
        _bos_mode("eval.perplexity", self.bos, self.seqlen)


@dataclass
class LocalTaskConfig:
    """An lm-eval task read from local files: lm-eval's prompt and metrics, symprune's data location."""

    task: Optional[str] = None
    """The lm-eval task whose definition is reused; null: the entry's own name."""
    dataset_path: str = "json"
    """The `datasets` builder that reads the files: json (also JSON lines), parquet, csv, text."""
    data_files: Dict[str, str] = field(default_factory=dict)
    """Split (train, validation, test) → file; relative files are looked up under paths.assets."""
    layout: Optional[str] = option(None, choices="symprune.evaluate.layouts:LAYOUTS")
    """A converter of the files' fields to the task's (symprune/evaluate/layouts.py); null: none."""

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
    """Zero-shot accuracy with lm-evaluation-harness on the model in memory."""

    tasks: List[str] = field(default_factory=list)
    """lm-eval task names (not groups or tags); empty: no zero-shot evaluation."""
    # Untyped here (checked in __post_init__) because OmegaConf cannot add entries to a dict of dataclasses
    # from the command line.
    local: Dict[str, Any] = field(default_factory=dict)
    """Tasks read from local files: task name → the fields of eval.zeroshot.local.<task> below."""
    include_path: List[str] = field(default_factory=list)
    """Extra directories of lm-eval task YAMLs (your own task definitions)."""
    limit: Optional[int] = option(None, range=POSITIVE)
    """Examples per task, the first ones of each set; null: all."""
    num_fewshot: int = option(0, range=NON_NEGATIVE)
    """Few-shot examples per prompt (a local task needs a train file for them)."""
    batch_size: Any = 8
    """A positive integer, or auto (lm-eval's search for the largest batch that fits)."""
    dense: bool = True
    """Evaluate the dense model (once: cached, see cache_dense)."""
    pruned: bool = True
    """Evaluate the pruned model."""
    cache_dense: bool = True
    """Reuse the dense result of an identical earlier evaluation (paths.cache)."""

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
    """What is evaluated before and after pruning (conf/eval/)."""

    dense: bool = True
    """Also evaluate the model's perplexity before pruning."""
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    """Perplexity evaluation."""
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    """Zero-shot evaluation."""


@dataclass
class LoggerConfig:
    """W&B settings. ``None`` leaves a setting to W&B's environment (WANDB_MODE, WANDB_PROJECT,
    WANDB_ENTITY, WANDB_DIR) and, where that is unset too, to symprune's default (loggers.py)."""

    backend: str = option("wandb", choices=LOGGER_BACKENDS)
    """Experiment tracking backend; none: only the run record."""
    mode: Optional[str] = option(None, choices=WANDB_MODES)
    """W&B mode; null: WANDB_MODE, else offline."""
    project: Optional[str] = None
    """W&B project; null: WANDB_PROJECT, else symprune."""
    entity: Optional[str] = None
    """W&B entity; null: WANDB_ENTITY, else W&B's default."""
    dir: Optional[str] = None
    """Where W&B writes its files; null: WANDB_DIR, else the run directory."""
    group: Optional[str] = None
    """W&B group; null: one group per multirun sweep."""
    tags: List[str] = field(default_factory=list)
    """Extra W&B tags (the experiment's name is always one)."""

    def __post_init__(self):
        if self.backend not in LOGGER_BACKENDS:
            raise ConfigError(f"unknown logger backend '{self.backend}'; valid: {', '.join(LOGGER_BACKENDS)}")
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise ConfigError(f"unknown W&B mode '{self.mode}'; valid modes: {', '.join(WANDB_MODES)}")


@dataclass
class PlacementConfig:
    """Where weights and calibration activations live while the model is pruned and evaluated (conf/placement/)."""

    offload_blocks: bool = False
    """Blocks wait on the CPU and visit the compute device one at a time."""
    activations: str = option("compute", choices=ACTIVATION_HOMES)
    """Calibration activations: compute (the device), cpu, or disk (memory-mapped files)."""
    disk_dir: Optional[str] = None
    """Where disk activations go; null: the system's temporary directory."""
    device_map: Optional[str] = None
    """accelerate's device_map at load (auto, balanced, balanced_low_0, sequential): blocks run where they live."""

    def __post_init__(self):
        if self.activations not in ACTIVATION_HOMES:
            raise ConfigError(f"unknown placement.activations '{self.activations}'; valid: {', '.join(ACTIVATION_HOMES)}")
        if self.device_map is not None and self.offload_blocks:
            raise ConfigError("placement.device_map and placement.offload_blocks exclude each other: pick one")


@dataclass
class PathsConfig:
    """Every filesystem location symprune reads, writes or reuses (conf/paths/)."""

    assets: Optional[str] = None
    """Offline assets directory (default: $SYMPRUNE_ASSETS); set: data are read from files there."""
    output_dir: str = "outputs"
    """Where symprune writes: the run, sweep and experiment directories and the cache below are in it by default."""
    runs: str = "${paths.output_dir}/runs"
    """Single runs, one directory each (hydra.run.dir: runs/<date>/<time>)."""
    multirun: str = "${paths.output_dir}/multirun"
    """Ad hoc sweeps, one directory each (hydra.sweep.dir: multirun/sweep-<hash of the sweep's overrides>)."""
    experiments: str = "${paths.output_dir}/experiments"
    """Experiment sweeps, one directory each (experiments/<experiment>), and what the CPU protocol reuses."""
    cache: Optional[str] = "${paths.output_dir}/cache"
    """Results worth reusing across runs (dequantised GGUF models, dense results, AlphaPruning's spectra); null: no
    cache."""


@dataclass
class RunConfig:
    """One run: the options of every config group and the run's own switches (conf/config.yaml)."""

    model: ModelConfig = MISSING
    """The model (conf/model/)."""
    calibration: CalibrationConfig = MISSING
    """The calibration samples (conf/calibration/)."""
    score: Any = MISSING
    """The score: a registered score and its parameters (conf/score/)."""
    sparsity: Any = MISSING
    """The sparsity pattern: a registered pattern and its parameters (conf/sparsity/)."""
    refine: Any = MISSING
    """The refinement of the first mask: a registered refinement and its parameters (conf/refine/)."""
    allocation: Any = field(default_factory=lambda: {"name": "uniform"})
    """How the ratio is spread over the pruned matrices: a registered allocation and its parameters
    (conf/allocation/, symprune/prune/allocation/)."""
    targets: Optional[List[str]] = None
    """Regular expressions over the blocks' matrix names (prune/targets.py); null: every matrix but the routers."""
    ignore: List[str] = field(default_factory=list)
    """Regular expressions of matrix names left dense."""
    eval: EvalConfig = MISSING
    """The evaluation (conf/eval/)."""
    logger: LoggerConfig = MISSING
    """Experiment tracking (conf/logger/)."""
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    """Where weights and activations live (conf/placement/)."""
    paths: PathsConfig = field(default_factory=PathsConfig)
    """Filesystem locations (conf/paths/)."""
    save_model: Optional[str] = None
    """Directory to save the pruned model to (save_pretrained and the tokenizer); must be new or empty."""
    save_semi_structured: bool = False
    """With 2:4 masks and CUDA: also export PyTorch's semi-structured format."""
    save_masks: bool = True
    """Write masks.safetensors (every pruned layer's zeros) beside results.json."""
    mask_from: Optional[str] = None
    """A run directory or mask file: apply its masks instead of the pattern's."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, cuda:N."""
    progress: bool = True
    """Show progress bars."""
    resume: bool = True
    """Multirun: skip jobs whose config already has a run record in the sweep directory."""
    continue_on_error: bool = False
    """Multirun: run the valid jobs of a sweep that has invalid ones, and report those at the end."""
    reuse_from: List[str] = field(default_factory=list)
    """Multirun: directories of earlier sweeps whose records of the same config are reused."""
    reuse_accept_env: bool = False
    """Multirun: reuse (resume, reuse_from) a record of the same identity made with other library versions or
    code."""
    allow_dirty: bool = False
    """Experiment sweeps on a checkout whose symprune/, conf/ or hydra_plugins/ differ from its commit."""


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
