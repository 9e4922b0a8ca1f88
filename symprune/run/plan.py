"""A run's plan: every check that can fail on bad input (names, ranges, files, hub reachability, layer
shapes against the pattern, saved masks against the model), before any weight is loaded, and the run's
identity (symprune/run/identity.py). Cheap: it reads at most the model's config file and hashes the
local files the run will read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from symprune import data
from symprune.config import MODEL_CONTEXT, RunConfig, settings
from symprune.errors import ConfigError
from symprune.model.loading import DTYPES, ModelSource, load_config, resolve_source
from symprune.model.masks import check_layers, load_masks, read_mask_sha256
from symprune.model.placement import Placement
from symprune.model.saving import check_save_target
from symprune.model.structure import (find_blocks, find_expert_lists, find_experts, linear_shapes, linears_outside_blocks,
                                      prunable_names, skeleton)
from symprune.model.support import check_architecture
from symprune.prune.allocation import ALLOCATIONS, check_ratios
from symprune.prune.driver import matrix_layout, select_matrices
from symprune.prune.method import PruningMethod, build_method
from symprune.prune.targets import Targets
from symprune.provenance import numerics
from symprune.registry import Built
from symprune.run.identity import config_hash, run_identity

log = logging.getLogger("symprune")

if TYPE_CHECKING:  # lm-eval is imported only by runs with zero-shot tasks
    from symprune.evaluate.zeroshot import ZeroShotSuite


@dataclass
class Plan:
    config: DictConfig
    settings: RunConfig
    method: PruningMethod
    source: ModelSource
    placement: Placement
    targets: Targets  # the matrices pruned
    allocation: Built  # their ratios (prune/allocation/)
    zeroshot: ZeroShotSuite | None  # None: no zero-shot tasks
    vocab_size: int  # the model's: bounds token ids that are not text (random ids, token files)
    identity: dict[str, Any]  # what decides the run's numbers (symprune/run/identity.py)

    @property
    def config_hash(self) -> str:
        return config_hash(self.identity)

    @property
    def device(self) -> torch.device:
        return self.placement.compute

    @property
    def needs_calibration(self) -> bool:
        return needs_calibration(self.method, self.allocation)


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


def needs_calibration(method: PruningMethod, allocation: Built) -> bool:
    """The method's statistics, or an allocation that measures the dense model (OWL), read calibration data."""
    return bool(method.required_stats) or allocation.meta("block_evidence") is not None


def _max_positions(model_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, key, None)
        if isinstance(value, int):
            return value
    return None


def _resolve_model_context(cfg: DictConfig, run: RunConfig, model_config) -> None:
    """Every ``seqlen: model`` becomes the model's maximum context, in the settings and in the config the
    identity hashes: ``model`` and the number it stands for are one run."""
    for key, node, config_node in (("calibration.seqlen", run.calibration, cfg.calibration),
                                   ("eval.perplexity.seqlen", run.eval.perplexity, cfg.eval.perplexity)):
        if node.seqlen != MODEL_CONTEXT:
            continue
        limit = _max_positions(model_config)
        if limit is None:
            raise ConfigError(f"{key}={MODEL_CONTEXT}, but model '{run.model.name}' declares no maximum context "
                              f"(max_position_embeddings or n_positions in its config): give {key} a number")
        log.info("%s=%s: the model's maximum context, %d tokens", key, MODEL_CONTEXT, limit)
        node.seqlen = config_node.seqlen = limit


def plan_run(cfg: DictConfig) -> Plan:
    """Every check on the configuration, and the run's identity."""
    run = settings(cfg)
    placement = Placement(resolve_device(run.device), **asdict(run.placement))
    source = resolve_source(run.model, run.paths.cache)
    model_config = load_config(source)
    _resolve_model_context(cfg, run, model_config)
    shapes = skeleton(model_config, source.trust_remote_code)
    check_architecture(model_config, shapes)
    targets = Targets.from_config(run.targets, run.ignore)
    targets.check(prunable_names(shapes), linears_outside_blocks(shapes))
    layers = linear_shapes(shapes, targets.selects)
    given = None
    if run.mask_from is not None:
        check_layers(run.mask_from, layers)
        given = load_masks(run.mask_from)
    method = build_method(cfg.score, cfg.sparsity, cfg.refine, given)
    allocation = _plan_allocation(cfg.allocation, method, shapes, targets)
    calibrated = needs_calibration(method, allocation)
    _check_experts(shapes, method, run.calibration.batch_size if calibrated else 1)
    data_identity = _check_data(run, calibrated, source, model_config.bos_token_id)
    zeroshot = _plan_zeroshot(run, source)
    for layer, (d_out, d_in) in layers.items():
        method.check_layer(layer, d_out, d_in)
    if given is not None and not method.pattern.params.permutes:  # in a permuted order: checked per layer, by the driver
        _check_given_masks(method, layers)
    weight_bytes = sum(parameter.numel() for parameter in shapes.parameters()) * DTYPES[run.model.dtype].itemsize
    check_save_target(run.save_model, run.save_semi_structured, method, weight_bytes)
    if run.save_semi_structured and not targets.is_default:
        raise ConfigError("save_semi_structured exports every matrix of the blocks in the 2:4 format; with targets or "
                          "ignore some stay dense: leave both at their defaults or set save_semi_structured=false")
    limit = _max_positions(model_config)
    lengths = {"eval.perplexity.seqlen": run.eval.perplexity.seqlen}
    if calibrated:
        lengths["calibration.seqlen"] = run.calibration.seqlen
    for key, length in lengths.items():
        if limit is not None and length > limit:
            raise ConfigError(f"{key}={length} exceeds the model's {limit} positions")
    identity = run_identity(
        OmegaConf.to_container(cfg, resolve=True), method.describe(), source.identity(), placement.compute.type,
        numerics(placement.compute), data_identity, zeroshot.identity() if zeroshot else None,
        read_mask_sha256(run.mask_from) if run.mask_from else None,
    )
    return Plan(cfg, run, method, source, placement, targets, allocation, zeroshot, model_config.vocab_size, identity)


