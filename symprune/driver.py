"""The layer-wise pruning loop (algorithms.md §5), the same for every decoder-only family.

1. Run the embeddings on the calibration samples and capture what decoder block 0
   receives: its hidden states and every other positional and keyword argument
   (attention mask, position ids, rotary embeddings, cache position, flags).
2. Per block: one pass with statistics hooks on its linear layers, then each
   layer's mask from the method, applied to the weights, then one pass of the
   pruned block to produce the next block's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from symprune.method import PruningMethod
from symprune.models import find_blocks, find_linears, weight_matrix
from symprune.stats import LayerStats, StatsAccumulator
from symprune.timing import Timings


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    zeros: int
    numel: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel


@dataclass
class PruneReport:
    layers: list[LayerReport]

    @property
    def overall_sparsity(self) -> float:
        """Zeros over weights of all pruned linear layers, measured on the weights."""
        return sum(layer.zeros for layer in self.layers) / sum(layer.numel for layer in self.layers)


@dataclass
class BlockInputs:
    """Hidden states entering the current block, and the other arguments blocks receive.

    Every calibration sample has the same length and no padding, so the extra
    arguments depend only on the batch size: one captured set per batch size.
    """

    hidden: torch.Tensor  # (samples, tokens, hidden size)
    extra_by_batch: dict[int, tuple[tuple, dict]]
    batch_size: int

    def batches(self):
        for start in range(0, self.hidden.shape[0], self.batch_size):
            hidden = self.hidden[start : start + self.batch_size]
            args, kwargs = self.extra_by_batch[hidden.shape[0]]
            yield start, hidden, args, kwargs


class _BlockReached(Exception):
    """Raised by the capture hook to stop the forward pass at decoder block 0."""


def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, input_ids: torch.Tensor, batch_size: int, device, progress: bool
) -> BlockInputs:
    hidden: list[torch.Tensor] = []
    extra_by_batch: dict[int, tuple[tuple, dict]] = {}

    def record(module, args, kwargs):
        kwargs = dict(kwargs)
        states = args[0] if args else kwargs.pop("hidden_states")
        hidden.append(states)
        extra_by_batch.setdefault(states.shape[0], (tuple(args[1:]), kwargs))
        raise _BlockReached

    handle = first_block.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for start in tqdm(range(0, input_ids.shape[0], batch_size), desc="calibration", disable=not progress):
            try:
                model(input_ids[start : start + batch_size].to(device), use_cache=False)
            except _BlockReached:
                pass
    finally:
        handle.remove()
    return BlockInputs(torch.cat(hidden), extra_by_batch, batch_size)


def run_block(block: nn.Module, inputs: BlockInputs) -> torch.Tensor:
    """The block's outputs for every calibration sample (blocks may return a tensor or a tuple)."""
    outputs = torch.empty_like(inputs.hidden)
    for start, hidden, args, kwargs in inputs.batches():
        out = block(hidden, *args, **kwargs)
        outputs[start : start + hidden.shape[0]] = out[0] if isinstance(out, tuple) else out
    return outputs


def collect_stats(block: nn.Module, linears: dict[str, nn.Module], inputs: BlockInputs, wanted, device):
    """One pass of the block with hooks feeding every linear's inputs to its accumulator.

    Some layers see their input flattened to (batch·tokens, d_in) (OPT's MLP); the
    hooks restore the sequence axis from the batch entering the block, so the
    statistics always count sequences.
    """
    accumulators = {
        name: StatsAccumulator(weight_matrix(layer).shape[1], wanted, device, d_out=weight_matrix(layer).shape[0])
        for name, layer in linears.items()
    }
    batch = {"size": 1}

    def enter_block(module, args, kwargs):
        batch["size"] = (args[0] if args else kwargs["hidden_states"]).shape[0]

    def add(accumulator: StatsAccumulator, layer_input: torch.Tensor, output: torch.Tensor) -> None:
        size = batch["size"]
        accumulator.add_batch(layer_input.reshape(size, -1, layer_input.shape[-1]), output.reshape(size, -1, output.shape[-1]))

    handles = [block.register_forward_pre_hook(enter_block, with_kwargs=True)]
    handles += [
        layer.register_forward_hook(lambda module, args, output, acc=accumulators[name]: add(acc, args[0], output))
        for name, layer in linears.items()
    ]
    try:
        run_block(block, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: accumulator.stats for name, accumulator in accumulators.items()}


@torch.inference_mode()
def prune_model(
    model: nn.Module,
    method: PruningMethod,
    calibration_ids: torch.Tensor | None,
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    timings: Timings | None = None,
    progress: bool = True,
) -> PruneReport:
    """Prune every linear layer of every decoder block in place; embeddings and LM head stay dense.

    ``calibration_ids`` (samples × tokens) may be None only for methods that need
    no statistics (magnitude, RI): those prune every layer from its weights alone.
    """
    timings = timings or Timings()
    prefix, blocks = find_blocks(model)
    wanted = method.required_stats
    inputs = None
    if wanted:
        if calibration_ids is None:
            raise ValueError(f"the method needs calibration statistics {sorted(wanted)} but no calibration data was given")
        with timings.measure("calibration_forward"):
            inputs = capture_block_inputs(model, blocks[0], calibration_ids, batch_size, device, progress)

    reports: list[LayerReport] = []
    for index, block in enumerate(tqdm(blocks, desc="pruning blocks", disable=not progress)):
        linears = find_linears(block)
        stats = {}
        if inputs is not None:
            with timings.measure("calibration_forward"):
                stats = collect_stats(block, linears, inputs, wanted, device)
        with timings.measure("scoring"):
            for name, layer in linears.items():
                full_name = f"{prefix}.{index}.{name}"
                weight = weight_matrix(layer)
                result = method.prune_layer(full_name, weight, stats.get(name, LayerStats()))
                if result.weight is not None:
                    weight.copy_(result.weight)
                weight.masked_fill_(result.pruned, 0)
                zeros = int((weight == 0).sum())
                reports.append(LayerReport(full_name, tuple(weight.shape), zeros, weight.numel(), result.info))
        del stats
        if inputs is not None and index + 1 < len(blocks):
            with timings.measure("propagation"):
                inputs.hidden = run_block(block, inputs)
    return PruneReport(reports)
