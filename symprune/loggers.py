"""Experiment tracking: Weights & Biases (online or offline), or nothing.

The runner talks to a ``RunLogger``; only this module imports wandb.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from symprune.config import LoggerConfig


class RunLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float]) -> None: ...

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def finish(self, failed: bool = False) -> None: ...


class NoLogger:
    """``logger=none``: tracking switched off."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


class WandbLogger:
    def __init__(self, settings: LoggerConfig, config: dict, run_dir: str, name: str, group: str | None):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group or group,
            name=name,
            tags=list(settings.tags),
            mode=settings.mode,
            dir=run_dir,
            config=config,
            reinit="finish_previous",
        )

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.run.log(metrics)
        self.run.summary.update(metrics)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])})

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def make_logger(settings: LoggerConfig, config: dict, run_dir: str, name: str, group: str | None) -> RunLogger:
    if settings.backend == "none":
        return NoLogger()
    return WandbLogger(settings, config, run_dir, name, group)


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
