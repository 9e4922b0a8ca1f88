"""symprune's Hydra sweeper: Hydra's basic sweeper (cartesian products of comma-separated values) that
derives the sweep directory from the sweep's overrides, checks every job before the first one runs,
names each job's directory by its identity, keeps going when a job fails and reports every job at the
end (symprune/run/sweep.py).

Hydra imports every plugin module at start-up, even for ``--help``: this one imports symprune's run
layer only when a sweep actually starts.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger("symprune")
_current_sweep: List[str] = []  # the name of the sweep being launched, for the resolver below


def _sweep_name() -> str:
    """``${symprune_sweep:}``: the running sweep's name. Cached in the sweep's config (``use_cache``), and
    Hydra copies that cache into every job's config, so the sweep and its jobs agree on the directory."""
    return _current_sweep[-1] if _current_sweep else "sweep"


OmegaConf.register_new_resolver("symprune_sweep", _sweep_name, use_cache=True, replace=True)


@dataclass
class SymPruneSweeperConf:
    _target_: str = "hydra_plugins.symprune_sweeper.symprune_sweeper.SymPruneSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, Optional[str]]] = None  # a parameter set to null is not swept


ConfigStore.instance().store(group="hydra/sweeper", name="symprune", node=SymPruneSweeperConf, provider="symprune")


class SymPruneSweeper(BasicSweeper):
    def _parse_config(self) -> List[str]:
        """The swept parameters as overrides, but those set to null: a config that builds on an experiment drops
        one of its parameters that way (conf/protocol/cpu.yaml: the models)."""
        return [f"{key}={values}" for key, values in self.params.items() if values is not None]

    def sweep(self, arguments: List[str]) -> Any:
        from symprune.errors import ConfigError
        from symprune.provenance import git_state, software_versions
        from symprune.run.plan import plan_run
        from symprune.run.resume import reusable_record
        from symprune.run.sweep import (
            SweepOutcome,
            check_clean_checkout,
            check_jobs,
            contiguous_runs,
            is_experiment_sweep,
            job_directory,
            open_sweep,
            sweep_name,
            swept,
        )

        overrides = [*self._parse_config(), *arguments]
        _current_sweep.append(sweep_name(overrides))
        if is_experiment_sweep(overrides) and not self.config.get("allow_dirty", False):
            try:
                check_clean_checkout(git_state())
            except ConfigError as error:
                log.error("%s", error)
                sys.exit(2)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(overrides)
        jobs = [job for batch in self.split_arguments(parsed, None) for job in batch]
        directory = Path(str(self.config.hydra.sweep.dir))
        versions = software_versions()

        def compose(job: List[str]):
            return self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=job)

        found = {}  # config hash -> the record standing for it

        def check_reuse(plan) -> None:
            """A record of the job's identity made with other software is refused here, before any work."""
            if plan.settings.resume:
                found[plan.config_hash] = reusable_record(directory, plan.settings.reuse_from, plan.config_hash,
                                                          versions, plan.settings.reuse_accept_env)

        invalid, plans = check_jobs(jobs, compose, plan_run, check_reuse)
        labels = swept(jobs)
        jobs = [[*job, f"hydra.sweep.subdir={job_directory(labels[number], plans[number].config_hash)}"]
                if number in plans else job for number, job in enumerate(jobs)]
        continue_on_error = bool(self.config.get("continue_on_error", False))
        if invalid and not continue_on_error:
            for bad in invalid:
                log.error("invalid %s", bad.describe())
            log.error("%d of %d jobs are invalid; nothing ran (fix them, or continue_on_error=true runs the others)",
                      len(invalid), len(jobs))
            sys.exit(2)
        directory.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, directory / "multirun.yaml")
        open_sweep(directory, overrides, resume=bool(self.config.get("resume", True)))
        log.info("sweep directory %s (%d jobs); relaunching the same command resumes it", directory, len(jobs))

        outcome = SweepOutcome(labels, invalid)
        invalid_numbers = {bad.number for bad in invalid}
        recorded = {number: found[plan.config_hash].path for number, plan in plans.items()
                    if found.get(plan.config_hash) is not None and found[plan.config_hash].in_sweep}
        outcome.skipped += [(number, f"this config's run record exists: {path}") for number, path in recorded.items()]
        # a finished job is not launched at all (on a cluster: no allocation just to find its record)
        valid = [number for number in range(len(jobs)) if number not in invalid_numbers and number not in recorded]
        returns = []
        for run in contiguous_runs(valid, self.max_batch_size):
            results = self.launcher.launch([jobs[number] for number in run], initial_job_idx=run[0])
            for number, result in zip(run, results):
                outcome.collect(number, result)
            returns.append(results)
        log.info("%s", outcome.summary(directory, len(jobs)))
        if not outcome.ok:
            sys.exit(1)
        return returns
