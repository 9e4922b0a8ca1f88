"""Multirun sweeps that never lose work.

- The sweep directory is derived from the sweep's own overrides (``outputs/multirun/sweep-<hash>``, under
  ``paths.multirun``), so relaunching the same command finds the records of the jobs that finished and skips them;
  an experiment's is ``outputs/experiments/<experiment>`` (``paths.experiments``).
- Each job's directory is named by what it varies and its identity (``score-ria_sparsity-nm_2_4-<hash>``),
  so one directory only ever holds one config: a relaunch with values added, removed or reordered
  leaves every earlier record where it was.
- An ``experiment=`` sweep refuses a checkout whose code or configs differ from its commit
  (``allow_dirty=true`` runs it anyway; its records say so).
- Before the first job runs, every job's config is composed and planned (the same checks as a
  single run, no weights loaded): a sweep with a bad job stops naming each one, or, with
  ``continue_on_error=true``, runs the others and reports the bad ones at the end.
- A job that fails does not stop the sweep; the end of the sweep lists what ran, what was skipped
  or reused, what failed, and exits non-zero if anything failed.

The Hydra sweeper plugin (``hydra_plugins/symprune_sweeper``) calls ``run_sweep``.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict, read_write

from symprune.errors import ConfigError
from symprune.files import write_json_atomic

log = logging.getLogger("symprune")
SWEEP_FILE = "sweep.json"


def sweep_name(overrides: Sequence[str]) -> str:
    """A sweep's directory name: a hash of its overrides, in any order."""
    return "sweep-" + hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class SweepInfo:
    """What ``sweep.json`` says about a sweep directory: the overrides that define it and when it started."""

    overrides: list[str]
    started: str  # ISO time of the first launch (a relaunch with resume=false starts anew)

    def group(self, directory: str | Path) -> str:
        """The W&B group of the sweep's jobs: unique per sweep and dated, the same for every relaunch."""
        stamp = datetime.datetime.fromisoformat(self.started).strftime("%Y%m%d-%H%M%S")
        return f"{Path(directory).name}-{stamp}"


def read_sweep(directory: str | Path) -> SweepInfo | None:
    path = Path(directory) / SWEEP_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return SweepInfo(data["overrides"], data["started"])


def open_sweep(directory: str | Path, overrides: Sequence[str], resume: bool) -> SweepInfo:
    """The sweep's info: the existing one when resuming, else a new one (written to ``sweep.json``)."""
    existing = read_sweep(directory)
    if resume and existing is not None:
        return existing
    info = SweepInfo(list(overrides), datetime.datetime.now().isoformat(timespec="seconds"))
    write_json_atomic(Path(directory) / SWEEP_FILE, {"overrides": info.overrides, "started": info.started})
    return info


