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
from symprune.resume import claim, config_hash, find_record, reused_record
from symprune.runner import base_record, execute, plan_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("symprune")


def run_job(cfg: DictConfig) -> dict | None:
    """One Hydra job: plan (all checks), then run; ``results.json`` only once everything succeeded.

    In a multirun with ``resume=true`` a job whose config already has a record in the sweep
    directory is skipped, and so is one whose config another live job of the sweep is running.
    A job whose config has a record in one of the ``reuse_from`` directories (an earlier sweep)
    gets a copy of that record, marked ``reused_from``, instead of running again.
    """
    hydra_cfg = HydraConfig.get()
    plan = plan_run(cfg)
    record = base_record(plan, dict(hydra_cfg.runtime.choices))
    record["config_hash"] = config_hash(record["config"], plan.method.describe())
    if hydra_cfg.mode != RunMode.MULTIRUN or not plan.settings.resume:
        return _run(plan, record, hydra_cfg, group=None)
    sweep_dir = hydra_cfg.sweep.dir
    existing = find_record(sweep_dir, record["config_hash"])
    if existing is not None:
        log.info("skipped: this config's run record exists: %s", existing)
        return None
    for directory in plan.settings.reuse_from:
        earlier = find_record(directory, record["config_hash"])
        if earlier is not None:
            path = write_record(hydra_cfg.runtime.output_dir, reused_record(earlier, record, list(hydra_cfg.overrides.task)))
            log.info("reused: the run record of the same config at %s (copied to %s)", earlier, path)
            return None
    with claim(sweep_dir, record["config_hash"]) as claimed:
        if not claimed:
            log.info("skipped: another job of this sweep is running the same config")
            return None
        return _run(plan, record, hydra_cfg, group=Path(sweep_dir).name)


def _run(plan, record: dict, hydra_cfg, group: str | None) -> dict:
    run_dir = hydra_cfg.runtime.output_dir
    name = f"{group}/{hydra_cfg.job.num}" if group else Path(run_dir).name
    record["overrides"] = list(hydra_cfg.overrides.task)
    logger_settings = plan.settings.logger
    record["logger"] = {"backend": logger_settings.backend, "group": logger_settings.group or group, "name": name}
    tracked = {**record["config"], **{key: record[key] for key in ("choices", "overrides", "config_hash")}}
    logger = make_logger(logger_settings, tracked, run_dir, name, group)
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
