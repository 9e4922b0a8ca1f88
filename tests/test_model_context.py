"""``seqlen: model``: the model's maximum context as the calibration and evaluation length (Wanda's protocol),
resolved when the run is planned, so that ``model`` and the number it stands for are one run."""

import pytest
from conftest import compose_run

from symprune.errors import ConfigError
from symprune.run import plan as plan_module
from symprune.run.plan import plan_run

SYNTHETIC = ("model=synthetic", "calibration=random", "eval=perplexity_random", "logger=none", "device=cpu",
             "model.shape.max_positions=96", "calibration.nsamples=2", "calibration.seqlen=32",
             "eval.perplexity.seqlen=64")


def plan(*overrides):
    return plan_run(compose_run(*SYNTHETIC, *overrides))


def test_model_resolves_to_the_models_maximum_context_in_settings_config_and_identity():
    planned = plan("calibration.seqlen=model", "eval.perplexity.seqlen=model")
    assert planned.settings.calibration.seqlen == 96 and planned.settings.eval.perplexity.seqlen == 96
    assert planned.config.calibration.seqlen == 96 and planned.config.eval.perplexity.seqlen == 96
    assert planned.config_hash == plan("calibration.seqlen=96", "eval.perplexity.seqlen=96").config_hash
    assert planned.config_hash != plan("calibration.seqlen=64", "eval.perplexity.seqlen=96").config_hash


def test_each_length_resolves_on_its_own():
    planned = plan("eval.perplexity.seqlen=model", "calibration.seqlen=32")
    assert (planned.settings.calibration.seqlen, planned.settings.eval.perplexity.seqlen) == (32, 96)


@pytest.mark.parametrize("override, message", [
    ("calibration.seqlen=longest", "calibration.seqlen='longest' must be a positive integer or 'model'"),
    ("eval.perplexity.seqlen=0", "eval.perplexity.seqlen=0 must be a positive integer or 'model'"),
    ("calibration.seqlen=200", "calibration.seqlen=200 exceeds the model's 96 positions"),
])
def test_bad_lengths_fail_at_plan_time_naming_the_value(override, message):
    with pytest.raises(ConfigError) as error:
        plan(override)
    assert message in str(error.value)


def test_a_model_without_a_maximum_context_is_refused_for_model(monkeypatch):
    monkeypatch.setattr(plan_module, "_max_positions", lambda model_config: None)
    with pytest.raises(ConfigError, match="calibration.seqlen=model, but model 'synthetic' declares no maximum context"):
        plan("calibration.seqlen=model")
