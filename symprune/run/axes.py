"""The ablation axes a run is logged under in W&B: plain top-level config keys, so that W&B's own
group-by, filters and reports work on them without reading the nested config.

| W&B key | value |
|---|---|
| experiment | the ``experiment`` config choice (e.g. ``t2_cpu``); also the run's tag and ``job_type`` |
| model | the ``model`` choice |
| score | the ``score`` choice |
| pattern | the ``sparsity`` choice (``unstructured``, ``nm_2_4``, ...) |
| ratio | the method's target sparsity |
| refine | the ``refine`` choice |
| allocation | the ``allocation`` choice, where the config has that group |

The resolved config is logged under ``config``, the method's validated parameters under ``method``.
"""

from __future__ import annotations

from typing import Any

# W&B key → the config group whose choice it is
CHOICE_AXES = {"experiment": "experiment", "model": "model", "score": "score", "pattern": "sparsity",
               "refine": "refine", "allocation": "allocation"}
RATIO_AXIS = "ratio"


def ablation_axes(choices: dict[str, Any], target_sparsity: float) -> dict[str, Any]:
    """The axes of one run, from its config choices and its method's target sparsity."""
    axes = {key: choices[group] for key, group in CHOICE_AXES.items() if choices.get(group) is not None}
    return {**axes, RATIO_AXIS: target_sparsity}


def axis_key(record_key: str) -> str:
    """The W&B config key of a key as tables name it (a group choice, ``sparsity.ratio``, a dotted config
    path, or ``method.…``)."""
    by_group = {group: key for key, group in CHOICE_AXES.items()}
    if record_key in by_group:
        return by_group[record_key]
    if record_key == "sparsity.ratio":
        return RATIO_AXIS
    if record_key.startswith("method."):
        return record_key
    return f"config.{record_key}"


def summary_key(metric: str) -> str:
    """The W&B summary key of a record's metric path: ``metrics.perplexity.wikitext2.pruned`` →
    ``perplexity/wikitext2/pruned``; a ``*`` over tasks becomes their ``mean``."""
    return metric.removeprefix("metrics.").replace("*", "mean").replace(".", "/")