def _check_experts(shapes, method: PruningMethod, batch_size: int) -> None:
    """Expert statistics the model's layout can give: router weights only reach fused experts, and a list of
    expert modules sees the tokens of a whole batch at once, so it needs one sequence per forward."""
    _, blocks = find_blocks(shapes)
    fused = any(find_experts(block) for block in blocks)
    listed = any(find_expert_lists(block) for block in blocks)
    if method.routing == "gate" and not fused:
        layout = "stores its experts as a list of modules" if listed else "has no mixture-of-experts layer"
        raise ConfigError(f"score.routing=gate weighs expert statistics by the router's weights, which symprune reads "
                          f"from fused experts; this model {layout}: use score.routing=none")
    if listed and batch_size > 1:
        raise ConfigError(f"calibration.batch_size={batch_size}: this model stores its experts as a list of modules, "
                          f"which receive the routed tokens of a whole batch together, so an expert's statistics "
                          f"could not count sequences; use calibration.batch_size=1")


def _plan_allocation(node, method: PruningMethod, shapes, targets: Targets) -> Built:
    """The allocation, checked against the pattern and (for rules that measure nothing) against the model's
    matrices, so a bad list or spread fails here."""
    allocation = ALLOCATIONS.build(node)
    if not allocation.meta("varies", True):
        return allocation
    if not method.allocates:
        raise ConfigError(f"allocation={allocation.name} gives the matrices different ratios, but sparsity pattern "
                          f"'{method.pattern.name}' fixes its own in every matrix: use allocation=uniform")
    if method.given is not None:
        raise ConfigError(f"mask_from applies saved masks; allocation={allocation.name} cannot change their ratios: "
                          f"use allocation=uniform")
    if allocation.meta("block_evidence") is None and allocation.meta("matrix_evidence") is None:
        prefix, _ = find_blocks(shapes)
        layout = matrix_layout(prefix, select_matrices(shapes, targets))
        ratios = allocation.fn(layout, method.target_sparsity, None)
        check_ratios(layout, ratios, allocation.name, "choose other ratios or a lower sparsity.ratio")
    return allocation


def _check_given_masks(method: PruningMethod, layers: dict[str, tuple[int, int]]) -> None:
    """Saved masks (mask_from) must keep the configured pattern, like any mask the run would make."""
    for name in layers:
        problem = method.contract.violation(method.given.mask(name))
        if problem is not None:
            raise ConfigError(f"mask_from: the mask of layer {name} does not keep the configured sparsity pattern "
                              f"({problem}); set sparsity to the pattern the masks were made with")


def _check_data(run: RunConfig, calibrated: bool, source: ModelSource, bos_token_id: int | None) -> dict[str, Any]:
    """Every corpus the run reads exists and suits the model (text needs a tokenizer, a BOS per window
    needs a BOS token); returns each split's identity, by ``<part>/<name>``."""
    parts = {"calibration": [run.calibration.name] if calibrated else []}
    parts["evaluation"] = list(run.eval.perplexity.datasets)
    bos = {"calibration": ("calibration.bos", run.calibration.bos), "evaluation": ("eval.perplexity.bos", run.eval.perplexity.bos)}
    for part, names in parts.items():
        key, mode = bos[part]
        if names and mode == "window" and bos_token_id is None:
            raise ConfigError(f"{key}=window, but model '{run.model.name}' has no BOS token (bos_token_id in its "
                              f"config); valid here: stream, none")
        for name in names:
            corpus = data.dataset(name)
            corpus.check(part, run.paths.assets, run.eval.perplexity.max_windows)
            if not corpus.needs_tokenizer and mode != "stream":
                raise ConfigError(f"{key}={mode} applies to text; the {part} data '{name}' is token ids, read as they "
                                  f"are: set {key}=stream")
            if corpus.needs_tokenizer and not source.has_tokenizer:
                raise ConfigError(
                    f"the {part} data '{name}' is text, but model '{run.model.name}' is synthetic and has no tokenizer: "
                    f"use token ids (calibration=random, eval=perplexity_random, or a token file .pt/.npy)"
                )
    labels = [data.label(name) for name in parts["evaluation"]]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"eval.perplexity.datasets names {', '.join(repeated)} more than once")
    return {f"{part}/{data.label(name)}": data.dataset(name).identity(part, run.paths.assets)
            for part, names in parts.items() for name in names}


def _plan_zeroshot(run: RunConfig, source: ModelSource) -> ZeroShotSuite | None:
    if not run.eval.zeroshot.tasks:
        return None
    if not source.has_tokenizer:
        raise ConfigError(f"zero-shot tasks need a tokenizer, and model '{run.model.name}' is synthetic: set eval.zeroshot.tasks=[]")
    from symprune.evaluate.zeroshot import plan_suite

    return plan_suite(run.eval.zeroshot, run.paths.assets)
