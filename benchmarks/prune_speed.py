"""Pruning and evaluation cost against their floors, measured in one run on one model and calibration set.

- floor: capturing block 0's inputs, then two forward passes of every block over the calibration
  activations, with no pruning work: the least any layer-wise method must do;
- each method: the full layer-wise prune (capture, statistics pass, scores, masks, refinement,
  propagation pass) of a freshly loaded (or, synthetic, freshly built) dense model;
- evaluation: symprune's perplexity against a bare loop of forward passes over the same windows.

Each measurement is repeated (--repeats, each method between two floors and divided by their mean,
each repeat starting one method later than the one before). The report shows, per method and per
driver phase (calibration_forward, allocation, scoring, propagation, the rest), the median, min and
max over the repeats of its time counted in its own plain block passes over the floor's count
(pass_ratio: the floor and every method with statistics make the same propagation passes, so the
speed the machine ran at during a measurement cancels out), its time per pass over the floor's, its
wall time / the floors' around it, and the same for the process's CPU time (user + system, all
threads), with its page faults. Memory comes from a first, untimed round
(the evaluation, the floor and every method once, under the default malloc, each with the memory freed
before handed back to the system; it also warms the process up): the peak resident memory (CPU) or
the peak allocated GPU memory (CUDA) above what the process held when it started (the loaded dense
model and the calibration tokens), and the absolute peak. The timed repeats run on a steady allocator
and keep the memory the process frees (steady_allocator, pre_touch_heap, warm_heap); the garbage
collector runs before each measurement and is paused during it. With offloaded blocks
(placement=offload) the report adds the memory bound such a run should stay under: the weights that
stay on the device, two blocks, one calibration batch's activations and one block's statistics.
--targets PROFILE checks the limits listed for PROFILE in benchmarks/targets.yaml (--target adds
one), a time limit on the median of at least 3 repeats (fewer are refused with a time target);
--json and --out write the report (first line: the command); --readme rewrites the profile's
section of benchmarks/README.md with the report.

    SYMPRUNE_ASSETS=../shared/assets python benchmarks/prune_speed.py --repeats 5 --targets cpu \\
        --readme benchmarks/README.md
    python benchmarks/prune_speed.py --methods wanda,sparsegpt --json speed.json model=synthetic \\
        model.size=llama2_7b model.dtype=bfloat16 calibration=random eval=perplexity_random device=cuda
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import functools
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import torch
import yaml
from hydra import compose, initialize_config_dir

from symprune.config import CONFIG_DIR  # importing it registers the run schema
from symprune.evaluate.perplexity import perplexity
from symprune.model.placement import ActivationStore, streamed, visiting
from symprune.model.structure import find_blocks, find_linears, weight_matrix
from symprune.prune.driver import capture_block_inputs, prune_model, run_block
from symprune.run.plan import Plan, plan_run
from symprune.run.runner import load_inputs, load_placed_model
from symprune.timing import Timings

try:
    import resource
except ImportError:  # not on Windows: CPU time from time.process_time, no page faults
    resource = None

METHODS = {
    "magnitude": ["score=magnitude"],
    "wanda": ["score=wanda"],
    "ria": ["score=ria"],
    "stochria": ["score=stochria"],
    "general_sym": ["score=general_sym"],
    "sparsegpt": ["score=sparsegpt"],
    "dsnot": ["score=wanda", "refine=dsnot", "sparsity.group=row"],
    "r2dsnot": ["score=wanda", "refine=r2dsnot", "sparsity.group=row"],
    "wanda_owl": ["score=wanda", "allocation=owl"],
}
DEFAULT_METHODS = ["magnitude", "wanda", "ria", "general_sym", "sparsegpt", "dsnot", "r2dsnot", "wanda_owl"]
# the benchmark's defaults, before the command line's overrides; evaluation times the first perplexity set
BASE_OVERRIDES = ["calibration.nsamples=16", "calibration.seqlen=512", "eval.perplexity.seqlen=1024",
                  "eval.perplexity.max_windows=8", "progress=false", "logger=none"]
TARGET = re.compile(r"^(?P<phase>\w+)\.(?P<metric>pass_ratio|ratio|seconds|peak_gib|own_peak_gib)"
                    r"<=(?P<limit>[0-9.]+|bound)$")
TIME_METRICS = ("pass_ratio", "ratio", "seconds")
PASS_PHASE = "propagation"  # the plain block passes the floor and every method with statistics make: the same work
MIN_REPEATS = 3  # a time target is judged on the median of at least this many repeats
TARGETS_FILE = Path(__file__).with_name("targets.yaml")  # every profile's limits, the one place they are written
STATISTIC_SIZES = {"sq_norm": "d_in", "mean_sum": "d_in", "var": "d_in", "out_sq_norm": "d_out", "hessian": "d_in2"}
GIB = 2**30


def size(bytes_: float) -> str:
    return f"{bytes_ / GIB:.2f} GiB" if bytes_ >= GIB / 10 else f"{bytes_ / 2**20:.1f} MiB"


def load_targets(profile: str) -> list[str]:
    """The targets of ``profile`` in benchmarks/targets.yaml, as PHASE.METRIC<=LIMIT strings."""
    profiles = yaml.safe_load(TARGETS_FILE.read_text())
    if profile not in profiles:
        raise SystemExit(f"--targets: unknown profile '{profile}'; {TARGETS_FILE.name} has: {', '.join(profiles)}")
    return [f"{key}<={limit}" for key, limits in profiles[profile].items()
            for limit in (limits if isinstance(limits, list) else [limits])]


class PeakMemory:
    """Peak CPU resident memory or peak CUDA allocated memory during a with-block, and what the process held
    when the block started (``own``: the block's own peak above it).

    On Linux the CPU peak is the kernel's own high-water mark (``VmHWM``), reset to the current resident size
    when the block starts: exact, however short the peak. Where the kernel cannot reset it, or does not see a
    freed allocation in it (``kernel_peak_is_exact``), a thread samples the resident size every 5 ms, which can
    miss a peak shorter than that."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = self.peak = 0

    @property
    def own(self) -> int:
        return max(self.peak - self.start, 0)

    @contextmanager
    def measure(self):
        release(self.device)  # freed memory still resident would take the block's allocations without a rise
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            yield
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif kernel_peak_is_exact():
            reset_high_water_mark()
            self.start = psutil.Process().memory_info().rss
            yield
            self.peak = max(high_water_mark(), self.start)
        else:
            with self.sampled():
                yield

    @contextmanager
    def sampled(self):
        process, done = psutil.Process(), threading.Event()
        self.start = self.peak = process.memory_info().rss

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


def reset_high_water_mark() -> bool:
    """Set the kernel's peak resident size of this process to its current one; False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return high_water_mark() > 0
    except OSError:
        return False


@functools.cache
def kernel_peak_is_exact() -> bool:
    """Whether the kernel's high-water mark can be reset and then records an allocation freed before it is read:
    checked once with 64 MiB. Some kernels update it lazily (a freed allocation never reaches it), some ignore
    the reset; the sampler measures there."""
    release(torch.device("cpu"))
    if not reset_high_water_mark():
        return False
    start = psutil.Process().memory_info().rss
    touched = torch.ones(16 * 2**20)
    del touched
    recorded = high_water_mark() - start >= 56 * 2**20
    release(torch.device("cpu"))
    return recorded and reset_high_water_mark() and high_water_mark() < start + 32 * 2**20


def high_water_mark() -> int:
    """The kernel's peak resident size of this process in bytes (0 where /proc does not report it)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


@dataclass(frozen=True)
class Usage:
    """What this process (all its threads) and, on Linux, the whole machine had used at one moment."""

    wall: float
    user: float
    system: float
    minor_faults: int
    major_faults: int
    involuntary_switches: int  # this process preempted: another thread or process took its CPU
    machine_busy: float | None = None  # CPU seconds every process used (/proc/stat; None elsewhere)
    machine_steal: float | None = None  # CPU seconds the hypervisor gave other guests

    @classmethod
    def now(cls, machine: bool = True) -> Usage:
        own = resource.getrusage(resource.RUSAGE_SELF) if resource is not None else None
        busy, steal = machine_seconds() if machine else (None, None)
        if own is None:
            return cls(time.perf_counter(), time.process_time(), 0.0, 0, 0, 0, busy, steal)
        return cls(time.perf_counter(), own.ru_utime, own.ru_stime, own.ru_minflt, own.ru_majflt, own.ru_nivcsw,
                   busy, steal)

    def since(self, start: Usage) -> dict[str, float]:
        """Seconds of wall and CPU time (user + system), page faults and preemptions from ``start`` to this
        one; with the machine's counters also the CPU seconds of every other process and the steal."""
        cpu = self.user - start.user + self.system - start.system
        used = {"seconds": self.wall - start.wall, "cpu_seconds": cpu, "system_seconds": self.system - start.system,
                "minor_faults": self.minor_faults - start.minor_faults,
                "major_faults": self.major_faults - start.major_faults,
                "involuntary_switches": self.involuntary_switches - start.involuntary_switches}
        if self.machine_busy is not None and start.machine_busy is not None:
            used["others_cpu_seconds"] = max(self.machine_busy - start.machine_busy - cpu, 0.0)  # in 10 ms ticks
            used["steal_seconds"] = self.machine_steal - start.machine_steal
        return used


USAGE_KEYS = ("seconds", "cpu_seconds", "system_seconds", "minor_faults", "major_faults", "involuntary_switches",
              "others_cpu_seconds", "steal_seconds")
PHASE_KEYS = USAGE_KEYS[:5]  # what a driver phase records (the machine's counters only per measurement)
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_seconds() -> tuple[float | None, float | None]:
    """CPU seconds every process of the machine used (user, nice, system, irq, softirq) and the steal, from
    /proc/stat's first line; (None, None) where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None, None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


class PhaseTimings(Timings):
    """The driver's phase timings (symprune.timing.Timings: wall time per phase), each phase's CPU time, system
    time and page faults beside them in ``usage``."""

    def __init__(self):
        super().__init__()
        self.usage: dict[str, dict[str, float]] = {}
        self.calls: dict[str, int] = {}  # how often each phase was entered (PASS_PHASE: the passes made)

    @contextmanager
    def measure(self, phase: str):
        totals = self.usage.setdefault(phase, dict.fromkeys(PHASE_KEYS, 0))  # listed in the order phases start
        self.calls[phase] = self.calls.get(phase, 0) + 1
        start = Usage.now(machine=False)
        try:
            with super().measure(phase):
                yield
        finally:
            for key, value in Usage.now(machine=False).since(start).items():
                if key in totals:
                    totals[key] += value


class TimedEvidence:
    """An allocation (registry.Built) whose block evidence (OWL's outlier ratio of each block's dense scores) is
    timed as the phase ``allocation.evidence``, inside ``allocation``; everything else is the allocation's."""

    def __init__(self, built, timings: Timings):
        self._built, self._timings = built, timings

    def __getattr__(self, name: str):
        return getattr(self._built, name)

    def meta(self, key: str, default: Any = None) -> Any:
        value = self._built.meta(key, default)
        if key != "block_evidence" or value is None:
            return value

        def measure(scores):
            with self._timings.measure("allocation.evidence"):
                return value(scores)

        return measure


@dataclass
class Measurement:
    """One timed run: ``usage`` (Usage.since), its memory, its driver phases' usage and the objects in reference
    cycles it left behind (found by the collection after it; while it ran the collector was paused)."""

    usage: dict[str, float]
    memory: PeakMemory | None  # None: a timed repeat, whose memory the memory round measured
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    unreachable: int = 0
    passes: int = 0  # the plain block passes it made (its PASS_PHASE), timed one by one

    @property
    def seconds(self) -> float:
        return self.usage["seconds"]

    @property
    def cpu_seconds(self) -> float:
        return self.usage["cpu_seconds"]


@contextmanager
def collector_paused():
    """No automatic garbage collection in the with-block: a collection at a point that depends on how many
    objects the run happened to allocate before would land in one repeat and not the other."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, timings: PhaseTimings | None = None, memory: bool = True) -> Measurement:
    """Run ``function`` once: its wall and CPU time, page faults, (``timings``, which ``function`` fills) its
    driver phases and, with ``memory``, its peak memory. Garbage is collected first and the collector paused
    while it runs; with ``memory`` freed memory is handed back to the system first (a timed repeat keeps it:
    see warm_heap)."""
    peak = PeakMemory(device) if memory else None
    with peak.measure() if peak is not None else warm_heap(), collector_paused():
        synchronize(device)
        start = Usage.now()
        function()
        synchronize(device)
        usage = Usage.now().since(start)
    return Measurement(usage, peak, timings.usage if timings is not None else {}, gc.collect())


@contextmanager
def warm_heap():
    """Before a timed repeat: garbage collected, but the memory it frees and all the process freed before stays
    with the process (no malloc_trim, no CUDA empty_cache; with steady_allocator, glibc does not trim either).
    Handing it back before every measurement, as the memory round must, made every measurement fault its pages
    in again, as many as the allocator's placement of each tensor in the holes that the model's loading left
    happened to touch: 73 k to 162 k minor faults for one Wanda prune from one repeat to the next in one check
    run (SmolLM2, calibration 4 x 256), 13 k to 150 k for R2-DSnoT's, up to half a second of system time."""
    gc.collect()
    yield


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's own largest dynamic threshold on 64-bit systems


def steady_allocator() -> str:
    """glibc's malloc made the same in every timed repeat (after the memory round, which measures under glibc's
    defaults, as a run uses it): tensors under 32 MiB from the heap (the largest threshold glibc's dynamic one
    reaches, fixed instead of rising with what was freed so far) and no automatic trimming of the heap's top
    (an explicit malloc_trim still hands memory back). With glibc's defaults a repeat could fault in 7 k or
    100 k pages depending on where its predecessors' frees left the heap; with these and the heap warm, the
    timed repeats of one check run faulted none. The same as MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=-1 from the start. Returns what the report says of it."""
    mallopt = getattr(LIBC, "mallopt", None) if LIBC is not None else None
    if mallopt is None or not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, -1)):
        return "the C library's defaults"
    return "glibc's, tensors under 32 MiB from the heap, no automatic trim"


