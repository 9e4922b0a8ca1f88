"""Zero-shot accuracy with lm-evaluation-harness on the model in memory (no save and reload).

``plan_suite`` checks a zero-shot config against lm-eval's task index (task names,
local files, layouts) without reading any data. ``ZeroShotSuite.evaluate`` wraps
the model in lm-eval's ``HFLM`` and runs ``simple_evaluate``; the scores are
lm-eval's own (``acc``, ``acc_norm`` and their standard errors), only collected.

A local task is lm-eval's registered definition (its YAML, with includes and
``!function`` references resolved by lm-eval's own loader) with the data source
replaced: ``dataset_path`` (a ``datasets`` builder such as json or parquet),
``dataset_kwargs.data_files`` (absolute paths, resolved against ``paths.assets``
at run time) and the splits present; optionally a layout converter
(``symprune.evaluate.layouts``) as ``process_docs``. The resulting config dict
is handed to lm-eval as a task spec, so nothing is written to disk.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from symprune.config import LocalTaskConfig, ZeroShotConfig
from symprune.errors import ConfigError
from symprune.evaluate import layouts

METRICS = ("acc", "acc_norm")
SPLIT_KEYS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}


@functools.lru_cache(maxsize=4)
def task_manager(include_path: tuple[str, ...] = ()) -> TaskManager:
    """lm-eval's task index, built once per process (it scans thousands of YAML files)."""
    return TaskManager(include_path=list(include_path) or None)


@dataclass(frozen=True)
class LocalTask:
    """An lm-eval task definition (``base``) evaluated on local files."""

    name: str
    base: str
    dataset_path: str
    files: dict[str, Path]  # split (train/validation/test) -> file
    layout: str | None

    def spec(self, manager: TaskManager) -> dict[str, Any]:
        """The task config lm-eval builds the task from: the base definition with the data source replaced."""
        definition = load_yaml(manager.task_index[self.base].yaml_path)
        definition.update(
            task=self.name,
            dataset_path=self.dataset_path,
            dataset_name=None,
            dataset_kwargs={"data_files": {split: str(path) for split, path in self.files.items()}},
            **{key: split if split in self.files else None for split, key in SPLIT_KEYS.items()},
        )
        if self.layout:
            definition["process_docs"] = layouts.layout(self.layout)
        return definition

    def describe(self) -> str:
        files = ", ".join(f"{split} {path}" for split, path in self.files.items())
        converted = f", layout {self.layout}" if self.layout else ""
        return f"local {files} ({self.dataset_path}; lm-eval task '{self.base}'{converted})"

    def identity(self) -> dict[str, Any]:
        """Everything about the task that can change a score: definition, file contents, the layouts' code."""
        return {
            "base": self.base,
            "dataset_path": self.dataset_path,
            "files": {split: _sha256(path.read_bytes()) for split, path in self.files.items()},
            "layout": self.layout and [self.layout, _sha256(inspect.getsource(layouts).encode())],
        }


@dataclass(frozen=True)
class ZeroShotResult:
    scores: dict[str, dict[str, float]]  # task -> acc, acc_stderr, acc_norm, acc_norm_stderr (where it has them), samples
    mean: dict[str, float]  # acc over every task; acc_norm over the tasks that report it

    def as_metrics(self) -> dict[str, dict[str, float]]:
        return {**self.scores, "mean": self.mean}

    @classmethod
    def from_metrics(cls, metrics: dict[str, dict[str, float]]) -> ZeroShotResult:
        scores = dict(metrics)
        return cls(scores, scores.pop("mean"))


@dataclass(frozen=True)
class ZeroShotSuite:
    settings: ZeroShotConfig
    local: dict[str, LocalTask]  # the listed tasks that read local files

    @property
    def manager(self) -> TaskManager:
        return task_manager(tuple(self.settings.include_path))

    @property
    def tasks(self) -> list[str]:
        return list(self.settings.tasks)

    def specs(self) -> list[str | dict[str, Any]]:
        """What ``simple_evaluate`` gets: a registered task's name, or a local task's config."""
        return [self.local[name].spec(self.manager) if name in self.local else name for name in self.tasks]

    def load_data(self) -> dict[str, str]:
        """Build every task once, which reads its data, so that unreadable data stop the run before the
        model loads; returns where each task's data came from."""
        origins = {}
        for name, spec in zip(self.tasks, self.specs()):
            try:
                self.manager.load([spec])
            except Exception as error:  # datasets and lm-eval raise many types for unreadable data
                hint = "" if name in self.local else (
                    " Offline, read the data from local files: eval=zeroshot_offline or eval.zeroshot.local (docs/zeroshot.md)"
                )
                raise ConfigError(f"cannot load the data of zero-shot task '{name}' ({type(error).__name__}: {error}).{hint}") from None
            origins[name] = self.local[name].describe() if name in self.local else (
                f"hub {self.manager.task_index[name].cfg.get('dataset_path')} (lm-eval task '{name}')"
            )
        return origins

    def evaluate(self, model, tokenizer) -> ZeroShotResult:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.settings.batch_size)
        results = simple_evaluate(
            model=lm,
            tasks=self.specs(),
            num_fewshot=self.settings.num_fewshot,
            limit=self.settings.limit,
            task_manager=self.manager,
            log_samples=False,
        )
        return collect_scores(results, self.tasks)

    def identity(self) -> dict[str, Any]:
        """Everything about the evaluation that can change a score, but the model and the library versions:
        each task's definition (a registered task by its name and the SHA-256 of its YAML, a local one by its
        files' SHA-256 and layout), limit, few-shot count and batch size."""
        return {
            "tasks": {
                name: self.local[name].identity() if name in self.local else {
                    "task": name, "yaml_sha256": _sha256(Path(self.manager.task_index[name].yaml_path).read_bytes())
                }
                for name in self.tasks
            },
            "limit": self.settings.limit,
            "num_fewshot": self.settings.num_fewshot,
            "batch_size": self.settings.batch_size,
        }


