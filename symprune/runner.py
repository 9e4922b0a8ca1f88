"""One run: validate everything, load data and model, evaluate, prune, evaluate, record.

``plan_run`` does every check that can fail on bad input (names, ranges, files,
hub reachability, layer shapes against the pattern) before any weight is
loaded; ``execute`` then does the expensive work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from symprune import data
from symprune.config import RunConfig, settings
from symprune.driver import PruneReport, prune_model
from symprune.evaluate.perplexity import perplexity
from symprune.evaluate.zeroshot import ZeroShotResult, ZeroShotSuite, cache_entry, plan_suite
from symprune.loggers import RunLogger, flatten
from symprune.method import PruningMethod, build_method
from symprune.models import (
    ModelSource, dequantized_copy, find_blocks, linear_shapes, load_config, load_model, load_tokenizer, resolve_source, skeleton,
)
from symprune.placement import Placement, place_model, streamed
from symprune.record import git_state, software_versions
from symprune.registry import ConfigError
from symprune.saving import check_save_target, save_pruned
from symprune.timing import Timings

log = logging.getLogger("symprune")


@dataclass
class Plan:
    config: DictConfig
    settings: RunConfig
    method: PruningMethod
    source: ModelSource
    placement: Placement
    zeroshot: ZeroShotSuite | None  # None: no zero-shot tasks

    @property
    def device(self) -> torch.device:
        return self.placement.compute

    @property
    def needs_calibration(self) -> bool:
        return bool(self.method.required_stats)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for, but no CUDA device is available (use device=cpu)")
    return device


def _max_positions(model_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, key, None)
        if isinstance(value, int):
            return value
    return None


def plan_run(cfg: DictConfig) -> Plan:
    """Every check on the configuration; cheap: reads at most the model's config file."""
    run = settings(cfg)
    method = build_method(cfg.score, cfg.sparsity, cfg.refine)
    placement = Placement(resolve_device(run.device), **asdict(run.placement))
    check_save_target(run.save_model, run.save_semi_structured, method)
    source = resolve_source(run.model)
    assets = run.paths.assets
    if method.required_stats:
        data.dataset(run.calibration.name).calibration.locate(assets)
    for name in run.eval.perplexity.datasets:
        data.dataset(name).evaluation.locate(assets)
    zeroshot = plan_suite(run.eval.zeroshot, assets)

    model_config = load_config(source)
    for layer, (d_out, d_in) in linear_shapes(skeleton(model_config, source.trust_remote_code)).items():
        method.check_layer(layer, d_out, d_in)
    limit = _max_positions(model_config)
    lengths = {"eval.perplexity.seqlen": run.eval.perplexity.seqlen}
    if method.required_stats:
        lengths["calibration.seqlen"] = run.calibration.seqlen
    for key, length in lengths.items():
        if limit is not None and length > limit:
            raise ConfigError(f"{key}={length} exceeds the model's {limit} positions")
    return Plan(cfg, run, method, source, placement, zeroshot)


@dataclass
class RunInputs:
    tokenizer: Any
    calibration: torch.Tensor | None  # (nsamples, seqlen) token ids; None when the method needs no statistics
    streams: dict[str, torch.Tensor]  # evaluation set -> its token stream
    origins: dict[str, str]  # "calibration/<name>", "evaluation/<name>" -> where the text came from


def load_inputs(plan: Plan, source: ModelSource | None = None) -> RunInputs:
    """The tokenizer and every token a run reads: calibration samples and perplexity streams."""
    run = plan.settings
    tokenizer = load_tokenizer(source or plan.source)
    origins: dict[str, str] = {}
    calibration = None
    if plan.needs_calibration:
        cal = run.calibration
        calibration, origins[f"calibration/{cal.name}"] = data.calibration_ids(
            cal.name, tokenizer, cal.nsamples, cal.seqlen, cal.seed, run.paths.assets
        )
    streams = {}
    for name in run.eval.perplexity.datasets:
        streams[name], origins[f"evaluation/{name}"] = data.evaluation_ids(
            name, tokenizer, run.eval.perplexity.seqlen, run.paths.assets
        )
    return RunInputs(tokenizer, calibration, streams, origins)