def pre_touch_heap(size: int) -> None:
    """Grow the heap by ``size`` bytes of written pages and free them: with steady_allocator it keeps them, so the
    timed repeats, which need no more than the memory round's largest own peak, find their pages resident
    instead of faulting them in, in the first repeat more than in the others."""
    chunk = MMAP_THRESHOLD // 2  # from the heap, not mapped on its own
    blocks = [torch.ones(chunk // 4) for _ in range(size // chunk + 1)]
    del blocks


@torch.inference_mode()
def floor(model, calibration, plan: Plan, timings: Timings | None = None) -> None:
    """Capture block 0's inputs, then every block twice over the activations: no statistics, no pruning. Timed
    as the driver's phases: the capture and the first pass as calibration_forward, the second as propagation."""
    timings = timings or Timings()
    _, blocks = find_blocks(model)
    with ActivationStore(plan.placement) as store:
        with timings.measure("calibration_forward"):
            inputs = capture_block_inputs(model, blocks, calibration, plan.settings.calibration.batch_size, store,
                                          False)
        for block in blocks:
            with visiting(block, plan.placement):
                device = plan.placement.block_device(block)
                with timings.measure("calibration_forward"):
                    run_block(block, inputs, device)
                with timings.measure("propagation"):
                    run_block(block, inputs, device, inputs.spare)
            inputs.advance()


@torch.inference_mode()
def bare_loop(model, tokens, seqlen, windows, device) -> None:
    stream = tokens.reshape(-1)[: windows * seqlen].reshape(windows, seqlen)
    for window in stream:
        model(window.unsqueeze(0).to(device), use_cache=False)


def measure(name: str, plan: Plan, method_plan: Plan | None, calibration, report: Report | None = None,
            memory: bool = False) -> Measurement:
    """The floor's or one method's prune (``method_plan``), on a freshly loaded dense model: a timed repeat, or
    (``memory``) the memory round's measurement."""
    if memory:
        release(plan.device)
    else:
        gc.collect()  # the model of the measurement before is gone; the memory it held stays with the process
    model = load_placed_model(plan)
    timings = PhaseTimings()
    if method_plan is None:
        measurement = timed(lambda: floor(model, calibration, plan, timings), plan.device, timings, memory)
    else:
        if plan.placement.offload_blocks and report is not None:
            report.bounds[name] = memory_bound(model, plan, method_plan)
        allocation = TimedEvidence(method_plan.allocation, timings)
        measurement = timed(lambda: prune_model(
            model, method_plan.method, calibration, batch_size=plan.settings.calibration.batch_size,
            placement=method_plan.placement, progress=False, targets=method_plan.targets, allocation=allocation,
            timings=timings), plan.device, timings, memory)
    measurement.passes = timings.calls.get(PASS_PHASE, 0)
    return measurement


def memory_round(names: list[str], plan: Plan, plans: dict[str, Plan], calibration, report: Report) -> None:
    """The floor and every method once, before the timed repeats, each with the memory it freed before handed
    back to the system, for its own peak memory. It is also their warm-up: what a process does once (the first
    call of a kernel, a cache filled, the heap grown to the size the prunes need) is not charged to the first
    repeat."""
    for name in ["floor", *names]:
        report.add_memory(name, measure(name, plan, None if name == "floor" else plans[name], calibration, report,
                                        memory=True))


@contextmanager
def evaluation_loops(plan: Plan, streams: dict[str, torch.Tensor]):
    """A freshly loaded model and the two loops the evaluation times on the windows of the first perplexity set:
    symprune's perplexity and a bare forward loop, after one untimed window."""
    settings, device = plan.settings.eval.perplexity, plan.device
    dataset, tokens = next(iter(streams.items()))
    gc.collect()
    model = load_placed_model(plan)
    input_device = model.get_input_embeddings().weight.device
    windows = min(settings.max_windows or tokens.numel() // settings.seqlen, tokens.numel() // settings.seqlen)
    with streamed(find_blocks(model)[1], plan.placement):
        bare_loop(model, tokens, settings.seqlen, 1, input_device)
        yield SimpleNamespace(
            dataset=dataset, windows=windows, seqlen=settings.seqlen,
            evaluate=lambda: perplexity(model, tokens, settings.seqlen, max_windows=windows, device=input_device,
                                        progress=False),
            bare=lambda: bare_loop(model, tokens, settings.seqlen, windows, input_device))


def evaluation_memory(plan: Plan, streams: dict[str, torch.Tensor]) -> PeakMemory:
    """The memory of one perplexity run (the memory round's evaluation)."""
    with evaluation_loops(plan, streams) as loops:
        return timed(loops.evaluate, plan.device).memory


def measure_evaluation(plan: Plan, streams: dict[str, torch.Tensor], repeats: int,
                       memory: PeakMemory) -> dict[str, Any]:
    """symprune's perplexity against a bare forward loop over the same windows, each perplexity divided by the
    bare loop just before it; ``memory``: evaluation_memory's."""
    bare, ours = [], []
    with evaluation_loops(plan, streams) as loops:
        for _ in range(repeats):
            bare.append(timed(loops.bare, plan.device, memory=False))
            ours.append(timed(loops.evaluate, plan.device, memory=False))
    return evaluation_entry(loops.dataset, loops.windows, loops.seqlen, ours, bare, memory)


def evaluation_entry(dataset: str, windows: int, seqlen: int, ours: list[Measurement], bare: list[Measurement],
                     memory: PeakMemory) -> dict[str, Any]:
    """The evaluation's report: each perplexity measurement against the bare loop measured just before it, and
    the memory of the perplexity run measured before them."""
    entry = {"dataset": dataset, "windows": windows, "seqlen": seqlen,
             **{key: [m.usage.get(key) for m in ours] for key in USAGE_KEYS},
             "bare_seconds": [m.seconds for m in bare], "bare_cpu_seconds": [m.cpu_seconds for m in bare],
             "unreachable": [m.unreachable for m in ours]}
    entry.update(**ratio_fields(entry["seconds"], entry["bare_seconds"], "ratio"),
                 **ratio_fields(entry["cpu_seconds"], entry["bare_cpu_seconds"], "cpu_ratio"),
                 median_seconds=statistics.median(entry["seconds"]), peak_bytes=memory.peak, own_peak_bytes=memory.own)
    return entry


def pass_seconds(entry: dict[str, Any]) -> list[float] | None:
    """The seconds of one plain block pass (PASS_PHASE's time over its passes) in each of ``entry``'s
    measurements; None where one made no passes (a method without statistics)."""
    passes, used = entry.get("passes"), entry.get("driver_phases", {}).get(PASS_PHASE)
    if not passes or used is None or not all(passes):
        return None
    return [seconds / count for seconds, count in zip(used["seconds"], passes)]


def in_passes(seconds: list[float], pass_times: list[float]) -> list[float]:
    """Each measurement's ``seconds`` counted in its own plain block passes (``pass_times``: pass_seconds)."""
    return [value / one for value, one in zip(seconds, pass_times)]


def ratio_fields(values: list[float], denominators: list[float], name: str) -> dict[str, Any]:
    """``values`` over ``denominators`` pairwise, as ``<name>s``, and their median, min and max."""
    ratios = [value / denominator if denominator else math.nan for value, denominator in zip(values, denominators)]
    return {f"{name}s": ratios, name: statistics.median(ratios), f"{name}_min": min(ratios),
            f"{name}_max": max(ratios)}


def release(device: torch.device) -> None:
    """Give back the memory of models that are gone, to the system too, so that the next measurement's own
    peak is not hidden in memory an earlier one freed but the process kept."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def memory_bound(model, plan: Plan, method_plan: Plan) -> dict[str, int]:
    """What a run with offloaded blocks should at most hold on the device, in bytes, term by term:
    the weights outside the blocks (they stay), two blocks (the one working and the next arriving),
    one calibration batch's activations (block input and output, attention and MLP intermediates,
    one attention score matrix, the float32 copies the statistics read) and one block's statistics."""
    prefix, blocks = find_blocks(model)
    config, run = model.config, plan.settings
    element = next(model.parameters()).element_size()
    resident = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if not name.startswith(prefix + "."))
    block = max(sum(p.numel() * p.element_size() for p in b.parameters()) for b in blocks)
    shapes = [tuple(weight_matrix(layer).shape) for layer in find_linears(blocks[0]).values()]
    widest_in, widest_out = max(d_in for _, d_in in shapes), max(d_out for d_out, _ in shapes)
    tokens = run.calibration.batch_size * run.calibration.seqlen
    heads = getattr(config, "num_attention_heads", 1)
    activations = (
        (6 * config.hidden_size + 3 * widest_out) * tokens * element  # in, out, q, k, v, o; MLP intermediates
        + heads * run.calibration.seqlen**2 * run.calibration.batch_size * element  # attention scores
        + 2 * (widest_in + widest_out) * tokens * 4  # float32 copies of one layer's input and output
    )
    sizes = {"d_in": lambda d_out, d_in: d_in, "d_out": lambda d_out, d_in: d_out, "d_in2": lambda d_out, d_in: d_in**2}
    stats = sum(
        sizes[STATISTIC_SIZES[name]](d_out, d_in) * 4 for d_out, d_in in shapes for name in method_plan.method.required_stats
    )
    return {"resident weights": resident, "2 blocks": 2 * block, "activations": activations, "statistics": stats}


@dataclass
class Report:
    command: str
    context: dict[str, Any]
    memory_kind: str
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    bounds: dict[str, dict[str, int]] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    target_specs: list[str] = field(default_factory=list)  # PHASE.METRIC<=LIMIT, shown beside each phase
    orders: list[list[str]] = field(default_factory=list)  # the order the phases ran in, per repeat
    complete: bool = False  # set once every measurement is done: files written before say they are partial

    def add(self, phase: str, measurement: Measurement, floor: tuple[float, float] | None = None) -> None:
        """One repeat of ``phase``; ``floor``: the wall and CPU seconds it is divided by (the mean of the floors
        around it), None for a floor itself, which is divided by the median of all floors."""
        entry = self.phases.setdefault(phase, {"driver_phases": {}})
        repeats = len(entry.get("seconds", []))
        for key in USAGE_KEYS:
            entry.setdefault(key, []).append(measurement.usage.get(key))
        entry.setdefault("unreachable", []).append(measurement.unreachable)
        entry.setdefault("passes", []).append(measurement.passes)
        if floor is not None:
            entry.setdefault("floor_seconds", []).append(floor[0])
            entry.setdefault("floor_cpu_seconds", []).append(floor[1])
        phases = dict(measurement.phases)
        if phases:  # what no phase timed: moving blocks, progress bars, the driver's bookkeeping
            phases["other"] = {key: measurement.usage[key] - sum(used[key] for name, used in measurement.phases.items()
                                                                 if "." not in name) for key in PHASE_KEYS}
        driver = entry["driver_phases"]
        for name in [*driver, *(name for name in phases if name not in driver)]:
            lists = driver.setdefault(name, {key: [0] * repeats for key in PHASE_KEYS})
            for key in PHASE_KEYS:
                lists[key].append(phases.get(name, {}).get(key, 0))
        if "other" in driver:
            driver["other"] = driver.pop("other")  # shown last
        for name in self.phases if phase == "floor" else [phase]:  # a floor moves every phase's pass ratio
            if self.phases[name].get("seconds"):
                self.derive(name)

    def derive(self, phase: str) -> None:
        """``phase``'s ratios (and its driver phases') with their median, min and max, from its measurements:
        wall and CPU time over the floors around each measurement, and (pass_ratio) each measurement's time
        counted in its own plain block passes over the floors' median count."""
        entry = self.phases[phase]
        if "floor_seconds" in entry:
            walls, cpus = entry["floor_seconds"], entry["floor_cpu_seconds"]
        else:  # the floor: its spread is the machine's drift over the run
            walls = [statistics.median(entry["seconds"])] * len(entry["seconds"])
            cpus = [statistics.median(entry["cpu_seconds"])] * len(entry["cpu_seconds"])
        entry.update(**ratio_fields(entry["seconds"], walls, "ratio"),
                     **ratio_fields(entry["cpu_seconds"], cpus, "cpu_ratio"),
                     median_seconds=statistics.median(entry["seconds"]))
        for used in entry["driver_phases"].values():
            used.update(**ratio_fields(used["seconds"], walls, "ratio"),
                        **ratio_fields(used["cpu_seconds"], cpus, "cpu_ratio"),
                        **ratio_fields(used["system_seconds"], cpus, "system_ratio"))
        own_pass, floor_pass = pass_seconds(entry), pass_seconds(self.phases.get("floor", {}))
        if own_pass and floor_pass:
            floor_count = statistics.median(in_passes(self.phases["floor"]["seconds"], floor_pass))
            counts, times = [floor_count] * len(own_pass), [statistics.median(floor_pass)] * len(own_pass)
            entry.update(**ratio_fields(in_passes(entry["seconds"], own_pass), counts, "pass_ratio"),
                         **ratio_fields(own_pass, times, "pass_time"))
            for used in entry["driver_phases"].values():
                used.update(**ratio_fields(in_passes(used["seconds"], own_pass), counts, "pass_ratio"))

    def add_memory(self, phase: str, measurement: Measurement) -> None:
        """``phase``'s memory, from its memory-round measurement (whose time and page faults the JSON keeps)."""
        entry = self.phases.setdefault(phase, {"driver_phases": {}})
        entry.update(peak_bytes=measurement.memory.peak, own_peak_bytes=measurement.memory.own,
                     memory_round={key: measurement.usage.get(key) for key in USAGE_KEYS})

    def repeats(self, phase: str) -> int:
        entry = self.evaluation if phase == "evaluation" else self.phases.get(phase)
        return 0 if entry is None else len(entry.get("seconds", []))

    def measured(self, phase: str, metric: str) -> tuple[float, float, float] | None:
        """The median, min and max of ``metric`` over the repeats (a peak: the largest, three times)."""
        entry = self.evaluation if phase == "evaluation" else self.phases.get(phase)
        if entry is None or (metric in TIME_METRICS and not entry.get("seconds")):
            return None
        if metric in ("ratio", "pass_ratio"):
            if metric not in entry:  # no plain passes: a method without statistics, the evaluation
                return None
            return entry[metric], entry[metric + "_min"], entry[metric + "_max"]
        if metric == "seconds":
            return entry["median_seconds"], min(entry["seconds"]), max(entry["seconds"])
        if "peak_bytes" not in entry:
            return None
        peak = {"peak_gib": entry["peak_bytes"], "own_peak_gib": entry["own_peak_bytes"]}[metric] / GIB
        return peak, peak, peak

    def check(self, target: str) -> None:
        """A time target holds when the median of at least MIN_REPEATS repeats is within its limit (fewer,
        e.g. left by --time-budget: not judged); a memory target when the largest peak is."""
        match = TARGET.match(target)
        phase, metric, limit = match["phase"], match["metric"], match["limit"]
        measured, repeats = self.measured(phase, metric), self.repeats(phase)
        if limit == "bound":
            limit_value = sum(self.bounds[phase].values()) / GIB if phase in self.bounds else None
        else:
            limit_value = float(limit)
        value, low, high = measured or (None, None, None)
        passed = None if value is None or limit_value is None else value <= limit_value
        result = {"target": target, "measured": value, "min": low, "max": high, "repeats": repeats,
                  "limit": limit_value, "passed": passed}
        if metric in TIME_METRICS and value is not None and repeats < MIN_REPEATS:
            result.update(passed=None,
                          note=f"{repeats} repeats: a time is judged on the median of at least {MIN_REPEATS}")
        self.targets.append(result)

    def as_json(self) -> str:
        """JSON whose first line names the command that produced it."""
        body = json.dumps({"complete": self.complete, **self.context, "memory": self.memory_kind, "phases": self.phases,
                           "skipped": self.skipped, "orders": self.orders,
                           "evaluation": self.evaluation, "memory_bound_bytes": self.bounds, "targets": self.targets},
                          indent=2, default=str)
        return "{" + f'"command": {json.dumps(self.command)},\n' + body[2:] + "\n"

    def limits(self, phase: str) -> str:
        """The targets on ``phase``, as the phase's table row shows them."""
        units = {"pass_ratio": " in passes", "ratio": "", "seconds": " s", "peak_gib": " GiB",
                 "own_peak_gib": " GiB own"}
        shown = []
        for spec in self.target_specs:
            match = TARGET.match(spec)
            if match["phase"] == phase:
                limit = "the bound" if match["limit"] == "bound" else f"{float(match['limit']):g}"
                shown.append(f"≤ {limit}{units[match['metric']]}")
        return ", ".join(shown)

    def machine_noise(self) -> str | None:
        """What else ran on the machine during the measurements: other processes' CPU time and the hypervisor's
        steal, as shares of the machine's CPUs, median and largest over all measurements."""
        entries = [*self.phases.values(), *([self.evaluation] if self.evaluation else [])]
        cpus = self.context["machine"].get("cpus") or 1
        shares = {key: [used / (seconds * cpus) for entry in entries
                        for used, seconds in zip(entry.get(key, []), entry.get("seconds", []))
                        if used is not None and seconds]
                  for key in ("others_cpu_seconds", "steal_seconds")}
        if not shares["others_cpu_seconds"]:
            return None
        words = [f"{statistics.median(values):.1%} (largest {max(values):.1%})"
                 for values in (shares["others_cpu_seconds"], shares["steal_seconds"] or [0.0])]
        return (f"Other processes used a median {words[0]} of the machine's {cpus} CPUs during a measurement; "
                f"the hypervisor stole {words[1]}.")

    def markdown(self) -> str:
        c = self.context
        memory = f"{self.memory_kind} above the start / peak (GiB)"
        lines = [
            f"Produced by `{self.command}`",
            "",
            f"{c['date']}, {c['machine']['cpu']}, {c['machine']['threads']} threads, device {c['device']}"
            f"{' (' + c['machine']['gpu'] + ')' if c['machine']['gpu'] else ''}; model {c['model']['label']} "
            f"({c['model']['dtype']}, placement {c['model']['placement']}); calibration {c['calibration']}; "
            f"{c['repeats']} repeats, median (min–max) over the repeats. In passes: each measurement's time "
            f"counted in its own plain block passes (its propagation phase's time per pass) over the floors' median "
            f"count; the pass time: its time per pass over the floors' median. Time and CPU time: each method over "
            f"the mean of the two floors around it, each floor over their median (the machine's drift); CPU time is "
            f"the process's user + system time, all threads. Targets judged on the median; memory from a round of "
            f"its own before the repeats, under the default malloc; in the timed repeats the malloc is "
            f"{c.get('allocator', 'not recorded')}.",
            "",
            *([] if self.complete else ["**Incomplete**: written before the last measurement finished.", ""]),
            f"| phase | in passes / floor | pass time / floor's | time / floor | CPU time / floor | CPU / wall | "
            f"page faults minor / major | target | {memory} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for phase, entry in self.phases.items():
            label = "floor (capture + 2 block passes)" if phase == "floor" else phase
            timing = (f"{spread(entry, 'pass_ratio')} | {spread(entry, 'pass_time')} | {spread(entry, 'ratio')} | "
                      f"{spread(entry, 'cpu_ratio')} | {cpu_per_wall(entry)} | {faults(entry)}"
                      if entry.get("seconds") else "not timed | | | | |")
            lines.append(f"| {label} | {timing} | {self.limits(phase)} | {peaks(entry)} |")
        lines += [f"| {phase} | skipped: {why} | | | | | | | |" for phase, why in self.skipped.items()]
        if any(entry.get("driver_phases") for entry in self.phases.values()):
            lines += ["", "Per driver phase (symprune.timing.Timings), over the same floor: median (min–max).", "",
                      "| phase | driver phase | in passes / floor | time / floor | CPU time / floor | "
                      "system time / floor | page faults minor / major |", "|---|---|---|---|---|---|---|"]
            for phase, entry in self.phases.items():
                for name, used in entry["driver_phases"].items():
                    lines.append(f"| {phase} | {name.replace('.', ' › ')} | {spread(used, 'pass_ratio')} | "
                                 f"{spread(used, 'ratio')} | {spread(used, 'cpu_ratio')} | "
                                 f"{used['system_ratio']:.3f} | {faults(used)} |")
        if self.evaluation:
            e = self.evaluation
            lines += ["", f"| evaluation ({e['windows']} windows of {e['seqlen']}) | time / bare forward loop | "
                          f"CPU time / bare loop | CPU / wall | page faults minor / major | target | {memory} |",
                      "|---|---|---|---|---|---|---|",
                      f"| perplexity | {spread(e, 'ratio')} | {spread(e, 'cpu_ratio')} | {cpu_per_wall(e)} | "
                      f"{faults(e)} | {self.limits('evaluation')} | {peaks(e)} |"]
        noise = self.machine_noise()
        if noise:
            lines += ["", noise]
        for phase, terms in self.bounds.items():
            parts = " + ".join(f"{name} {size(value)}" for name, value in terms.items())
            peak = size(self.phases[phase]["peak_bytes"]) if phase in self.phases else "not measured"
            lines += ["", f"Offloaded blocks, {phase}: {self.memory_kind} {peak} against the bound {parts} "
                          f"= {size(sum(terms.values()))}."]
        if self.targets:
            lines += ["", "| target | median (min–max) | repeats | limit | result |", "|---|---|---|---|---|"]
            for t in self.targets:
                measured = "–" if t["measured"] is None else (
                    f"{t['measured']:.3f}" + ("" if t["min"] == t["max"] else f" ({t['min']:.3f}–{t['max']:.3f})"))
                limit = "–" if t["limit"] is None else f"{t['limit']:.3f}"
                result = {True: "pass", False: "FAIL", None: "not measured"}[t["passed"]]
                if "note" in t:
                    result = f"not judged: {t['note']}"
                lines.append(f"| `{t['target']}` | {measured} | {t['repeats']} | {limit} | {result} |")
        return "\n".join(lines) + "\n"

    def write_readme_section(self, readme: Path, section: str) -> None:
        """Replace the text between the README's markers of ``section`` with this report."""
        text, (begin, end) = readme.read_text(), readme_markers(readme, section)
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        report = self.markdown().replace("Produced by `", "generated by: `", 1)
        readme.write_text(f"{head}{begin}\n{report}{end}{tail}")

    def write(self, json_path: str | None, markdown_path: str | None) -> None:
        for path, text in ((json_path, self.as_json()), (markdown_path, self.markdown())):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                temporary = Path(path).with_suffix(Path(path).suffix + ".partial")
                temporary.write_text(text)
                temporary.replace(path)


def peaks(entry: dict[str, Any]) -> str:
    """The own / absolute peak in GiB, as the tables show them ("–": not measured)."""
    if "peak_bytes" not in entry:
        return "–"
    return f"{entry['own_peak_bytes'] / GIB:.2f} / {entry['peak_bytes'] / GIB:.2f}"


def spread(entry: dict[str, Any], name: str) -> str:
    """``name``'s median (min–max), as the tables show a ratio ("–": not measured, e.g. no passes)."""
    if name not in entry:
        return "–"
    return f"{entry[name]:.3f} ({entry[name + '_min']:.3f}–{entry[name + '_max']:.3f})"


def cpu_per_wall(entry: dict[str, Any]) -> str:
    """The median of CPU time / wall time: how many CPUs the measurement kept busy."""
    return f"{statistics.median(ratio_fields(entry['cpu_seconds'], entry['seconds'], 'r')['rs']):.2f}"


def faults(entry: dict[str, Any]) -> str:
    """The medians of the minor and major page faults."""
    return " / ".join(count(statistics.median(entry[key])) for key in ("minor_faults", "major_faults"))


def count(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f}"


def readme_markers(readme: Path, section: str) -> tuple[str, str]:
    """The lines around ``section`` in ``readme``; an error if they are not both there."""
    begin, end = f"<!-- prune_speed {section}: begin -->", f"<!-- prune_speed {section}: end -->"
    text = readme.read_text() if readme.is_file() else ""
    if begin not in text or end not in text:
        raise SystemExit(f"--readme: {readme} has no section '{section}' (the lines {begin} and {end})")
    return begin, end


def model_label(plan: Plan) -> str:
    """The model as the report names it: a hub id, or the config's name and the local file, without the
    directory it happens to sit in on this machine (the JSON keeps the full source)."""
    source = plan.source
    if source.synthetic is not None or not source.local:
        return source.describe()
    return f"{plan.settings.model.name}, local " + (Path(source.gguf_file).name if source.gguf_file else "files")


def context(plan: Plan, repeats: int) -> dict[str, Any]:
    run, device = plan.settings, plan.device
    cal = run.calibration
    return {
        "date": str(datetime.date.today()),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "device": str(device),
        "model": {"name": run.model.name, "source": plan.source.describe(), "label": model_label(plan),
                  "dtype": run.model.dtype,
                  "placement": "offload" if plan.placement.offload_blocks else (
                      f"device_map={plan.placement.device_map}" if plan.placement.device_map else "single"),
                  "activations": plan.placement.activations, **plan.source.summary()},
        "calibration": f"{cal.name} {cal.nsamples} x {cal.seqlen}, batch {cal.batch_size}",
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"at least {MIN_REPEATS} with a time target (the committed table: 5)")
    parser.add_argument("--evaluation", action=argparse.BooleanOptionalAction, default=True,
                        help="also time perplexity against a bare forward loop")
    parser.add_argument("--time-budget", type=float,
                        help="seconds from the start; the pruning measurements that would start later are skipped")
    parser.add_argument("--targets", metavar="PROFILE", help=f"check the targets of PROFILE in {TARGETS_FILE.name}")
    parser.add_argument("--readme", type=Path, help="rewrite the --targets profile's section of this README")
    parser.add_argument("--target", action="append", default=[], metavar="PHASE.METRIC<=LIMIT",
                        help="e.g. wanda.pass_ratio<=1.15, wanda.ratio<=1.15, wanda.seconds<=60, "
                             "wanda.peak_gib<=8, wanda.peak_gib<=bound")
    parser.add_argument("--out", help="write the Markdown report here")
    parser.add_argument("--json", help="write the JSON report here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (model, calibration, device, ...)")
    args = parser.parse_args()
    names = args.methods.split(",")
    if args.readme and not args.targets:
        parser.error("--readme writes the section of a --targets profile: give --targets")
    targets = [*(load_targets(args.targets) if args.targets else []), *args.target]
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: measure at least once")
    unknown = [name for name in names if name not in METHODS]
    bad_targets = [target for target in targets if not TARGET.match(target)]
    if unknown or bad_targets:
        parser.error(f"unknown methods {unknown} (valid: {', '.join(METHODS)}); malformed targets {bad_targets}")
    timed_targets = [target for target in targets if TARGET.match(target)["metric"] in TIME_METRICS]
    if timed_targets and args.repeats < MIN_REPEATS:
        given = f"--targets {args.targets}" if args.targets else "--target"
        parser.error(f"--repeats {args.repeats} with {given}: a time target ({', '.join(timed_targets)}) is judged on "
                     f"the median of at least {MIN_REPEATS} repeats (two repeats of one method have differed by 40%); "
                     f"give --repeats {MIN_REPEATS} or more")
    if args.readme:
        readme_markers(args.readme, args.targets)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plans = {name: plan_run(compose("config", overrides=[*BASE_OVERRIDES, *args.overrides, *METHODS[name]]))
                 for name in names}
    matched = [(target, TARGET.match(target)) for target in targets]
    passless = [target for target, match in matched if match["metric"] == "pass_ratio" and (
        match["phase"] == "evaluation" or match["phase"] in plans and not plans[match["phase"]].method.required_stats)]
    if passless:
        parser.error(f"{', '.join(passless)}: pass_ratio counts a measurement in its own plain block passes, which "
                     f"only a method with calibration statistics makes; judge these on ratio")
    # the floor runs the calibration pass, so the inputs come from a method that needs calibration
    plan = next((plan for plan in plans.values() if plan.needs_calibration), None)
    if plan is None:
        raise SystemExit("--methods: the floor needs calibration; include a method that uses statistics")
    started, device = time.monotonic(), plan.device
    inputs = load_inputs(plan)
    calibration = inputs.calibration
    memory_kind = ("peak CUDA allocated" if device.type == "cuda" else
                   "peak CPU RSS" if kernel_peak_is_exact() else "peak CPU RSS (sampled every 5 ms)")
    report = Report("python " + shlex.join(sys.argv), context(plan, args.repeats), memory_kind, target_specs=targets)
    gc.collect()
    gc.freeze()  # what lives all run (modules, configs, tokens) out of the collections between measurements: fast

    def over_budget() -> bool:
        return args.time_budget is not None and time.monotonic() - started > args.time_budget

    # the memory round: every measurement once, memory freed before handed back, glibc's defaults; it also warms
    # the device and the process up for the timed repeats, which keep their memory on a steady allocator
    evaluation_peak = evaluation_memory(plan, inputs.streams) if args.evaluation else None
    memory_round(names, plan, plans, calibration, report)
    report.context["allocator"] = steady_allocator()
    if device.type == "cpu":
        own_peaks = [entry["own_peak_bytes"] for entry in report.phases.values()]
        pre_touch_heap(int(1.5 * max([*own_peaks, evaluation_peak.own if evaluation_peak else 0])) + 64 * 2**20)
    report.write(args.json, args.out)
    if args.evaluation:
        report.evaluation = measure_evaluation(plan, inputs.streams, args.repeats, evaluation_peak)
        report.write(args.json, args.out)
    for repeat in range(args.repeats):
        # every method runs between two floors and is divided by their mean: the speed of a shared CPU drifts
        # within minutes, and a floor measured minutes away would hand the method that drift. Each repeat
        # starts one method later, so that no method is always measured first or last.
        methods = names[repeat % len(names):] + names[: repeat % len(names)]
        report.orders.append(["floor", *(phase for name in methods for phase in (name, "floor"))])
        floors = [measure("floor", plan, None, calibration)]
        measured = {}
        for name in methods:
            if over_budget():
                report.skipped[name] = f"time budget of {args.time_budget:g} s spent"
                continue
            measured[name] = measure(name, plan, plans[name], calibration)
            floors.append(measure("floor", plan, None, calibration))
            measured[name] = (measured[name], ((floors[-2].seconds + floors[-1].seconds) / 2,
                                               (floors[-2].cpu_seconds + floors[-1].cpu_seconds) / 2))
        for floor_measurement in floors:
            report.add("floor", floor_measurement)
        for name in names:  # the report lists the methods in one order, each against the floors around it
            if name in measured:
                report.add(name, *measured[name])
        report.write(args.json, args.out)

    for target in targets:
        report.check(target)
    report.complete = True
    report.write(args.json, args.out)
    if args.readme:
        report.write_readme_section(args.readme, args.targets)
    print(report.markdown())


if __name__ == "__main__":
    main()
