"""conf/local/default.yaml, this machine's own settings: read after every other config when it exists (the command
line still wins), nothing when it does not; conf/local/example.yaml with its settings uncommented is such a file."""

import shutil

import pytest
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from symprune.config import settings

EXAMPLE = CONFIG_DIR / "local" / "example.yaml"


def composed(config_dir, *overrides: str, hydra: bool = True):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def run_config(config_dir, *overrides: str) -> dict:
    return OmegaConf.to_container(composed(config_dir, *overrides, hydra=False), resolve=True)


@pytest.fixture
def config_dir(tmp_path):
    """A copy of conf/ without a local file (this machine's own, if it has one, left out)."""
    copy = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, copy)
    (copy / "local" / "default.yaml").unlink(missing_ok=True)
    return copy


def test_without_a_local_file_nothing_changes(config_dir, monkeypatch):
    monkeypatch.delenv("SYMPRUNE_ASSETS", raising=False)
    cfg = composed(config_dir, "experiment=t2_cpu")
    assert cfg.paths.assets is None and cfg.paths.cache == "outputs/cache"
    assert cfg.hydra.sweep.dir == "outputs/experiments/t2_cpu" and cfg.reuse_from == ["outputs/experiments"]
    without = run_config(config_dir, "experiment=t2_cpu")
    (config_dir / "local" / "default.yaml").write_text("# @package _global_\n")
    assert run_config(config_dir, "experiment=t2_cpu") == without


def test_a_local_file_sets_this_machines_paths_and_the_command_line_still_wins(config_dir):
    (config_dir / "local" / "default.yaml").write_text(
        "# @package _global_\npaths:\n  assets: /data/assets\n  output_dir: /scratch/symprune\n")
    cfg = composed(config_dir, "experiment=t2_cpu")
    assert cfg.paths.assets == "/data/assets" and cfg.paths.cache == "/scratch/symprune/cache"
    assert cfg.hydra.sweep.dir == "/scratch/symprune/experiments/t2_cpu"
    assert cfg.reuse_from == ["/scratch/symprune/experiments"]
    assert cfg.hydra.run.dir.startswith("/scratch/symprune/runs/")
    assert composed(config_dir, "experiment=t2_cpu", "paths.assets=/elsewhere").paths.assets == "/elsewhere"


def test_the_example_with_its_settings_uncommented_is_a_local_file(config_dir):
    header, body = EXAMPLE.read_text().split("\n\n", 1)
    assert all(line.startswith("#") for line in body.splitlines() if line), "every setting is commented out"
    uncommented = "\n".join(line[2:] for line in body.splitlines())
    (config_dir / "local" / "default.yaml").write_text(f"{header}\n\n{uncommented}\n")
    cfg = composed(config_dir)
    assert cfg.paths.assets is not None and cfg.logger.entity is not None
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition
    settings(composed(config_dir, hydra=False))  # every key one the schema declares
