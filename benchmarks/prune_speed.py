"""Pruning and evaluation cost against their floors, measured in one run on one model and calibration set.

- floor: capturing block 0's inputs, then two forward passes of every block over the calibration
  activations, with no pruning work: the least any layer-wise method must do;
- each method: the full layer-wise prune (capture, statistics pass, scores, masks, refinement,
  propagation pass) of a fresh copy of the dense model;
- evaluation: symprune's perplexity against a bare loop of forward passes over the same windows.

Each measurement is repeated (--repeats, interleaved with the floor) and the median ratio is
reported, with the peak resident memory (CPU) or peak allocated memory (CUDA) of each phase.

    SYMPRUNE_ASSETS=../shared/assets python benchmarks/prune_speed.py
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psutil
import torch
from hydra import compose, initialize_config_dir

import symprune.config  # noqa: F401  (the run schema)
from symprune.driver import capture_block_inputs, prune_model, run_block
from symprune.evaluate.perplexity import perplexity
from symprune.models import find_blocks
from symprune.placement import ActivationStore
from symprune.runner import load_inputs, load_placed_model, plan_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
METHODS = {
    "magnitude": ["score=magnitude"],
    "wanda": ["score=wanda"],
    "ria": ["score=ria"],
    "general_sym": ["score=general_sym"],
    "sparsegpt": ["score=sparsegpt"],
    "dsnot": ["score=wanda", "refine=dsnot", "sparsity.group=row"],
    "r2dsnot": ["score=wanda", "refine=r2dsnot", "sparsity.group=row"],
}


class PeakMemory:
    """Peak CPU resident memory (sampled every 5 ms) or peak CUDA allocated memory during a with-block."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        process, done = psutil.Process(), threading.Event()
        self.peak = process.memory_info().rss

        def sample():
            while not done.wait(0.005):
                self.peak = max(self.peak, process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            done.set()
            sampler.join()


def timed(function, device: torch.device) -> tuple[float, int]:
    memory = PeakMemory(device)
    with memory.measure():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, memory.peak


@torch.inference_mode()
def floor(model, calibration, plan) -> None:
    """Capture block 0's inputs, then every block twice over the activations: no statistics, no pruning."""
    _, blocks = find_blocks(model)
    with ActivationStore(plan.placement) as store:
        inputs = capture_block_inputs(model, blocks[0], calibration, plan.settings.calibration.batch_size, store, False)
        for block in blocks:
            run_block(block, inputs, plan.device)
            run_block(block, inputs, plan.device, inputs.spare)
            inputs.advance()


@torch.inference_mode()
def bare_loop(model, tokens, seqlen, windows, device) -> None:
    stream = tokens.reshape(-1)[: windows * seqlen].reshape(windows, seqlen)
    for window in stream:
        model(window.unsqueeze(0).to(device), use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the Markdown report here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (model, calibration, device, ...)")
    args = parser.parse_args()
    base = ["calibration.nsamples=16", "calibration.seqlen=512", "eval.perplexity.datasets=[wikitext2]",
            "eval.perplexity.seqlen=1024", "eval.perplexity.max_windows=8", "progress=false", *args.overrides]
    names = args.methods.split(",")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plans = {name: plan_run(compose("config", overrides=[*base, *METHODS[name]])) for name in names}
    # the floor runs the calibration pass, so the inputs come from a method that needs calibration
    plan = next((plan for plan in plans.values() if plan.needs_calibration), None)
    if plan is None:
        raise SystemExit("--methods: the floor needs calibration; include a method that uses statistics")
    run = plan.settings
    inputs = load_inputs(plan)
    calibration, tokens = inputs.calibration, inputs.streams["wikitext2"]
    dense = load_placed_model(plan)
    device = plan.device

    results: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, int] = {}
    floors = []
    for _ in range(args.repeats):
        seconds, peaks["floor"] = timed(lambda: floor(dense, calibration, plan), device)
        floors.append(seconds)
        for name in names:
            model = copy.deepcopy(dense)
            method_plan = plans[name]
            prune = partial(prune_model, model, method_plan.method, calibration, batch_size=run.calibration.batch_size,
                            placement=method_plan.placement, progress=False)
            seconds, peaks[name] = timed(prune, device)
            results[name].append(seconds / floors[-1])
            del model

    eval_settings = run.eval.perplexity
    eval_ratios = []
    for _ in range(args.repeats):
        bare, _ = timed(lambda: bare_loop(dense, tokens, eval_settings.seqlen, eval_settings.max_windows, device), device)
        ours, peaks["evaluation"] = timed(
            lambda: perplexity(dense, tokens, eval_settings.seqlen, max_windows=eval_settings.max_windows,
                               device=device, progress=False),
            device,
        )
        eval_ratios.append(ours / bare)

    memory_kind = "peak CUDA allocated" if device.type == "cuda" else "peak CPU RSS"
    lines = [
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {device}; model {run.model.name} ({run.model.dtype}); calibration {run.calibration.name} "
        f"{run.calibration.nsamples} x {run.calibration.seqlen}, batch {run.calibration.batch_size}; "
        f"median of {args.repeats} interleaved repeats.",
        "",
        f"| phase | time / floor | {memory_kind} (GiB) |",
        "|---|---|---|",
        f"| floor (capture + 2 block passes) | 1.00 | {peaks['floor'] / 2**30:.2f} |",
    ]
    for name in names:
        lines.append(f"| {name} | {statistics.median(results[name]):.3f} | {peaks[name] / 2**30:.2f} |")
    lines += [
        "",
        f"| evaluation ({eval_settings.max_windows} windows of {eval_settings.seqlen}) | time / bare forward loop | "
        f"{memory_kind} (GiB) |",
        "|---|---|---|",
        f"| perplexity | {statistics.median(eval_ratios):.3f} | {peaks['evaluation'] / 2**30:.2f} |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
