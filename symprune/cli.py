"""The Hydra entry point: ``symprune`` (console script) and ``python -m symprune``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import symprune.config  # noqa: F401  (registers the run schema in Hydra's ConfigStore)
from symprune.loggers import make_logger
from symprune.record import write_record
from symprune.registry import ConfigError
from symprune.runner import base_record, execute, plan_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("symprune")


def run_job(cfg: DictConfig) -> dict:
    """One Hydra job: plan (all checks), then run; ``results.json`` only once everything succeeded."""
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    plan = plan_run(cfg)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    name = f"{Path(hydra_cfg.sweep.dir).name}/{hydra_cfg.job.num}" if multirun else Path(run_dir).name
    record = base_record(plan, dict(hydra_cfg.runtime.choices))
    record["overrides"] = list(hydra_cfg.overrides.task)
    logger_settings = plan.settings.logger
    record["logger"] = {"backend": logger_settings.backend, "group": logger_settings.group or group, "name": name}
    logger = make_logger(logger_settings, record["config"], run_dir, name, group)
    try:
        record |= execute(plan, logger)
    except BaseException:
        logger.finish(failed=True)
        raise
    path = write_record(run_dir, record)
    logger.finish()
    log.info("run record: %s", path)
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_job(cfg)
    except ConfigError as error:
        log.error("configuration error: %s", error)
        sys.exit(2)


def main() -> None:
    if not CONFIG_DIR.is_dir():
        sys.exit(f"symprune: config directory {CONFIG_DIR} not found; install symprune from its checkout "
                 f"with 'pip install -e .' (see README)")
    _hydra_main()