def task_config(job_config: DictConfig) -> DictConfig:
    """A composed job config without Hydra's own node: what the task function receives."""
    task = copy.deepcopy(job_config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


@dataclass(frozen=True)
class BadJob:
    number: int
    overrides: list[str]  # the job's values of the swept keys
    error: str

    def describe(self) -> str:
        return f"job #{self.number} ({' '.join(self.overrides)}): {self.error}"


def swept(jobs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each job's overrides of the keys the sweep varies (what tells its jobs apart), in the jobs' order."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            values.setdefault(override.split("=", 1)[0], set()).add(override)
    varying = {key for key, seen in values.items() if len(seen) > 1}
    return [[override for override in job if override.split("=", 1)[0] in varying] for job in jobs]


def check_jobs(jobs: Sequence[Sequence[str]], compose: Callable[[list[str]], DictConfig],
               plan: Callable[[DictConfig], Any], check: Callable[[Any], None] = lambda planned: None,
               ) -> tuple[list[BadJob], dict[int, Any]]:
    """Compose and plan every job, then ``check`` its plan; the jobs whose config, plan or check fails, with the
    reason, and the plans of the others by job number."""
    bad, plans = [], {}
    for number, (overrides, label) in enumerate(zip(jobs, swept(jobs))):
        try:
            plans[number] = plan(task_config(compose(list(overrides))))
            check(plans[number])
        except (ConfigError, HydraException) as error:
            plans.pop(number, None)
            reason = str(error).splitlines()[0] if isinstance(error, HydraException) else str(error)
            bad.append(BadJob(number, label, reason))
    return bad, plans


def job_directory(label: Sequence[str], digest: str) -> str:
    """A job's directory name in its sweep: its values of the swept keys, readable, then 12 hex digits of its
    identity hash (``score-ria_sparsity-nm_2_4-0123456789ab``)."""
    readable = "_".join(override.replace("=", "-", 1) for override in label)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", readable).strip("_.")[:96]
    return f"{readable}-{digest[:12]}" if readable else digest[:12]


def experiment_sweep_dir(experiment: str) -> str:
    """Where ``symprune -m experiment=NAME`` writes: the experiment's ``hydra.sweep.dir`` as the sweep resolves it
    (``paths``, conf/local/default.yaml included)."""
    return str(_composed([f"experiment={experiment}"]).hydra.sweep.dir)


def configured_path(name: str) -> str:
    """``paths.<name>`` as a run on this machine resolves it (conf/local/default.yaml included), e.g. where
    experiment sweeps write (``experiments``)."""
    return str(_composed([]).paths[name])


def _composed(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from symprune.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def is_experiment_sweep(overrides: Sequence[str]) -> bool:
    return any(override.split("=", 1)[0].lstrip("+~") == "experiment" for override in overrides)


def check_clean_checkout(state: dict[str, Any]) -> None:
    """An experiment sweep's records must name one code state: refuse a checkout whose code or configs differ
    from its commit."""
    if state.get("dirty"):
        raise ConfigError(
            f"symprune/, conf/ or hydra_plugins/ differ from commit {str(state.get('commit'))[:12]} (diff "
            f"{str(state.get('diff_sha256'))[:12]}): an experiment sweep's records would not name the code that made "
            "them. Commit the changes, or add allow_dirty=true (the records are then marked modified, with the diff's "
            "hash)")


def contiguous_runs(numbers: Sequence[int], max_size: int | None) -> list[list[int]]:
    """Job numbers in launch batches of consecutive numbers (each job keeps its number, hence its subdirectory)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and runs[-1][-1] == number - 1 and (max_size is None or len(runs[-1]) < max_size):
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


@dataclass
class SweepOutcome:
    """What became of every job, for the summary at the end."""

    labels: list[list[str]]  # each job's values of the swept keys
    invalid: list[BadJob]
    ran: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # job, why (its record exists, reused, ...)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def collect(self, number: int, result: JobReturn) -> None:
        if result.status == JobStatus.FAILED:
            error = result._return_value  # the job's exception (reading return_value would raise it)
            self.failed.append((number, f"{type(error).__name__}: {error}"))
            return
        outcome = result.return_value or {}
        if outcome.get("status") == "completed":
            self.ran.append(number)
        else:
            self.skipped.append((number, outcome.get("message", "skipped")))

    def summary(self, directory: str | Path, total: int) -> str:
        lines = [
            f"sweep {directory}: {total} jobs: {len(self.ran)} ran, {len(self.skipped)} skipped or reused, "
            f"{len(self.failed)} failed, {len(self.invalid)} invalid"
        ]
        lines += [f"  skipped {self._job(number)}: {why}" for number, why in self.skipped]
        lines += [f"  FAILED {self._job(number)}: {why}" for number, why in self.failed]
        lines += [f"  INVALID {bad.describe()}" for bad in self.invalid]
        return "\n".join(lines)

    def _job(self, number: int) -> str:
        return f"job #{number} ({' '.join(self.labels[number])})"

    @property
    def ok(self) -> bool:
        return not (self.failed or self.invalid)
