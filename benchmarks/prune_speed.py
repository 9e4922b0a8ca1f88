"""Pruning and evaluation cost against their floors, measured in one run on one model and calibration set.

- floor: capturing block 0's inputs, then two forward passes of every block over the calibration
  activations, with no pruning work: the least any layer-wise method must do;
- each method: the full layer-wise prune (capture, statistics pass, scores, masks, refinement,
  propagation pass) of a freshly loaded (or, synthetic, freshly built) dense model;
- evaluation: symprune's perplexity against a bare loop of forward passes over the same windows.

Each measurement is repeated (--repeats, each method between two floors and divided by their mean,
each repeat starting one method later than the one before) and the median ratio is reported, with
each measurement's own memory:
the peak resident memory (CPU) or the peak allocated GPU memory (CUDA) above what the process held
when it started (the loaded dense model and the calibration tokens; freed memory is handed back to
the system before each measurement), and the absolute peak. With offloaded blocks
(placement=offload) the report adds the memory bound such a run should stay under: the weights that
stay on the device, two blocks, one calibration batch's activations and one block's statistics.
--targets PROFILE checks the limits listed for PROFILE in benchmarks/targets.yaml (--target adds
one); --json and --out write the report (first line: the command); --readme rewrites the profile's
section of benchmarks/README.md with the report.

    SYMPRUNE_ASSETS=../shared/assets python benchmarks/prune_speed.py --targets cpu --readme benchmarks/README.md
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
TARGET = re.compile(r"^(?P<phase>\w+)\.(?P<metric>ratio|seconds|peak_gib|own_peak_gib)<=(?P<limit>[0-9.]+|bound)$")
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


def timed(function, device: torch.device) -> tuple[float, PeakMemory]:
    memory = PeakMemory(device)
    with memory.measure():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, memory


@torch.inference_mode()
def floor(model, calibration, plan: Plan) -> None:
    """Capture block 0's inputs, then every block twice over the activations: no statistics, no pruning."""
    _, blocks = find_blocks(model)
    with ActivationStore(plan.placement) as store:
        inputs = capture_block_inputs(model, blocks, calibration, plan.settings.calibration.batch_size, store, False)
        for block in blocks:
            with visiting(block, plan.placement):
                device = plan.placement.block_device(block)
                run_block(block, inputs, device)
                run_block(block, inputs, device, inputs.spare)
            inputs.advance()


@torch.inference_mode()
def bare_loop(model, tokens, seqlen, windows, device) -> None:
    stream = tokens.reshape(-1)[: windows * seqlen].reshape(windows, seqlen)
    for window in stream:
        model(window.unsqueeze(0).to(device), use_cache=False)


def measure(name: str, plan: Plan, method_plan: Plan | None, calibration, report: Report) -> tuple[float, PeakMemory]:
    """Seconds and peak memory of the floor or of one method's prune, on a freshly loaded dense model."""
    release(plan.device)
    model = load_placed_model(plan)
    if method_plan is None:
        return timed(lambda: floor(model, calibration, plan), plan.device)
    if plan.placement.offload_blocks:
        report.bounds[name] = memory_bound(model, plan, method_plan)
    return timed(lambda: prune_model(model, method_plan.method, calibration, batch_size=plan.settings.calibration.batch_size,
                                     placement=method_plan.placement, progress=False, targets=method_plan.targets,
                                     allocation=method_plan.allocation), plan.device)


