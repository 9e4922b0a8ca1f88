"""Experiment tracking: Weights & Biases (online or offline), or nothing.

The runner talks to a ``RunLogger``; only this module imports wandb.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

from symprune.config import LoggerConfig


class RunLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float]) -> None: ...

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def log_line(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str) -> None:
        """A table and its line plot of column ``y`` over column ``x``."""

    def finish(self, status: str = "completed", reason: str | None = None) -> None:
        """End the run; status completed, failed or interrupted (with the reason)."""


class NoLogger:
    """``logger=none``: tracking switched off."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        pass

    def log_line(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str) -> None:
        pass

    def finish(self, status: str = "completed", reason: str | None = None) -> None:
        pass


# What symprune uses for a W&B setting that neither the config nor W&B's environment sets.
# The default mode is offline: a run never needs an account; `wandb sync` uploads it later.
ENVIRONMENT = {"mode": "WANDB_MODE", "project": "WANDB_PROJECT", "entity": "WANDB_ENTITY", "dir": "WANDB_DIR"}


def wandb_settings(settings: LoggerConfig, run_dir: str) -> dict[str, str]:
    """The ``wandb.init`` arguments for mode, project, entity and dir: a value set in the config wins;
    an unset one is left to W&B, which reads its environment variable, or, when that is unset too,
    is symprune's default (offline, project "symprune", files in the run directory)."""
    defaults = {"mode": "offline", "project": "symprune", "entity": None, "dir": run_dir}
    chosen = {}
    for key, variable in ENVIRONMENT.items():
        value = getattr(settings, key)
        if value is None and not os.environ.get(variable):
            value = defaults[key]
        if value is not None:
            chosen[key] = value
    return chosen


class WandbLogger:
    """A W&B run; ``experiment`` (the experiment config's name) is its ``job_type`` and one of its tags."""

    def __init__(self, settings: LoggerConfig, config: dict, run_dir: str, name: str, group: str | None,
                 experiment: str | None = None):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            group=settings.group or group,
            name=name,
            job_type=experiment,
            tags=[*settings.tags, *([experiment] if experiment and experiment not in settings.tags else [])],
            config=config,
            reinit="finish_previous",
            **wandb_settings(settings, run_dir),
        )

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.run.log(metrics)
        self.run.summary.update(metrics)

    def _table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]):
        return self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.run.log({key: self._table(columns, rows)})

    def log_line(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], x: str, y: str) -> None:
        table = self._table(columns, rows)
        self.run.log({key: table, f"{key}_plot": self._wandb.plot.line(table, x, y, title=f"{y} by {x}")})

    def finish(self, status: str = "completed", reason: str | None = None) -> None:
        """A failed or interrupted run ends with a non-zero exit code, its status and reason in the summary
        and its status as a tag, so W&B's run table can filter on it."""
        if status != "completed":
            self.run.summary.update({"run_status": status, "run_status_reason": reason})
            self.run.tags = (*self.run.tags, status)
        self.run.finish(exit_code=0 if status == "completed" else 1)


def make_logger(settings: LoggerConfig, config: dict, run_dir: str, name: str, group: str | None,
                experiment: str | None = None) -> RunLogger:
    if settings.backend == "none":
        return NoLogger()
    return WandbLogger(settings, config, run_dir, name, group, experiment)


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metric dicts as W&B keys: {"a": {"b": 1}} → {"a/b": 1}."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat
