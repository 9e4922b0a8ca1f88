"""One run's work, once its plan (symprune/run/plan.py) has checked everything: load the data and the
model, evaluate the dense model (or take its results from the cache), prune, evaluate, save.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from symprune import data
from symprune.errors import ConfigError
from symprune.evaluate.cache import cache_entry
from symprune.evaluate.perplexity import PerplexityResult, perplexity
from symprune.model.dequantized import dequantized_copy
from symprune.model.loading import ModelSource, load_placed, load_tokenizer
from symprune.model.masks import MaskSet
from symprune.model.placement import streamed
from symprune.model.saving import save_pruned
from symprune.model.structure import find_blocks
from symprune.provenance import software_versions, tokens_sha256, weights_sha256
from symprune.prune.driver import PruneReport, prune_model
from symprune.prune.method import PruningMethod
from symprune.run.loggers import RunLogger, flatten
from symprune.run.plan import Plan
from symprune.timing import Timings

if TYPE_CHECKING:  # lm-eval is imported only by runs with zero-shot tasks
    from symprune.evaluate.zeroshot import ZeroShotResult

log = logging.getLogger("symprune")


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
    windowed = [f"{part}.bos=window" for part, mode in (("calibration", run.calibration.bos),
                                                         ("eval.perplexity", run.eval.perplexity.bos)) if mode == "window"]
    if windowed and _bos_token_id(tokenizer) is None:
        raise ConfigError(f"{', '.join(windowed)}: the tokenizer of model '{run.model.name}' has no BOS token; use bos=stream or none")
    origins: dict[str, str] = {}
    calibration = None
    if plan.needs_calibration:
        cal = run.calibration
        calibration, origins[f"calibration/{data.label(cal.name)}"] = data.calibration_ids(
            cal.name, tokenizer, cal.nsamples, cal.seqlen, cal.seed, run.paths.assets, plan.vocab_size, cal.bos
        )
    streams = {}
    settings_ = run.eval.perplexity
    for name in settings_.datasets:
        streams[data.label(name)], origins[f"evaluation/{data.label(name)}"] = data.evaluation_ids(
            name, tokenizer, settings_.seqlen, run.paths.assets, settings_.max_windows, plan.vocab_size, settings_.bos
        )
    return RunInputs(tokenizer, calibration, streams, origins)


def _bos_token_id(tokenizer) -> int | None:
    """The BOS token that ``bos=window`` puts before every window: the tokenizer's (a synthetic model has none)."""
    return None if tokenizer is None else tokenizer.bos_token_id


def load_placed_model(plan: Plan, source: ModelSource | None = None) -> torch.nn.Module:
    """The dense model where the placement wants it (``source``: e.g. a dequantised copy of the plan's)."""
    return load_placed(source or plan.source, plan.settings.model.dtype, plan.placement)


def _perplexities(plan: Plan, model, streams: dict, progress: bool, label: str, bos_token_id: int | None) -> dict[str, Any]:
    settings_ = plan.settings.eval.perplexity
    input_device = model.get_input_embeddings().weight.device
    results = {}
    with streamed(find_blocks(model)[1], plan.placement):
        for name, tokens in streams.items():
            results[name] = perplexity(
                model, tokens, settings_.seqlen, batch_size=settings_.batch_size, max_windows=settings_.max_windows,
                device=input_device, progress=progress, desc=f"{label} perplexity {name}",
                bos_token_id=bos_token_id if settings_.bos == "window" else None,
            )
    return results


@dataclass
class RunResults:
    """What executing a plan measured and produced: the run record's sections only a run can fill."""

    model: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]
    layers: list[dict[str, Any]]
    timings: dict[str, float]
    started: float
    finished: float
    masks: MaskSet
    caches: dict[str, Any] = field(default_factory=dict)
    saved_model: str | None = None
    save_error: str | None = None


