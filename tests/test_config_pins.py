"""The composed configs, pinned: the default run and every experiment sweep expand to the same jobs, each with
the same resolved config, writing to the same directories. A change to conf/ that moves a run's identity, a job's
overrides or where a sweep writes fails here.

A run's identity (symprune/run/identity.py) is its resolved config less a few keys, plus what its plan derives
from that config on the machine at hand (the model's and the data's identity, the device, the numerics): the same
resolved config keeps every identity on any machine. The digests cover the whole resolved config but ``paths``
(where files are, no part of the identity), whose default values are pinned on their own.
"""

import hashlib
import json
import re

import pytest
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import symprune.config  # noqa: F401  (the run schema)

# experiment: its sweep directory, how many jobs, the digest of their overrides, the digest of the resolved configs
# of its first and last jobs (of every job, for the experiments of ALL_JOBS)
PINNED = {
    "a1": ("outputs/experiments/a1", 10, "c7de572f0727194e", "2f178a43c7473c3e"),
    "a1_cpu": ("outputs/experiments/a1_cpu", 10, "b008a049447eb492", "7283ccbc5770f5b9"),
    "a2": ("outputs/experiments/a2", 12, "1fefa577cb96e55f", "593ca6f84ebbbb8f"),
    "a2_cpu": ("outputs/experiments/a2_cpu", 10, "4575bb896461587b", "4132e6bb77af7466"),
    "a3": ("outputs/experiments/a3", 8, "79a132c50841cbed", "ffb9e16a19100a36"),
    "a3_cpu": ("outputs/experiments/a3_cpu", 8, "f069c0192bc7f3ff", "67ac375cacd3f2a1"),
    "a4": ("outputs/experiments/a4", 16, "929c32d4e2ae9533", "cb9e33ede59ec30f"),
    "a4_cpu": ("outputs/experiments/a4_cpu", 16, "b3ba67d8b82fd343", "92cc6f05f9c140f0"),
    "a5": ("outputs/experiments/a5", 10, "acec2f33423509d5", "27d13dcba95459eb"),
    "a5_cpu": ("outputs/experiments/a5_cpu", 10, "61b82993faa5f2c3", "c31c118dd5b612a2"),
    "a6": ("outputs/experiments/a6", 20, "e450e0916ef7f909", "4b657c22a0179657"),
    "a6_cpu": ("outputs/experiments/a6_cpu", 16, "f02239fdd7415c36", "bee09b4f14cfdc8e"),
    "alloc": ("outputs/experiments/alloc", 72, "d13e53b8c4adb010", "e78b198c28179fc8"),
    "alloc_cpu": ("outputs/experiments/alloc_cpu", 36, "d72c38d6be9ef6d7", "18b2f3339c494f81"),
    "cpu_protocol": ("outputs/multirun/sweep", 1, "beb66240ea548f7b", "ee6ec0bed6cddd8f"),
    "masks_cpu": ("outputs/experiments/masks_cpu", 6, "1b83a042c17086e1", "b4f9a99342985cda"),
    "paper_protocol": ("outputs/multirun/sweep", 1, "1f9a43fdba500f47", "a83940711fdf7ac8"),
    "quick": ("outputs/multirun/sweep", 1, "e420b8a7fba2cd3f", "86779fa5809ad668"),
    "refinement_cpu": ("outputs/experiments/refinement_cpu", 40, "f507bb9dd3f6e009", "a40a19d47ead1e43"),
    "scores_cpu": ("outputs/experiments/scores_cpu", 30, "7605e18d7b3b591e", "5275e9b8a94db44f"),
    "t2": ("outputs/experiments/t2", 36, "47a176b1b16670fc", "a6c27c81ef1b1cb0"),
    "t2_cpu": ("outputs/experiments/t2_cpu", 9, "db942449c246f5a3", "019c6b4e28f6454d"),
    "t2z": ("outputs/experiments/t2z", 36, "35fbf6ce9dc48e04", "4885c29e1ba1423a"),
    "t2z_cpu": ("outputs/experiments/t2z_cpu", 9, "40764b925272cfdb", "d8b638fc4e085aa4"),
    "t3": ("outputs/experiments/t3", 18, "8d6812f27ed5a0bb", "65104a74dd41bb00"),
    "t3_cpu": ("outputs/experiments/t3_cpu", 6, "f4c8f6b718e0dc9e", "9e944d5dd1722abe"),
    "t4": ("outputs/experiments/t4", 18, "88ed92d8e5b310a7", "79d739a9e4e80466"),
    "t4_cpu": ("outputs/experiments/t4_cpu", 6, "24771c6fc0b3338b", "aaeb42f881c501c8"),
}
ALL_JOBS = {"t2", "t2_cpu", "alloc_cpu", "a6_cpu"}
COMMITTED = "~local"  # conf/ as committed, without this machine's conf/local/default.yaml
DEFAULT_RUN = "c72c813728532042"  # the resolved config of `symprune` with no override (digest)


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def resolved(*overrides: str) -> dict:
    """A job's resolved run config less ``paths``."""
    config = OmegaConf.to_container(compose("config", overrides=[*overrides, COMMITTED]), resolve=True)
    del config["paths"]
    return config


def sweep_jobs(experiment: str) -> tuple[str, list[list[str]]]:
    """An experiment's sweep directory and its jobs' overrides, as symprune's sweeper expands them."""
    cfg = compose("config", overrides=[f"experiment={experiment}", COMMITTED], return_hydra_config=True)
    # imported once Hydra has loaded its plugins (which reloads the sweepers' modules)
    from hydra_plugins.symprune_sweeper.symprune_sweeper import SymPruneSweeper

    sweeper = SymPruneSweeper(max_batch_size=None, params=cfg.hydra.sweeper.params or {})
    parsed = OverridesParser.create().parse_overrides([*sweeper._parse_config(), f"experiment={experiment}"])
    return cfg.hydra.sweep.dir, [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def pins(experiment: str) -> tuple[str, int, str, str]:
    directory, jobs = sweep_jobs(experiment)
    composed = jobs if experiment in ALL_JOBS else [jobs[0], jobs[-1]]
    return directory, len(jobs), digest(jobs), digest([resolved(*job) for job in composed])


@pytest.fixture(scope="module")
def config_dir():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


@pytest.mark.parametrize("experiment", sorted(PINNED))
def test_experiment_composes_to_its_pinned_jobs(experiment, config_dir):
    assert pins(experiment) == PINNED[experiment]


def test_every_experiment_is_pinned():
    assert sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")) == sorted(PINNED)


def test_default_run_and_its_locations_are_pinned(config_dir, monkeypatch):
    monkeypatch.delenv("SYMPRUNE_ASSETS", raising=False)
    assert digest(resolved()) == DEFAULT_RUN
    cfg = compose("config", overrides=[COMMITTED], return_hydra_config=True)
    assert cfg.paths.assets is None and cfg.paths.cache == "outputs/cache"
    assert re.fullmatch(r"outputs/runs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", cfg.hydra.run.dir)
    assert cfg.hydra.sweep.dir == "outputs/multirun/sweep"  # sweep-<hash> while a sweep runs
    monkeypatch.setenv("SYMPRUNE_ASSETS", "/data/assets")
    assert compose("config", overrides=[COMMITTED]).paths.assets == "/data/assets"
