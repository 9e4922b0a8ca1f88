"""One job of the ``symprune`` command: plan, decide whether a sweep already has its result, run, record."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from symprune.files import check_writable
from symprune.model.masks import MASKS_NAME
from symprune.provenance import environment, git_state, software_versions
from symprune.run.axes import ablation_axes
from symprune.run.claims import claim
from symprune.run.loggers import make_logger
from symprune.run.plan import plan_run
from symprune.run.record import RunRecord, check_no_other_record
from symprune.run.resume import reusable_record, reused_record
from symprune.run.runner import execute
from symprune.run.signals import Interrupted
from symprune.run.sweep import read_sweep

log = logging.getLogger("symprune")


class SaveFailed(RuntimeError):
    """Saving the pruned model failed after the run's results were recorded."""


def execute_job(cfg: DictConfig, hydra_cfg, sweep_dir: str | None) -> dict[str, Any]:
    """Run one job (``sweep_dir``: the multirun's directory, None for a single run); returns its outcome."""
    check_writable(Path(hydra_cfg.runtime.output_dir), "the run directory")
    plan = plan_run(cfg)
    group = None
    if sweep_dir is not None:
        info = read_sweep(sweep_dir)
        group = info.group(sweep_dir) if info else Path(sweep_dir).name
    logger_settings = plan.settings.logger
    name = f"{group}/{hydra_cfg.job.num}" if group else Path(hydra_cfg.runtime.output_dir).name
    job = JobRecord(
        config=OmegaConf.to_container(plan.config, resolve=True), choices=dict(hydra_cfg.runtime.choices),
        overrides=list(hydra_cfg.overrides.task), config_hash=plan.config_hash, identity=plan.identity,
        logger={"backend": logger_settings.backend, "group": logger_settings.group or group, "name": name},
    )
    run_dir = Path(hydra_cfg.runtime.output_dir)
    check_no_other_record(run_dir, job.config_hash)
    if sweep_dir is not None and not run_dir.name.endswith(job.config_hash[:12]):
        log.warning("this job's identity (%s: numerics %s) is not the one its sweep planned for %s: the job computes "
                    "with another thread count or device than the sweep's process (run parallel sweeps with "
                    "OMP_NUM_THREADS set)", job.config_hash, plan.identity["numerics"], run_dir.name)
    if sweep_dir is None or not plan.settings.resume:
        return _run(plan, job, hydra_cfg)
    found = reusable_record(sweep_dir, plan.settings.reuse_from, job.config_hash, software_versions(),
                            plan.settings.reuse_accept_env)
    if found is not None and found.in_sweep:
        return _skipped("skipped", f"this config's run record exists: {found.path}")
    if found is not None:
        path = reused_record(found.path, job.record_fields(), run_dir).write(run_dir)
        return _skipped("reused", f"the run record of the same config at {found.path} (copied to {path})")
    with claim(sweep_dir, job.config_hash) as claimed:
        if not claimed:
            return _skipped("skipped", "another job of this sweep is running the same config")
        return _run(plan, job, hydra_cfg)


@dataclass
class JobRecord:
    """What the job knows of its record before the run: its config, identity and tracking."""

    config: dict[str, Any]
    choices: dict[str, str]
    overrides: list[str]
    config_hash: str
    identity: dict[str, Any]
    logger: dict[str, Any]

    def record_fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _skipped(status: str, message: str) -> dict[str, Any]:
    log.info("%s: %s", status, message)
    return {"status": status, "message": message}


def _run(plan, job: JobRecord, hydra_cfg) -> dict[str, Any]:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    tracked = {**ablation_axes(job.choices, plan.method.target_sparsity), "config": job.config,
               "method": plan.method.describe(), "choices": job.choices, "overrides": job.overrides,
               "config_hash": job.config_hash}
    logger = make_logger(plan.settings.logger, tracked, str(run_dir), job.logger["name"], job.logger["group"],
                         job.choices.get("experiment"))
    try:
        results = execute(plan, logger)
        masks_file = results.masks.save(run_dir / MASKS_NAME).name if plan.settings.save_masks else None
    except Interrupted as interruption:
        logger.finish(status="interrupted", reason=interruption.signal_name)
        raise
    except BaseException as error:
        logger.finish(status="failed", reason=f"{type(error).__name__}: {error}")
        raise
    record = RunRecord(
        **job.record_fields(), method=plan.method.describe(), model=results.model, data=results.data,
        metrics=results.metrics, layers=results.layers, timings=results.timings, started=results.started,
        finished=results.finished, versions=software_versions(), git=git_state(),
        environment=environment(plan.device, plan.settings.model.dtype),
        mask_sha256=results.masks.sha256(), masks_file=masks_file, caches=results.caches,
        saved_model=results.saved_model, save_error=results.save_error,
    )
    path = record.write(run_dir)
    log.info("run record: %s (mask_sha256 %s)", path, record.mask_sha256)
    if record.save_error:
        logger.finish(status="failed", reason=record.save_error)
        raise SaveFailed(f"saving the pruned model failed ({record.save_error}); the results are in {path}")
    logger.finish()
    return {"status": "completed", "message": str(path)}
