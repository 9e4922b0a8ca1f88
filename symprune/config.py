"""Structured configs: the schema Hydra checks every composed run config against.

The config groups under ``conf/`` fill these dataclasses; Hydra rejects wrong
types and unknown keys while composing, and ``settings()`` then runs the range
checks (``__post_init__``). Score, sparsity and refinement nodes are checked by
their registries (``symprune.registry``), since each name has its own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from symprune.registry import ConfigError

LOGGER_BACKENDS = ("wandb", "none")
WANDB_MODES = ("online", "offline", "disabled")


def _positive(owner: str, **values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ConfigError(f"{owner}.{key}={value} must be a positive integer")


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: Optional[str] = None  # hub id or local directory
    package: Optional[str] = None  # or: an installed Python package whose folder holds the files
    gguf_file: Optional[str] = None  # a GGUF file inside that directory / package / hub repo
    dtype: str = "float32"
    revision: Optional[str] = None
    trust_remote_code: bool = False


@dataclass
class CalibrationConfig:
    name: str = MISSING  # a dataset of symprune.data.DATASETS
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 1  # sequences per block forward; 1 reproduces the references bit for bit

    def __post_init__(self):
        _positive("calibration", nsamples=self.nsamples, seqlen=self.seqlen, batch_size=self.batch_size)


@dataclass
class PerplexityConfig:
    datasets: List[str] = field(default_factory=lambda: ["wikitext2"])
    seqlen: int = 2048
    batch_size: int = 1
    max_windows: Optional[int] = None  # None: every window (the papers' protocol)

    def __post_init__(self):
        _positive("eval.perplexity", seqlen=self.seqlen, batch_size=self.batch_size, max_windows=self.max_windows)


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
    backend: str = "wandb"
    mode: str = "offline"
    project: str = "symprune"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: one group per multirun sweep
    tags: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.backend not in LOGGER_BACKENDS:
            raise ConfigError(f"unknown logger backend '{self.backend}'; valid: {', '.join(LOGGER_BACKENDS)}")
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"unknown W&B mode '{self.mode}'; valid modes: {', '.join(WANDB_MODES)}")


@dataclass
class PlacementConfig:
    offload_blocks: bool = False  # blocks wait on the CPU and visit the compute device one at a time
    activations: str = "compute"  # calibration activations: compute (device), cpu, or disk (memory-mapped)
    disk_dir: Optional[str] = None  # where disk activations go (default: the system temp directory)
    device_map: Optional[str] = None  # accelerate's device_map at load ("auto", "balanced", ...): blocks run where they live

    def __post_init__(self):
        from symprune.placement import ACTIVATION_HOMES

        if self.activations not in ACTIVATION_HOMES:
            raise ConfigError(f"unknown placement.activations '{self.activations}'; valid: {', '.join(ACTIVATION_HOMES)}")
        if self.device_map is not None and self.offload_blocks:
            raise ConfigError("placement.device_map and placement.offload_blocks exclude each other: pick one")


@dataclass
class PathsConfig:
    assets: Optional[str] = None  # offline assets directory; set: data are read from files there
    cache: Optional[str] = "outputs/cache"  # results worth reusing across runs (dequantised GGUF models, dense zero-shot scores)


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    calibration: CalibrationConfig = MISSING
    score: Any = MISSING
    sparsity: Any = MISSING
    refine: Any = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    save_model: Optional[str] = None  # directory to save the pruned model to (save_pretrained + tokenizer)
    save_semi_structured: bool = False  # with 2:4 masks and CUDA: also export PyTorch's semi-structured format
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    progress: bool = True
    resume: bool = True  # multirun: skip jobs whose config already has a run record in the sweep directory
    reuse_from: List[str] = field(default_factory=list)  # multirun: earlier sweeps whose records of the same config are reused


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def settings(cfg: DictConfig) -> RunConfig:
    """The composed config as dataclasses, with every range check run."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else None
        raise (cause or ConfigError(str(error))) from None