def execute(plan: Plan, logger: RunLogger) -> RunResults:
    """The expensive part of a run: data, model, dense evaluation, pruning, pruned evaluation, saving."""
    run, timings = plan.settings, Timings()
    started = time.time()
    log.info("model %s (%s), method %s", plan.source.describe(), run.model.dtype, _method_summary(plan.method))
    with timings.measure("load_model"):
        source = dequantized_copy(plan.source, run.model.dtype, run.paths.cache)
    inputs, provenance = _read_data(plan, source, timings)
    model, weights = _load_model(plan, source, timings)
    dense, dense_zeroshot, caches = _evaluate_dense(plan, model, inputs, provenance, timings)
    report = _prune(plan, model, inputs.calibration, timings)
    caches |= report.caches
    pruned, pruned_zeroshot = _evaluate_pruned(plan, model, inputs, timings)
    zeroshot = {label: result for label, result in (("dense", dense_zeroshot), ("pruned", pruned_zeroshot))
                if result is not None}
    metrics = _metrics(plan, report, dense, pruned, zeroshot)
    _log_results(logger, metrics, report, zeroshot)
    results = RunResults(
        model=_model_section(plan, source, weights), data=provenance, metrics=metrics, caches=caches,
        layers=[asdict(layer) | {"sparsity": layer.sparsity} for layer in report.layers],
        timings=timings.as_dict(), started=started, finished=time.time(), masks=report.masks,
    )
    if run.save_model:
        _save_model(plan, model, inputs.tokenizer, results, timings)
    logger.log_metrics({f"time/{phase}": seconds for phase, seconds in results.timings.items()})
    _print_summary(metrics, report, timings)
    return results


def _read_data(plan: Plan, source: ModelSource, timings: Timings) -> tuple[RunInputs, dict[str, Any]]:
    """The run's tokens and the record's ``data`` section: where each split came from and what was read of it."""
    log.info("reading the calibration and evaluation data")
    with timings.measure("data"):
        inputs = load_inputs(plan, source)
        provenance = _data_provenance(plan, inputs)
        if plan.zeroshot:
            provenance |= {f"zeroshot/{name}": {"origin": origin} for name, origin in plan.zeroshot.load_data().items()}
    return inputs, provenance


def _load_model(plan: Plan, source: ModelSource, timings: Timings) -> tuple[torch.nn.Module, str]:
    """The placed dense model and its weights' SHA-256."""
    log.info("loading the model (%s) on %s", source.describe(), plan.device)
    with timings.measure("load_model"):
        model = load_placed_model(plan, source)
        return model, weights_sha256(model)


def _evaluate_dense(
    plan: Plan, model, inputs: RunInputs, provenance: dict[str, Any], timings: Timings
) -> tuple[dict[str, PerplexityResult], ZeroShotResult | None, dict[str, Any]]:
    """The dense model's perplexities and zero-shot scores, where the run asks for them, and per evaluation
    whether it came from the cache."""
    run = plan.settings
    perplexities: dict[str, PerplexityResult] = {}
    zeroshot: ZeroShotResult | None = None
    caches: dict[str, Any] = {}
    if run.eval.dense and inputs.streams:
        with timings.measure("evaluation"):
            perplexities, caches["perplexity_dense"] = _dense_perplexities(
                plan, model, inputs.streams, provenance, run.progress, inputs.tokenizer)
    if plan.zeroshot and plan.zeroshot.settings.dense:
        with timings.measure("zeroshot"), streamed(find_blocks(model)[1], plan.placement):
            zeroshot, caches["zeroshot_dense"] = _dense_zeroshot(plan, model, inputs.tokenizer)
    return perplexities, zeroshot, caches


def _prune(plan: Plan, model, calibration: torch.Tensor | None, timings: Timings) -> PruneReport:
    run = plan.settings
    log.info("pruning: %s", _method_summary(plan.method))
    return prune_model(
        model, plan.method, calibration, batch_size=run.calibration.batch_size, placement=plan.placement,
        timings=timings, progress=run.progress, targets=plan.targets, allocation=plan.allocation,
        cache_dir=run.paths.cache,
    )


def _evaluate_pruned(
    plan: Plan, model, inputs: RunInputs, timings: Timings
) -> tuple[dict[str, PerplexityResult], ZeroShotResult | None]:
    """The pruned model's perplexities and zero-shot scores, where the run asks for them."""
    perplexities: dict[str, PerplexityResult] = {}
    zeroshot: ZeroShotResult | None = None
    if inputs.streams:
        log.info("pruned perplexity on %s", ", ".join(inputs.streams))
        with timings.measure("evaluation"):
            perplexities = _perplexities(plan, model, inputs.streams, plan.settings.progress, "pruned",
                                         _bos_token_id(inputs.tokenizer))
    if plan.zeroshot and plan.zeroshot.settings.pruned:
        with timings.measure("zeroshot"), streamed(find_blocks(model)[1], plan.placement):
            zeroshot = plan.zeroshot.evaluate(model, inputs.tokenizer)
    return perplexities, zeroshot