def measure_evaluation(plan: Plan, streams: dict[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    """symprune's perplexity against a bare forward loop over the same windows of the first set, after
    one untimed window."""
    settings, device = plan.settings.eval.perplexity, plan.device
    name, tokens = next(iter(streams.items()))
    release(device)
    model = load_placed_model(plan)
    input_device = model.get_input_embeddings().weight.device
    windows = min(settings.max_windows or tokens.numel() // settings.seqlen, tokens.numel() // settings.seqlen)
    bare, ours, memory = [], [], None
    with streamed(find_blocks(model)[1], plan.placement):
        bare_loop(model, tokens, settings.seqlen, 1, input_device)
        for _ in range(repeats):
            bare.append(timed(lambda: bare_loop(model, tokens, settings.seqlen, windows, input_device), device)[0])
            seconds, memory = timed(lambda: perplexity(model, tokens, settings.seqlen, max_windows=windows,
                                                     device=input_device, progress=False), device)
            ours.append(seconds)
    ratios = [o / b for o, b in zip(ours, bare)]
    return {"dataset": name, "windows": windows, "seqlen": settings.seqlen, "ratios": ratios,
            "ratio": statistics.median(ratios), "seconds": ours, "median_seconds": statistics.median(ours),
            "bare_seconds": bare, "peak_bytes": memory.peak, "own_peak_bytes": memory.own}


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

    def add(self, phase: str, seconds: float, memory: PeakMemory, floor_seconds: float | None) -> None:
        entry = self.phases.setdefault(phase, {"seconds": [], "ratios": [], "peak_bytes": 0, "own_peak_bytes": 0})
        entry["seconds"].append(seconds)
        if floor_seconds is not None:
            entry["ratios"].append(seconds / floor_seconds)
        entry["peak_bytes"] = max(entry["peak_bytes"], memory.peak)
        entry["own_peak_bytes"] = max(entry["own_peak_bytes"], memory.own)
        entry["ratio"] = 1.0 if phase == "floor" else statistics.median(entry["ratios"])
        entry["median_seconds"] = statistics.median(entry["seconds"])

    def measured(self, phase: str, metric: str) -> float | None:
        entry = self.evaluation if phase == "evaluation" else self.phases.get(phase)
        if entry is None:
            return None
        return {"ratio": entry["ratio"], "seconds": entry["median_seconds"], "peak_gib": entry["peak_bytes"] / GIB,
                "own_peak_gib": entry["own_peak_bytes"] / GIB}[metric]

    def check(self, target: str) -> None:
        match = TARGET.match(target)
        phase, metric, limit = match["phase"], match["metric"], match["limit"]
        value = self.measured(phase, metric)
        if limit == "bound":
            limit_value = sum(self.bounds[phase].values()) / GIB if phase in self.bounds else None
        else:
            limit_value = float(limit)
        passed = None if value is None or limit_value is None else value <= limit_value
        self.targets.append({"target": target, "measured": value, "limit": limit_value, "passed": passed})

    def as_json(self) -> str:
        """JSON whose first line names the command that produced it."""
        body = json.dumps({"complete": self.complete, **self.context, "memory": self.memory_kind, "phases": self.phases,
                           "skipped": self.skipped, "orders": self.orders,
                           "evaluation": self.evaluation, "memory_bound_bytes": self.bounds, "targets": self.targets},
                          indent=2, default=str)
        return "{" + f'"command": {json.dumps(self.command)},\n' + body[2:] + "\n"

    def limits(self, phase: str) -> str:
        """The targets on ``phase``, as the phase's table row shows them."""
        units = {"ratio": "", "seconds": " s", "peak_gib": " GiB", "own_peak_gib": " GiB own"}
        shown = []
        for spec in self.target_specs:
            match = TARGET.match(spec)
            if match["phase"] == phase:
                limit = "the bound" if match["limit"] == "bound" else f"{float(match['limit']):g}"
                shown.append(f"≤ {limit}{units[match['metric']]}")
        return ", ".join(shown)

    def markdown(self) -> str:
        c = self.context
        memory = f"{self.memory_kind} above the start / peak (GiB)"
        lines = [
            f"Produced by `{self.command}`",
            "",
            f"{c['date']}, {c['machine']['cpu']}, {c['machine']['threads']} threads, device {c['device']}"
            f"{' (' + c['machine']['gpu'] + ')' if c['machine']['gpu'] else ''}; model {c['model']['label']} "
            f"({c['model']['dtype']}, placement {c['model']['placement']}); calibration {c['calibration']}; "
            f"median of {c['repeats']} repeats, each method between two floors.",
            "",
            *([] if self.complete else ["**Incomplete**: written before the last measurement finished.", ""]),
            f"| phase | time / floor | target | {memory} |",
            "|---|---|---|---|",
        ]
        for phase, entry in self.phases.items():
            label = "floor (capture + 2 block passes)" if phase == "floor" else phase
            ratio = f"{entry['ratio']:.3f}"
            lines.append(f"| {label} | {ratio} | {self.limits(phase)} | "
                         f"{entry['own_peak_bytes'] / GIB:.2f} / {entry['peak_bytes'] / GIB:.2f} |")
        lines += [f"| {phase} | skipped: {why} | | |" for phase, why in self.skipped.items()]
        if self.evaluation:
            e = self.evaluation
            lines += ["", f"| evaluation ({e['windows']} windows of {e['seqlen']}) | time / bare forward loop | target | "
                          f"{memory} |", "|---|---|---|---|",
                      f"| perplexity | {e['ratio']:.3f} | {self.limits('evaluation')} | "
                      f"{e['own_peak_bytes'] / GIB:.2f} / {e['peak_bytes'] / GIB:.2f} |"]
        for phase, terms in self.bounds.items():
            parts = " + ".join(f"{name} {size(value)}" for name, value in terms.items())
            peak = size(self.phases[phase]["peak_bytes"]) if phase in self.phases else "not measured"
            lines += ["", f"Offloaded blocks, {phase}: {self.memory_kind} {peak} against the bound {parts} "
                          f"= {size(sum(terms.values()))}."]
        if self.targets:
            lines += ["", "| target | measured | limit | result |", "|---|---|---|---|"]
            for t in self.targets:
                measured = "–" if t["measured"] is None else f"{t['measured']:.3f}"
                limit = "–" if t["limit"] is None else f"{t['limit']:.3f}"
                result = {True: "pass", False: "FAIL", None: "not measured"}[t["passed"]]
                lines.append(f"| `{t['target']}` | {measured} | {limit} | {result} |")
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
                    "torch": torch.__version__, "python": platform.python_version()},
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evaluation", action=argparse.BooleanOptionalAction, default=True,
                        help="also time perplexity against a bare forward loop")
    parser.add_argument("--time-budget", type=float,
                        help="seconds from the start; the pruning measurements that would start later are skipped")
    parser.add_argument("--targets", metavar="PROFILE", help=f"check the targets of PROFILE in {TARGETS_FILE.name}")
    parser.add_argument("--readme", type=Path, help="rewrite the --targets profile's section of this README")
    parser.add_argument("--target", action="append", default=[], metavar="PHASE.METRIC<=LIMIT",
                        help="e.g. wanda.ratio<=1.15, wanda.seconds<=60, wanda.peak_gib<=8, wanda.peak_gib<=bound")
    parser.add_argument("--out", help="write the Markdown report here")
    parser.add_argument("--json", help="write the JSON report here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (model, calibration, device, ...)")
    args = parser.parse_args()
    names = args.methods.split(",")
    if args.readme and not args.targets:
        parser.error("--readme writes the section of a --targets profile: give --targets")
    targets = [*(load_targets(args.targets) if args.targets else []), *args.target]
    if args.readme:
        readme_markers(args.readme, args.targets)
    unknown = [name for name in names if name not in METHODS]
    bad_targets = [target for target in targets if not TARGET.match(target)]
    if unknown or bad_targets:
        parser.error(f"unknown methods {unknown} (valid: {', '.join(METHODS)}); malformed targets {bad_targets}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plans = {name: plan_run(compose("config", overrides=[*BASE_OVERRIDES, *args.overrides, *METHODS[name]]))
                 for name in names}
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

    def over_budget() -> bool:
        return args.time_budget is not None and time.monotonic() - started > args.time_budget

    if args.evaluation:  # first: it also warms the device up before the floor is timed
        report.evaluation = measure_evaluation(plan, inputs.streams, args.repeats)
        report.write(args.json, args.out)
    for repeat in range(args.repeats):
        # every method runs between two floors and is divided by their mean: the speed of a shared CPU drifts
        # within minutes, and a floor measured minutes away would hand the method that drift. Each repeat
        # starts one method later, so that no method is always measured first or last.
        methods = names[repeat % len(names):] + names[: repeat % len(names)]
        report.orders.append(["floor", *(phase for name in methods for phase in (name, "floor"))])
        floors = [measure("floor", plan, None, calibration, report)]
        measured = {}
        for name in methods:
            if over_budget():
                report.skipped[name] = f"time budget of {args.time_budget:g} s spent"
                continue
            measured[name] = measure(name, plan, plans[name], calibration, report)
            floors.append(measure("floor", plan, None, calibration, report))
            measured[name] += ((floors[-2][0] + floors[-1][0]) / 2,)
        for floor_seconds in floors:
            report.add("floor", *floor_seconds, None)
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