def load_placed_model(plan: Plan, source: ModelSource | None = None) -> torch.nn.Module:
    """The dense model where the placement wants it (``source``: e.g. a dequantised copy of the plan's)."""
    model = load_model(source or plan.source, plan.settings.model.dtype, plan.placement.device_map)
    place_model(model, find_blocks(model)[0], plan.placement)
    return model


def _perplexities(plan: Plan, model, streams: dict, progress: bool, label: str) -> dict[str, Any]:
    settings_ = plan.settings.eval.perplexity
    input_device = model.get_input_embeddings().weight.device
    results = {}
    with streamed(find_blocks(model)[1], plan.placement):
        for name, tokens in streams.items():
            results[name] = perplexity(
                model, tokens, settings_.seqlen, batch_size=settings_.batch_size, max_windows=settings_.max_windows,
                device=input_device, progress=progress, desc=f"{label} perplexity {name}",
            )
    return results


def execute(plan: Plan, logger: RunLogger) -> dict[str, Any]:
    """The expensive part of a run; returns the run record (without config and versions)."""
    run, timings, progress = plan.settings, Timings(), plan.settings.progress
    started = time.time()
    with timings.measure("load_model"):
        source = dequantized_copy(plan.source, run.model.dtype, run.paths.cache)
    with timings.measure("data"):
        inputs = load_inputs(plan, source)
        tokenizer, calibration, streams, origins = inputs.tokenizer, inputs.calibration, inputs.streams, inputs.origins
        if plan.zeroshot:
            origins |= {f"zeroshot/{name}": origin for name, origin in plan.zeroshot.load_data().items()}
    with timings.measure("load_model"):
        model = load_placed_model(plan, source)

    dense = {}
    if run.eval.dense:
        with timings.measure("evaluation"):
            dense = _perplexities(plan, model, streams, progress, "dense")
    zeroshot: dict[str, ZeroShotResult] = {}
    zeroshot_record: dict[str, Any] = {}
    if plan.zeroshot and plan.zeroshot.settings.dense:
        with timings.measure("zeroshot"), streamed(find_blocks(model)[1], plan.placement):
            zeroshot["dense"], zeroshot_record = _dense_zeroshot(plan, model, tokenizer)
    report = prune_model(
        model, plan.method, calibration, batch_size=run.calibration.batch_size, placement=plan.placement,
        timings=timings, progress=progress,
    )
    with timings.measure("evaluation"):
        pruned = _perplexities(plan, model, streams, progress, "pruned")
    if plan.zeroshot and plan.zeroshot.settings.pruned:
        with timings.measure("zeroshot"), streamed(find_blocks(model)[1], plan.placement):
            zeroshot["pruned"] = plan.zeroshot.evaluate(model, tokenizer)

    metrics = {
        "perplexity": {
            name: {"pruned": pruned[name].perplexity, **({"dense": dense[name].perplexity} if name in dense else {}),
                   "windows": pruned[name].windows, "available_windows": pruned[name].available_windows,
                   "seqlen": pruned[name].seqlen}
            for name in streams
        },
        "sparsity": {"overall": report.overall_sparsity, "target": plan.method.target_sparsity},
    }
    if zeroshot:
        metrics["zeroshot"] = {label: result.as_metrics() for label, result in zeroshot.items()}
    logger.log_metrics(flatten(metrics))
    logger.log_table("sparsity/layers", *_layer_table(report))
    if zeroshot:
        logger.log_table("zeroshot/tasks", *_zeroshot_table(zeroshot))
    record = {
        "method": plan.method.describe(),
        "model": {"source": plan.source.describe(), "loaded_from": source.describe(), "dtype": run.model.dtype,
                  "device": str(plan.device),
                  "placement": asdict(run.placement)},
        "data": origins,
        "metrics": metrics,
        **({"zeroshot": zeroshot_record} if zeroshot_record else {}),
        "layers": [asdict(layer) | {"sparsity": layer.sparsity} for layer in report.layers],
        "timings": timings.as_dict(),
        "started": started,
        "finished": time.time(),
    }
    if run.save_model:
        with timings.measure("save_model"):
            record["saved_model"] = str(save_pruned(model, tokenizer, run.save_model, run.save_semi_structured))
        record["timings"] = timings.as_dict()
    logger.log_metrics({f"time/{phase}": seconds for phase, seconds in record["timings"].items()})
    _print_summary(metrics, report, timings)
    return record


