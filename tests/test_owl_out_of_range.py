"""OWL's block sparsities outside [0, 1): refused by default, or clipped as its reference clips them."""

import numpy as np
import pytest
import torch
from test_allocation import allocation, plan, reference_owl

from symprune.errors import ConfigError
from symprune.prune.allocation import Layout
from symprune.run.identity import config_hash


def reference_owl_clipped(outlier_ratios, target, lam):
    """luuyin/OWL's per-block sparsity as its pruning loop reads it: ``1 - all_layer_ratio[i]``, set to 0.01 where
    that is <= 0."""
    sparsities = reference_owl(outlier_ratios, target, lam)
    return np.array([0.01 if sparsity <= 0 else sparsity for sparsity in sparsities])


def owl_layout(blocks):
    return Layout(tuple(f"b{b}" for b in range(blocks)), tuple(range(blocks)), (64 * 32,) * blocks)


def test_clip_gives_the_references_sparsities_where_a_block_falls_below_zero():
    outliers = [1.0, 1.0, 1.0, 30.0]  # one block far above the rest keeps everything and more
    layout = owl_layout(len(outliers))
    evidence = torch.tensor(outliers, dtype=torch.float64)
    unclipped = allocation("owl", lam=0.4).fn(layout, 0.25, evidence)
    assert float(unclipped.min()) < 0  # the case the option is for
    clipped = allocation("owl", lam=0.4, out_of_range="clip").fn(layout, 0.25, evidence)
    np.testing.assert_allclose(clipped.numpy(), reference_owl_clipped(outliers, 0.25, 0.4), rtol=0, atol=1e-12)
    assert clipped[3] == 0.01 and torch.equal(clipped[:3], unclipped[:3])


def test_clip_changes_nothing_inside_the_range():
    outliers = [2.5, 7.0, 4.25, 9.5, 3.0]
    layout, evidence = owl_layout(5), torch.tensor(outliers, dtype=torch.float64)
    assert torch.equal(allocation("owl", lam=0.08, out_of_range="clip").fn(layout, 0.7, evidence),
                       allocation("owl", lam=0.08).fn(layout, 0.7, evidence))


def test_a_bad_choice_is_refused_at_plan_time_naming_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown allocation.out_of_range 'wrap'; valid: refuse, clip"):
        plan("model.shape.num_layers=2", "allocation=owl", "allocation.out_of_range=wrap")


def test_the_option_is_in_the_identity_and_its_default_keeps_earlier_records_hashes():
    default, clipped = plan("allocation=owl"), plan("allocation=owl", "allocation.out_of_range=clip")
    assert clipped.config_hash != default.config_hash
    earlier = {**default.identity, "config": {**default.identity["config"]}}
    earlier["config"]["allocation"] = {key: value for key, value in earlier["config"]["allocation"].items()
                                       if key != "out_of_range"}  # a record written before the option existed
    assert config_hash(earlier) == default.config_hash