def _metrics(plan: Plan, report: PruneReport, dense: dict[str, PerplexityResult], pruned: dict[str, PerplexityResult],
             zeroshot: dict[str, ZeroShotResult]) -> dict[str, Any]:
    """The record's ``metrics`` section: perplexities, sparsities, per-layer totals, zero-shot scores."""
    metrics = {
        "perplexity": {
            name: {"pruned": result.perplexity, **({"dense": dense[name].perplexity} if name in dense else {}),
                   "windows": result.windows, "available_windows": result.available_windows,
                   "seqlen": result.seqlen}
            for name, result in pruned.items()
        },
        "sparsity": {"overall": report.overall_sparsity, "target": plan.method.target_sparsity,
                     "allocation": plan.allocation.name,
                     "blocks": [{"block": block, "target": target, "achieved": achieved}
                                for block, target, achieved in report.block_sparsities()]},
    }
    totals = _layer_totals(report)
    if totals:
        metrics["layer_totals"] = totals
    if zeroshot:
        metrics["zeroshot"] = {label: result.as_metrics() for label, result in zeroshot.items()}
    return metrics


def _log_results(logger: RunLogger, metrics: dict[str, Any], report: PruneReport,
                 zeroshot: dict[str, ZeroShotResult]) -> None:
    logger.log_metrics(flatten(metrics))
    logger.log_table("sparsity/layers", *_layer_table(report))
    logger.log_line("sparsity/blocks", ["block", "target", "achieved"], report.block_sparsities(), "block", "target")
    if zeroshot:
        logger.log_table("zeroshot/tasks", *_zeroshot_table(zeroshot))


def _model_section(plan: Plan, source: ModelSource, weights: str) -> dict[str, Any]:
    """The record's ``model`` section: the model as configured, where its weights were read and their hash."""
    run = plan.settings
    return {"source": plan.source.describe(), "loaded_from": source.describe(), "dtype": run.model.dtype,
            "device": str(plan.device), "placement": asdict(run.placement), **plan.source.summary(),
            "weights_sha256": weights}


def _save_model(plan: Plan, model, tokenizer, results: RunResults, timings: Timings) -> None:
    """The pruned model saved where the run asks; a failure is recorded in the results, which are kept."""
    run = plan.settings
    log.info("saving the pruned model to %s", run.save_model)
    try:
        with timings.measure("save_model"):
            results.saved_model = str(save_pruned(model, tokenizer, run.save_model, run.save_semi_structured))
    except OSError as error:  # a full disk, a vanished mount: the results are recorded all the same
        results.save_error = f"{type(error).__name__}: {error}"
        log.error("saving the pruned model to %s failed: %s", run.save_model, results.save_error)
    results.timings = timings.as_dict()


def _data_provenance(plan: Plan, inputs: RunInputs) -> dict[str, Any]:
    """Per split: where the text came from and what the run read of it (the tokens' SHA-256 and counts)."""
    run = plan.settings
    provenance = {}
    if inputs.calibration is not None:
        (key,) = [key for key in inputs.origins if key.startswith("calibration/")]
        provenance[key] = {"origin": inputs.origins[key], "tokens_sha256": tokens_sha256(inputs.calibration),
                           "samples": inputs.calibration.shape[0], "seqlen": inputs.calibration.shape[1],
                           "seed": run.calibration.seed, "bos": run.calibration.bos}
    for name, tokens in inputs.streams.items():
        key = f"evaluation/{name}"
        provenance[key] = {"origin": inputs.origins[key], "tokens_sha256": tokens_sha256(tokens), "tokens": tokens.numel(),
                           "seqlen": run.eval.perplexity.seqlen, "max_windows": run.eval.perplexity.max_windows,
                           "bos": run.eval.perplexity.bos}
    return provenance


def _method_summary(method: PruningMethod) -> str:
    described = method.describe()
    return ", ".join(f"{part} {values['name']}" for part, values in described.items())


