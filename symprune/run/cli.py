"""The Hydra entry point: ``symprune`` (console script) and ``python -m symprune``."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from symprune.config import CONFIG_DIR  # importing it registers the run schema in Hydra's ConfigStore
from symprune.errors import ConfigError
from symprune.run.signals import Interrupted, interrupts_as_exceptions

log = logging.getLogger("symprune")


def run_job(cfg: DictConfig) -> dict:
    """One Hydra job: plan (all checks), then run; ``results.json`` only once the run's work is done.

    In a multirun with ``resume=true`` a job whose config already has a record in the sweep
    directory is skipped, and so is one whose config another live job of the sweep is running.
    A job whose config has a record in one of the ``reuse_from`` directories (an earlier sweep)
    gets a copy of that record, marked ``reused_from``, instead of running again. Returns what
    became of the job (``status``: completed, skipped or reused), for the sweep's summary.
    """
    # The run layer imports torch, transformers and (for zero-shot tasks) lm-eval: seconds that a
    # mistyped option or ``--help``, reported by Hydra before this function runs, need not pay.
    from symprune.run.job import execute_job

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return execute_job(cfg, hydra_cfg, sweep_dir=hydra_cfg.sweep.dir if multirun else None)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with interrupts_as_exceptions():
            return run_job(cfg)
    except ConfigError as error:
        log.error("configuration error: %s", error)
        if multirun:
            raise  # the sweep records the failed job and goes on with the next one
        sys.exit(2)
    except Interrupted as interruption:
        log.error("interrupted by %s; no run record was written", interruption.signal_name)
        sys.exit(128 + interruption.signal_number)
    except Exception:
        log.exception("the run failed")
        raise


def main() -> None:
    if not CONFIG_DIR.is_dir():
        sys.exit(f"symprune: config directory {CONFIG_DIR} not found; install symprune from its checkout "
                 f"with 'pip install -e .' (see README)")
    _hydra_main()