def _dense_zeroshot(plan: Plan, model, tokenizer) -> tuple[ZeroShotResult, dict[str, Any]]:
    """The dense model's zero-shot scores: from the cache when an identical evaluation ran before."""
    suite, run = plan.zeroshot, plan.settings
    if not suite.settings.cache_dense or run.paths.cache is None:
        return suite.evaluate(model, tokenizer), {"dense_from_cache": False, "dense_cache": None}
    model_identity = plan.source.fingerprint() | {"dtype": run.model.dtype, "device": plan.device.type}
    entry = cache_entry(run.paths.cache, {"model": model_identity, **suite.identity()})
    result = entry.read()
    from_cache = result is not None
    if from_cache:
        log.info("dense zero-shot scores from the cache: %s", entry.path)
    else:
        result = suite.evaluate(model, tokenizer)
        entry.write(result)
    return result, {"dense_from_cache": from_cache, "dense_cache": str(entry.path)}


def _zeroshot_table(results: dict[str, ZeroShotResult]) -> tuple[list[str], list[list[Any]]]:
    """One row per evaluated model (dense, pruned) and task, plus the means over tasks."""
    metrics = ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "samples"]
    rows = [
        [label, task, *(values.get(metric) for metric in metrics)]
        for label, result in results.items()
        for task, values in result.as_metrics().items()
    ]
    return ["model", "task", *metrics], rows


def _layer_table(report: PruneReport) -> tuple[list[str], list[list[Any]]]:
    """Per-layer sparsity, plus whatever numbers the method reported per layer (e.g. a refinement's)."""
    info_keys = sorted({key for layer in report.layers for key in layer.info})
    columns = ["layer", "d_out", "d_in", "zeros", "numel", "sparsity", *info_keys]
    rows = [
        [layer.name, *layer.shape, layer.zeros, layer.numel, layer.sparsity, *(layer.info.get(k) for k in info_keys)]
        for layer in report.layers
    ]
    return columns, rows


def _print_summary(metrics: dict[str, Any], report: PruneReport, timings: Timings) -> None:
    for name, values in metrics["perplexity"].items():
        dense = f"dense {values['dense']:.3f} -> " if "dense" in values else ""
        log.info(
            "perplexity %s (%d windows of %d tokens): %spruned %.3f",
            name, values["windows"], values["seqlen"], dense, values["pruned"],
        )
    for label, scores in metrics.get("zeroshot", {}).items():
        for task, values in scores.items():
            examples = f" ({values['samples']} examples)" if "samples" in values else ""
            scores_ = ", ".join(f"{metric} {values[metric]:.4f}" for metric in ("acc", "acc_norm") if metric in values)
            log.info("zero-shot %s %s%s: %s", label, task, examples, scores_)
    sparsities = [layer.sparsity for layer in report.layers]
    log.info(
        "sparsity: overall %.4f (target %.4f) over %d linear layers, per layer %.4f to %.4f",
        metrics["sparsity"]["overall"], metrics["sparsity"]["target"], len(sparsities), min(sparsities), max(sparsities),
    )
    log.info("timings (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.as_dict().items()))


def base_record(plan: Plan, choices: dict[str, str]) -> dict[str, Any]:
    return {
        "config": OmegaConf.to_container(plan.config, resolve=True),
        "choices": choices,
        "versions": software_versions(),
        "git": git_state(),
    }