def _dense_key(plan: Plan, **evaluation: Any) -> dict[str, Any]:
    """What determines a dense result besides the evaluation itself: the weights, dtype, device and its numerics,
    software."""
    return {"model": plan.identity["model"], "dtype": plan.settings.model.dtype, "device": plan.device.type,
            "numerics": plan.identity["numerics"], **evaluation, "versions": software_versions()}


def _dense_perplexities(plan: Plan, model, streams: dict, provenance: dict, progress: bool, tokenizer):
    """The dense model's perplexity on every set: from the cache when the same evaluation ran before.
    Returns the results and, per set, whether it came from the cache and the cache entry."""
    settings_, cache = plan.settings.eval.perplexity, plan.settings.paths.cache
    entries = {}
    if settings_.cache_dense and cache is not None:
        entries = {
            name: cache_entry(cache, "perplexity_dense", _dense_key(
                plan, tokens_sha256=provenance[f"evaluation/{name}"]["tokens_sha256"], seqlen=settings_.seqlen,
                max_windows=settings_.max_windows, batch_size=settings_.batch_size, bos=settings_.bos))
            for name in streams
        }
    results = {}
    for name, entry in entries.items():
        stored = entry.read()
        if stored is not None:
            results[name] = PerplexityResult(**stored)
            log.info("dense perplexity of %s from the cache: %s", name, entry.path)
    missing = {name: tokens for name, tokens in streams.items() if name not in results}
    if missing:
        log.info("dense perplexity on %s", ", ".join(missing))
        for name, result in _perplexities(plan, model, missing, progress, "dense", _bos_token_id(tokenizer)).items():
            results[name] = result
            if name in entries:
                entries[name].write(asdict(result))
    origins = {name: {"from_cache": name not in missing, "entry": str(entries[name].path) if name in entries else None}
               for name in streams}
    return {name: results[name] for name in streams}, origins


def _dense_zeroshot(plan: Plan, model, tokenizer) -> tuple[ZeroShotResult, dict[str, Any]]:
    """The dense model's zero-shot scores: from the cache when an identical evaluation ran before."""
    from symprune.evaluate.zeroshot import ZeroShotResult

    suite, run = plan.zeroshot, plan.settings
    if not suite.settings.cache_dense or run.paths.cache is None:
        return suite.evaluate(model, tokenizer), {"from_cache": False, "entry": None}
    entry = cache_entry(run.paths.cache, "zeroshot_dense", _dense_key(plan, **suite.identity()))
    stored = entry.read()
    if stored is not None:
        log.info("dense zero-shot scores from the cache: %s", entry.path)
        return ZeroShotResult.from_metrics(stored), {"from_cache": True, "entry": str(entry.path)}
    result = suite.evaluate(model, tokenizer)
    entry.write(result.as_metrics())
    return result, {"from_cache": False, "entry": str(entry.path)}


def _zeroshot_table(results: dict[str, ZeroShotResult]) -> tuple[list[str], list[list[Any]]]:
    """One row per evaluated model (dense, pruned) and task, plus the means over tasks."""
    metrics = ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "samples"]
    rows = [
        [label, task, *(values.get(metric) for metric in metrics)]
        for label, result in results.items()
        for task, values in result.as_metrics().items()
    ]
    return ["model", "task", *metrics], rows


def _layer_totals(report: PruneReport) -> dict[str, float]:
    """Every number the method reported per layer (e.g. a refinement's swaps), summed over the layers: what a
    table of whole runs needs from the per-layer detail."""
    totals: dict[str, float] = {}
    for layer in report.layers:
        for key, value in layer.info.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals


def _layer_table(report: PruneReport) -> tuple[list[str], list[list[Any]]]:
    """Per-layer sparsity, plus whatever numbers the method reported per layer (e.g. a refinement's)."""
    info_keys = sorted({key for layer in report.layers for key in layer.info})
    columns = ["layer", "block", "d_out", "d_in", "zeros", "numel", "target", "sparsity", *info_keys]
    rows = [
        [layer.name, layer.block, *layer.shape, layer.zeros, layer.numel, layer.target, layer.sparsity,
         *(layer.info.get(k) for k in info_keys)]
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
