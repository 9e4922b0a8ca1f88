"""W&B settings: a value set in the config wins, an unset one follows W&B's environment, then symprune's default."""

import os
from pathlib import Path

import pytest

from symprune.config import LoggerConfig
from symprune.run.loggers import ENVIRONMENT, WandbLogger, wandb_settings


@pytest.fixture
def clean_environment(monkeypatch):
    """No W&B variable set; W&B's process-wide state (which caches the environment) reset afterwards."""
    import wandb

    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield monkeypatch
    wandb.teardown()


def test_defaults_without_environment(clean_environment, tmp_path):
    assert wandb_settings(LoggerConfig(), str(tmp_path)) == {"mode": "offline", "project": "symprune", "dir": str(tmp_path)}


def test_environment_is_left_to_wandb(clean_environment, tmp_path):
    for variable, value in (("WANDB_MODE", "disabled"), ("WANDB_PROJECT", "p"), ("WANDB_ENTITY", "e"), ("WANDB_DIR", "/d")):
        clean_environment.setenv(variable, value)
    assert wandb_settings(LoggerConfig(), str(tmp_path)) == {}


def test_explicit_config_overrides_environment(clean_environment, tmp_path):
    clean_environment.setenv("WANDB_MODE", "disabled")
    clean_environment.setenv("WANDB_PROJECT", "from-environment")
    chosen = wandb_settings(LoggerConfig(mode="offline", project="from-config"), str(tmp_path))
    assert chosen == {"mode": "offline", "project": "from-config", "dir": str(tmp_path)}


def init(tmp_path: Path, settings: LoggerConfig) -> WandbLogger:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return WandbLogger(settings, {"x": 1}, str(run_dir), name="test", group=None)


def test_wandb_mode_disabled_from_the_environment(clean_environment, tmp_path):
    clean_environment.setenv("WANDB_MODE", "disabled")
    logger = init(tmp_path, LoggerConfig())
    logger.log_metrics({"a": 1.0})
    logger.finish()
    assert logger.run.disabled
    assert not (tmp_path / "run" / "wandb").exists()


def test_offline_run_follows_project_and_dir_from_the_environment(clean_environment, tmp_path):
    clean_environment.setenv("WANDB_PROJECT", "project-from-environment")
    clean_environment.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    logger = init(tmp_path, LoggerConfig())
    assert logger.run.project == "project-from-environment" and logger.run.settings.mode == "offline"
    logger.finish()
    assert list((tmp_path / "wandb-home" / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "run" / "wandb").exists()


def test_explicit_project_wins_over_the_environment(clean_environment, tmp_path):
    clean_environment.setenv("WANDB_PROJECT", "project-from-environment")
    logger = init(tmp_path, LoggerConfig(project="project-from-config"))
    assert logger.run.project == "project-from-config"
    logger.finish()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert os.environ["WANDB_PROJECT"] == "project-from-environment"