def collect_scores(results: dict[str, Any], tasks: list[str]) -> ZeroShotResult:
    """acc and acc_norm (and their standard errors) of each task from ``simple_evaluate``'s results,
    and their means over tasks."""
    scores = {}
    for name in tasks:
        values = results["results"][name]
        scores[name] = {}
        for metric in METRICS:
            if f"{metric},none" in values:
                scores[name][metric] = values[f"{metric},none"]
                scores[name][f"{metric}_stderr"] = values[f"{metric}_stderr,none"]
        scores[name]["samples"] = results["n-samples"][name]["effective"]
    mean = {}
    for metric in METRICS:
        reported = [task[metric] for task in scores.values() if metric in task]
        if reported:
            mean[metric] = sum(reported) / len(reported)
    return ZeroShotResult(scores, mean)


# --- planning: every check before any data or weights load ----------------------------------


def plan_suite(settings: ZeroShotConfig, assets: str | None) -> ZeroShotSuite | None:
    """The zero-shot evaluation a config asks for (None: none), every name and file checked."""
    if not settings.tasks or not (settings.dense or settings.pruned):
        return None
    for directory in settings.include_path:
        if not Path(directory).is_dir():
            raise ConfigError(f"eval.zeroshot.include_path: task directory {directory} does not exist")
    manager = task_manager(tuple(settings.include_path))
    local = {}
    for name in settings.tasks:
        if name in settings.local:
            local[name] = _local_task(name, settings.local[name], settings.num_fewshot, manager, assets)
        else:
            _check_registered(name, manager, "eval.zeroshot.tasks")
    return ZeroShotSuite(settings, local)


def _check_registered(name: str, manager: TaskManager, where: str) -> None:
    if name in manager.all_subtasks:
        return
    if name in manager.all_groups or name in manager.all_tags:
        raise ConfigError(f"{where}: '{name}' is an lm-eval group or tag; list its tasks one by one")
    close = difflib.get_close_matches(name, manager.all_subtasks, n=3)
    suggestion = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"{where}: unknown lm-eval task '{name}'{suggestion} (lm-eval {lm_eval.__version__} knows "
        f"{len(manager.all_subtasks):,} tasks: `lm-eval ls tasks` lists them; eval.zeroshot.include_path adds "
        f"your own task YAML directories)"
    )


def _local_task(name: str, entry: LocalTaskConfig, num_fewshot: int, manager: TaskManager, assets: str | None) -> LocalTask:
    where = f"eval.zeroshot.local.{name}"
    base = entry.task or name
    _check_registered(base, manager, f"{where}.task")
    if not entry.data_files:
        raise ConfigError(f"{where}.data_files is empty; give at least one split's file, e.g. {{validation: FILE}}")
    unknown = sorted(set(entry.data_files) - set(SPLIT_KEYS))
    if unknown:
        raise ConfigError(f"{where}.data_files: unknown split {', '.join(unknown)}; valid splits: {', '.join(SPLIT_KEYS)}")
    if num_fewshot > 0 and "train" not in entry.data_files:
        raise ConfigError(
            f"eval.zeroshot.num_fewshot={num_fewshot} needs few-shot examples, but {where}.data_files has no "
            f"train file (drawing them from the evaluated split would leak the answers)"
        )
    if entry.layout:
        layouts.layout(entry.layout)
    files = {split: _locate(file, assets, f"{where}.data_files.{split}") for split, file in entry.data_files.items()}
    return LocalTask(name, base, entry.dataset_path, files, entry.layout)


def _locate(file: str, assets: str | None, where: str) -> Path:
    path = Path(file).expanduser()
    if not path.is_absolute():
        if not assets:
            raise ConfigError(
                f"{where}={file} is relative to the offline assets directory, which is not set "
                f"(SYMPRUNE_ASSETS or paths.assets)"
            )
        path = Path(assets).expanduser() / path
    if not path.is_file():
        raise ConfigError(f"{where}: local task file {path} does not exist")
    return path.resolve()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
