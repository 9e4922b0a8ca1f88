"""A few runs' identities and masks, pinned: a change meant as a move or a simplification (configs, registries,
the driver) must leave every existing run's ``config_hash`` and the masks it prunes as they were.

The hash covers the machine's numerics (the CPU's vector instructions and thread count), so it is pinned with
them set to one value; everything else in it (the resolved config, the method's validated parameters, the model's
and the data's identity) is this checkout's. The masks come from a tiny synthetic model on random token ids, whose
scores have no ties, pruned on one thread: the same on any CPU for the locked torch and transformers
(requirements/constraints.txt). The values were taken before the configs moved to ``${paths.*}`` and protocol
choices, and before the driver's algorithm names became registration flags.
"""

import pytest
from conftest import compose_run, threads

from symprune.run.identity import config_hash
from symprune.run.plan import plan_run
from symprune.run.runner import _prune, load_inputs, load_placed_model
from symprune.timing import Timings

SYNTHETIC = ("model=synthetic", "calibration=random", "eval=perplexity_random", "calibration.nsamples=4",
             "calibration.seqlen=32", "logger=none", "progress=false", "device=cpu")
PINNED_NUMERICS = {"cpu_capability": "pinned", "threads": 1}

# overrides: (config_hash with PINNED_NUMERICS, SHA-256 of the pruned masks)
SYNTHETIC_RUNS = {
    ("score=wanda",): ("8e77b398d514fe96",
                       "025b4dfd3aa819ae8321ae705480e0a88c152500b2ca0957c450920bc4596f12"),
    ("score=ria", "sparsity=nm_2_4"): ("bfce03c2cffab946",
                                       "f540d92b0c9ec88b69814355147c6d52c351c6477456f03cb2ae296e00fb8bb4"),
    ("score=wanda", "refine=r2dsnot", "sparsity.group=row"): ("c24de55bd837cd71",
                                                              "d5e13423af87025868db1ad5900a933238a562a7c77079bacc14f709a0c59601"),
    ("score=wanda", "allocation=owl"): ("c4feb9010c7ef9fb",
                                        "5b485b97853196981f75fb96a96bc9af30b0b13b3cf8078776783bc488627f62"),
    ("score=sparsegpt", "sparsity.ratio=0.6"): ("18698bad28d62124",
                                                "476490e10bd197e288e9b9404f1d961a2c831b86f0a6f04e05ff9643df1798c9"),
}
# the real model's runs (their identity names its files' SHA-256): overrides -> config_hash with PINNED_NUMERICS
REAL_RUNS = {
    (): "77ae3aeb02e9025b",
    ("experiment=t2_cpu",): "3c6a1a7987112444",
    ("score=ria", "sparsity=nm_2_4", "calibration.seqlen=model"): "a5b33529dacfb660",
    ("score=wanda", "allocation=alpha", "refine=r2dsnot", "sparsity.group=row"): "1188310f8612fc43",
}


def pinned_hash(plan) -> str:
    return config_hash({**plan.identity, "numerics": PINNED_NUMERICS})


@pytest.mark.parametrize("overrides", list(SYNTHETIC_RUNS), ids=" ".join)
def test_a_synthetic_runs_hash_and_masks_are_pinned(overrides):
    expected_hash, expected_masks = SYNTHETIC_RUNS[overrides]
    plan = plan_run(compose_run(*SYNTHETIC, *overrides))
    assert pinned_hash(plan) == expected_hash
    with threads(1):
        model = load_placed_model(plan)
        report = _prune(plan, model, load_inputs(plan).calibration, Timings())  # as a run prunes
    assert report.masks.sha256() == expected_masks
    assert 0 < sum(int(mask.sum()) for mask in map(report.masks.mask, report.masks.shapes)) < sum(
        parameter.numel() for name, parameter in model.named_parameters() if "layers" in name)


@pytest.mark.parametrize("overrides", list(REAL_RUNS), ids=lambda overrides: " ".join(overrides) or "default")
def test_the_real_models_run_hashes_are_pinned(overrides, assets):
    plan = plan_run(compose_run(*overrides, "~local"))
    assert pinned_hash(plan) == REAL_RUNS[overrides]


def test_the_pinned_hash_still_tells_numerics_apart():
    plan = plan_run(compose_run(*SYNTHETIC, "score=wanda"))
    other = config_hash({**plan.identity, "numerics": {**PINNED_NUMERICS, "threads": 2}})
    assert other != pinned_hash(plan)
