"""benchmarks/prune_speed.py end to end on a tiny synthetic model, as benchmarks/gpu_check.sh runs it,
in a process where lm-eval, datasets, gguf, wandb and submitit cannot be imported (the GPU machine
has none of them): every method measured, every file complete and naming its command."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import re
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import REPO

BLOCKED = ("lm_eval", "datasets", "gguf", "wandb", "submitit")
WITHOUT_BLOCKED = f"""
import runpy, sys
import transformers  # finds its optional packages once, as it would where they are absent
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now fails
sys.argv = ["benchmarks/prune_speed.py", *sys.argv[1:]]
runpy.run_path("benchmarks/prune_speed.py", run_name="__main__")
"""
METHODS = ["wanda", "ria", "stochria", "dsnot", "r2dsnot", "sparsegpt"]
TINY_RUN = ["model=synthetic", "model.dtype=bfloat16", "calibration=random", "eval=perplexity_random",
            "calibration.nsamples=8", "calibration.seqlen=64", "eval.perplexity.seqlen=64", "eval.perplexity.max_windows=2",
            "device=cpu"]


def benchmark(tmp_path, name: str, *arguments: str) -> tuple[dict, str]:
    files = ["--json", str(tmp_path / f"{name}.json"), "--out", str(tmp_path / f"{name}.md")]
    done = subprocess.run([sys.executable, "-c", WITHOUT_BLOCKED, *files, *arguments], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    json_text, markdown = (tmp_path / f"{name}.json").read_text(), (tmp_path / f"{name}.md").read_text()
    assert json_text.startswith('{"command": "python benchmarks/prune_speed.py --json')
    assert markdown.startswith("Produced by `python benchmarks/prune_speed.py --json")
    return json.loads(json_text), markdown


def test_every_method_has_a_finite_ratio_and_the_targets_are_checked(tmp_path):
    report, markdown = benchmark(
        tmp_path, "speed", "--methods", ",".join(METHODS), "--repeats", "3",
        "--target", "wanda.ratio<=100", "--target", "evaluation.ratio<=0.001", *TINY_RUN,
    )
    assert report["complete"] and report["model"]["synthetic"] and report["model"]["shape"]["hidden_size"] == 64
    assert list(report["phases"]) == ["floor", *METHODS] and not report["skipped"] and report["allocator"]
    for name, phase in report["phases"].items():
        for ratio in ("ratio", "cpu_ratio"):
            assert len(phase[ratio + "s"]) == (3 * (len(METHODS) + 1) if name == "floor" else 3), name
            assert all(math.isfinite(r) and r > 0 for r in phase[ratio + "s"]), name
            assert phase[ratio + "_min"] <= phase[ratio] <= phase[ratio + "_max"], name
        assert phase["peak_bytes"] > 0 and phase["memory_round"]["seconds"] > 0, name  # memory: its own round
        assert all(f >= 0 for f in phase["minor_faults"] + phase["major_faults"]), name
        driver = phase["driver_phases"]
        assert list(driver)[-1] == "other"
        assert {"calibration_forward", "scoring" if name != "floor" else "propagation"} <= set(driver)
        for used in driver.values():  # the driver's phases and the rest add up to the measurement
            assert len(used["seconds"]) == len(phase["seconds"])
        total = [sum(used["seconds"][i] for key, used in driver.items() if "." not in key)
                 for i in range(len(phase["seconds"]))]
        assert total == pytest.approx(phase["seconds"], rel=1e-6), name
        # the plain passes: every block's second pass in the floor, all but the last block's in a method with
        # statistics, and none in one without (magnitude), which then has no pass ratio
        blocks = report["model"]["shape"]["num_layers"]
        passes = {"floor": blocks, "magnitude": 0}.get(name, blocks - 1)
        assert phase["passes"] == [passes] * len(phase["seconds"]), name
        if passes:
            assert all(math.isfinite(r) and r > 0 for r in phase["pass_ratios"] + phase["pass_times"]), name
            assert phase["pass_ratio_min"] <= phase["pass_ratio"] <= phase["pass_ratio_max"], name
        else:
            assert "pass_ratio" not in phase and "pass_ratio" not in driver["scoring"], name
        label = "floor (capture + 2 block passes)" if name == "floor" else name
        row = (f"| {label} | {prune_speed_spread(phase, 'pass_ratio')} | {prune_speed_spread(phase, 'pass_time')} | "
               f"{prune_speed_spread(phase, 'ratio')} | {prune_speed_spread(phase, 'cpu_ratio')} | ")
        assert row in markdown, row
    assert math.isfinite(report["evaluation"]["ratio"]) and report["evaluation"]["windows"] == 2
    assert len(report["evaluation"]["ratios"]) == 3 and math.isfinite(report["evaluation"]["cpu_ratio"])
    wanda, evaluation = report["targets"]
    assert wanda["passed"] is True and wanda["measured"] == report["phases"]["wanda"]["ratio"] and wanda["repeats"] == 3
    assert evaluation["passed"] is False and "| `evaluation.ratio<=0.001` |" in markdown and "| FAIL |" in markdown


def test_offloaded_blocks_report_their_memory_bound(tmp_path):
    report, markdown = benchmark(
        tmp_path, "offload", "--methods", "wanda", "--repeats", "1", "--no-evaluation",
        "--target", "wanda.peak_gib<=bound", *TINY_RUN, "placement=offload",
    )
    bound = report["memory_bound_bytes"]["wanda"]
    assert set(bound) == {"resident weights", "2 blocks", "activations", "statistics"} and all(bound.values())
    # tiny llama in bfloat16: the embeddings and LM head (2 x 256 x 64) and the final norm stay; a block holds
    # q and o (64 x 64), k and v (2 kv heads of 16: 32 x 64), the MLP (3 x 64 x 128) and two norms
    assert bound["resident weights"] == (2 * 256 * 64 + 64) * 2
    assert bound["2 blocks"] == 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128 + 2 * 64) * 2
    assert report["evaluation"] is None and report["model"]["placement"] == "offload"
    (target,) = report["targets"]
    assert target["limit"] == sum(bound.values()) / 2**30 and "Offloaded blocks, wanda:" in markdown


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("prune_speed", REPO / "benchmarks" / "prune_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kernel_peak", [True, False], ids=["kernel-high-water-mark", "sampled"])
def test_each_measurement_reports_its_own_peak_not_the_process_high_water_mark(kernel_peak, monkeypatch):
    """A measurement after a larger one that freed its memory still sees its own allocation. The kernel's
    peak catches an allocation held for no time at all; the 5 ms sampler needs it held a while."""
    prune_speed, device, mib = load_benchmark_module(), torch.device("cpu"), 2**20
    if kernel_peak and not prune_speed.kernel_peak_is_exact():
        pytest.skip("this kernel's peak resident size cannot be reset or misses freed allocations")
    if not kernel_peak:
        monkeypatch.setattr(prune_speed, "kernel_peak_is_exact", lambda: False)
    hold = 0.0 if kernel_peak else 0.5

    def allocate(megabytes):
        held = torch.ones(megabytes * mib // 4)
        time.sleep(hold)
        del held

    large = prune_speed.timed(lambda: allocate(512), device).memory
    prune_speed.release(device)
    small = prune_speed.timed(lambda: allocate(64), device).memory
    assert large.own >= 500 * mib
    assert 60 * mib <= small.own < 200 * mib
    assert small.peak >= small.start + small.own


FREED_BUT_RESIDENT = """
import ctypes, ctypes.util, sys, torch
sys.path.insert(0, "benchmarks")
import prune_speed
libc, mib = ctypes.CDLL(ctypes.util.find_library("c")), 2**20
libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD: large blocks from the heap,
libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: and a freed heap kept
kept, pin = torch.ones(600 * mib // 4), torch.ones(1000)
del kept
if sys.argv[1] == "sampled":
    prune_speed.kernel_peak_is_exact = lambda: False
else:
    assert prune_speed.kernel_peak_is_exact()
def allocate():
    held = torch.ones(512 * mib // 4)
    if sys.argv[1] == "sampled":
        prune_speed.time.sleep(0.5)
    del held
print(prune_speed.timed(allocate, torch.device("cpu")).memory.own)
"""


@pytest.mark.parametrize("kernel_peak", [True, False], ids=["kernel-high-water-mark", "sampled"])
def test_an_allocation_in_memory_the_process_freed_but_kept_still_counts(kernel_peak):
    """A process that keeps 600 MiB it freed (as glibc keeps a fragmented heap) would place a 512 MiB tensor in
    pages already resident: without handing them back first, the measurement would see no rise at all."""
    if kernel_peak and not load_benchmark_module().kernel_peak_is_exact():
        pytest.skip("this kernel's peak resident size cannot be reset or misses freed allocations")
    done = subprocess.run([sys.executable, "-c", FREED_BUT_RESIDENT, "kernel" if kernel_peak else "sampled"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) >= 500 * 2**20


def test_a_kernel_that_misses_freed_allocations_or_ignores_the_reset_falls_back_to_the_sampler(monkeypatch):
    """Kernels that update the high-water mark lazily never see an allocation freed before /proc is read (the
    mark stays where it was), and some accept the reset and ignore it (the mark stays high): either way the
    check fails and measurements sample the resident size instead."""
    prune_speed = load_benchmark_module()
    prune_speed.release(torch.device("cpu"))
    resident = prune_speed.psutil.Process().memory_info().rss
    for stale in (lambda: resident, lambda: resident + 2**30):
        prune_speed.kernel_peak_is_exact.cache_clear()
        monkeypatch.setattr(prune_speed, "high_water_mark", stale)
        sampled = []
        monkeypatch.setattr(prune_speed.PeakMemory, "sampled", lambda self: sampled.append(self) or nullcontext())
        memory = prune_speed.PeakMemory(torch.device("cpu"))
        with memory.measure():
            pass
        assert sampled == [memory]
        monkeypatch.undo()
    prune_speed.kernel_peak_is_exact.cache_clear()


def test_a_targets_profile_is_checked_on_three_rotated_repeats_and_written_into_the_readme_section(tmp_path):
    profiles = yaml.safe_load((REPO / "benchmarks" / "targets.yaml").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# Bench\n\nbefore\n<!-- prune_speed cpu: begin -->\nold table\n<!-- prune_speed cpu: end -->\nafter\n")
    report, _ = benchmark(tmp_path, "profile", "--methods", "wanda,r2dsnot", "--repeats", "3", "--targets", "cpu",
                          "--readme", str(readme), *TINY_RUN)
    assert [t["target"] for t in report["targets"]] == [f"{key}<={limit}" for key, limit in profiles["cpu"].items()]
    ria = next(t for t in report["targets"] if t["target"].startswith("ria."))
    assert ria["measured"] is None and ria["passed"] is None  # not in --methods: not measured, not passed
    text = readme.read_text()
    assert text.startswith("# Bench\n\nbefore\n<!-- prune_speed cpu: begin -->\ngenerated by: `python benchmarks/prune_speed.py")
    assert text.endswith("<!-- prune_speed cpu: end -->\nafter\n") and "old table" not in text
    wanda = report["phases"]["wanda"]
    assert (f"| wanda | {prune_speed_spread(wanda, 'pass_ratio')} | {prune_speed_spread(wanda, 'pass_time')} | "
            f"{prune_speed_spread(wanda, 'ratio')} | {prune_speed_spread(wanda, 'cpu_ratio')} | ") in text
    memory = f"{wanda['own_peak_bytes'] / 2**30:.2f} / {wanda['peak_bytes'] / 2**30:.2f}"
    assert f"| ≤ {profiles['cpu']['wanda.pass_ratio']:g} in passes | {memory} |" in text
    # every method between two floors, each repeat starting one method later, each divided by the floors around it
    assert report["orders"] == [["floor", "wanda", "floor", "r2dsnot", "floor"],
                                ["floor", "r2dsnot", "floor", "wanda", "floor"],
                                ["floor", "wanda", "floor", "r2dsnot", "floor"]]
    floors = report["phases"]["floor"]
    for key, name in (("seconds", "ratios"), ("cpu_seconds", "cpu_ratios")):
        first, second, third = (floors[key][start : start + 3] for start in (0, 3, 6))
        around = {"wanda": [(first[0] + first[1]) / 2, (second[1] + second[2]) / 2, (third[0] + third[1]) / 2],
                  "r2dsnot": [(first[1] + first[2]) / 2, (second[0] + second[1]) / 2, (third[1] + third[2]) / 2]}
        for method, floor in around.items():
            phase = report["phases"][method]
            assert phase[name] == [value / f for value, f in zip(phase[key], floor)]
            assert phase[name[:-1]] == statistics.median(phase[name])
        assert floors[name] == [value / statistics.median(floors[key]) for value in floors[key]]


def gpu_check_benchmarks(out) -> list[list[str]]:
    """The prune_speed.py arguments of gpu_check.sh's stages, with the values its --cpu-dry-run gives the
    script's variables (``out``: its OUT_DIR)."""
    script = (REPO / "benchmarks" / "gpu_check.sh").read_text().replace("\\\n", " ")
    dry_run = script.split('if [ "$DRY_RUN" = 1 ]; then', 1)[1].split("else", 1)[0]
    values = {"OUT": str(out)}
    for name, value in re.findall(r"(\w+)=(\([^)]*\)|\S+)", dry_run):
        values[name] = value
    values["SPEED"], values["OFFLOAD"] = f"speed_{values['SPEED_SIZE']}", f"offload_{values['OFFLOAD_SIZE']}"

    def expand(text: str) -> str:
        text = re.sub(r'"\$\{(\w+)\[@\]\}"', lambda m: values[m[1]].strip("()"), text)
        return re.sub(r"\$(\w+)", lambda m: values[m[1]], text)

    return [shlex.split(expand(line.split("benchmarks/prune_speed.py", 1)[1]))
            for line in script.splitlines() if line.lstrip().startswith("stage ") and "prune_speed.py" in line]


def test_the_gpu_check_s_benchmark_stages_run_as_written(tmp_path):
    """gpu_check.sh's benchmark commands, run with its dry run's values: each completes and judges its time
    targets on at least 3 repeats (a command prune_speed.py refused would cost a rare GPU run its stage)."""
    commands = gpu_check_benchmarks(tmp_path)
    assert len(commands) == 2 and all("--targets" in command for command in commands)
    for command in commands:
        done = subprocess.run([sys.executable, "-c", WITHOUT_BLOCKED, *command], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        report = json.loads(Path(command[command.index("--json") + 1]).read_text())
        assert report["complete"] and report["targets"] and report["device"] == "cpu"
        for target in report["targets"]:
            timed = re.search(r"\.(pass_ratio|ratio|seconds)<=", target["target"])
            assert target["measured"] is not None and (not timed or target["repeats"] >= 3), target


def prune_speed_spread(entry, name):
    if name not in entry:
        return "–"
    return f"{entry[name]:.3f} ({entry[name + '_min']:.3f}–{entry[name + '_max']:.3f})"


@pytest.mark.parametrize("arguments", [["--targets", "cpu", "--repeats", "2"],
                                       ["--target", "wanda.seconds<=60", "--repeats", "1"]], ids=["profile", "one-target"])
def test_a_time_target_on_fewer_than_three_repeats_is_refused_before_measuring(arguments, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/prune_speed.py", *arguments, "--json", str(tmp_path / "r.json"),
                           *TINY_RUN], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "judged on the median of at least 3 repeats" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "r.json").exists()


def test_a_readme_without_the_section_is_refused_before_measuring(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Bench\n")
    done = subprocess.run([sys.executable, "benchmarks/prune_speed.py", "--targets", "cpu", "--readme", str(readme),
                           *TINY_RUN], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "has no section 'cpu'" in done.stderr and readme.read_text() == "# Bench\n"


def test_the_committed_cpu_table_is_generated_and_checks_every_cpu_target():
    """The benchmark README's CPU section is the command's output, not an edited table, and is in step
    with targets.yaml: each of the profile's targets has its row with its current limit."""
    profiles = yaml.safe_load((REPO / "benchmarks" / "targets.yaml").read_text())
    text = (REPO / "benchmarks" / "README.md").read_text()
    section = text.split("<!-- prune_speed cpu: begin -->\n", 1)[1].split("<!-- prune_speed cpu: end -->", 1)[0]
    assert section.startswith("generated by: `python benchmarks/prune_speed.py ")
    assert "--targets cpu" in section.splitlines()[0] and "**Incomplete**" not in section
    assert re.search(r"(^|\s)/[A-Za-z]", section) is None, "an absolute path of the measuring machine"
    for key, limit in profiles["cpu"].items():
        assert f"| `{key}<={limit}` | " in section, key


def fake(prune_speed, seconds, cpu, phases=None, peak=3 * 2**30, own=2**30, minor=1000, passes=0):
    """A measurement as timed() returns it, with the given wall and CPU seconds, driver phases
    ({name: (seconds, cpu_seconds)}), memory and plain block passes."""
    usage = {"seconds": seconds, "cpu_seconds": cpu, "system_seconds": cpu / 10, "minor_faults": minor, "major_faults": 0,
             "involuntary_switches": 0, "others_cpu_seconds": 0.1 * seconds, "steal_seconds": 0.0}
    used = {name: {"seconds": wall, "cpu_seconds": time_, "system_seconds": time_ / 10, "minor_faults": minor // 2,
                   "major_faults": 0} for name, (wall, time_) in (phases or {}).items()}
    return prune_speed.Measurement(usage, SimpleNamespace(peak=peak, own=own), used, 0, passes)


def fake_report(prune_speed, targets=()):
    context = {"date": "2026-12-07", "machine": {"cpu": "x86_64", "threads": 2, "gpu": None, "cpus": 2}, "device": "cpu",
               "model": {"label": "tiny", "dtype": "float32", "placement": "single"}, "calibration": "random 8 x 64",
               "repeats": 3}
    return prune_speed.Report("python benchmarks/prune_speed.py", context, "peak CPU RSS", target_specs=list(targets))


def test_the_report_shows_each_ratio_s_median_min_and_max_and_the_cpu_time_ratio_beside_it():
    """Fake measurements: every ratio is the measurement over the floor it was given (a floor: over the median
    floor), the table shows median (min–max) of wall and CPU ratios, per method and per driver phase."""
    prune_speed = load_benchmark_module()
    report = fake_report(prune_speed, ["wanda.ratio<=1.15", "wanda.seconds<=12", "ria.ratio<=1.15", "wanda.peak_gib<=4"])
    for wall, cpu in ((10.0, 19.0), (12.0, 23.0), (11.0, 21.0), (9.0, 18.0)):
        report.add("floor", fake(prune_speed, wall, cpu, {"calibration_forward": (wall / 2, cpu / 2),
                                                          "propagation": (wall / 2 - 0.5, cpu / 2 - 0.5)}))
    # wanda: three repeats, the second with an allocation phase and its evidence sub-phase the others lack
    repeats = [(11.0, 20.0, (10.0, 19.0)), (13.2, 22.0, (12.0, 20.0)), (10.8, 21.0, (9.0, 21.0))]
    for index, (wall, cpu, floor) in enumerate(repeats):
        phases = {"calibration_forward": (wall / 2, cpu / 2), "scoring": (1.0, 2.0)}
        if index == 1:
            phases.update({"allocation": (2.0, 3.0), "allocation.evidence": (0.5, 0.5)})
        report.add("wanda", fake(prune_speed, wall, cpu, phases), floor)
    report.add("ria", fake(prune_speed, 10.0, 20.0, {"scoring": (1.0, 1.0)}), (10.0, 20.0))
    report.add_memory("wanda", fake(prune_speed, 30.0, 50.0, peak=4 * 2**30))  # the memory round's measurement

    floors, wanda = report.phases["floor"], report.phases["wanda"]
    assert floors["ratios"] == [wall / 10.5 for wall in (10.0, 12.0, 11.0, 9.0)] and floors["ratio"] == 1.0
    assert floors["cpu_ratios"] == [cpu / 20.0 for cpu in (19.0, 23.0, 21.0, 18.0)]
    assert wanda["ratios"] == pytest.approx([1.1, 1.1, 1.2]) and wanda["ratio"] == statistics.median(wanda["ratios"])
    assert (wanda["ratio_min"], wanda["ratio_max"]) == (min(wanda["ratios"]), max(wanda["ratios"]))
    assert wanda["cpu_ratios"] == [20 / 19, 22 / 20, 21 / 21] and wanda["cpu_ratio"] == 20 / 19
    assert wanda["cpu_ratio_min"] == 1.0 and wanda["cpu_ratio_max"] == 1.1 and wanda["median_seconds"] == 11.0
    assert wanda["peak_bytes"] == 4 * 2**30 and wanda["own_peak_bytes"] == 2**30 and wanda["memory_round"]["seconds"] == 30
    assert "peak_bytes" not in report.phases["ria"]
    driver = wanda["driver_phases"]
    assert list(driver) == ["calibration_forward", "scoring", "allocation", "allocation.evidence", "other"]
    assert driver["allocation"]["seconds"] == [0, 2.0, 0] and driver["allocation"]["ratios"] == [0, 2 / 12, 0]
    assert driver["scoring"]["cpu_ratios"] == [2 / 19, 2 / 20, 2 / 21]
    # the rest: what no top-level phase timed (a sub-phase is inside its phase)
    assert driver["other"]["seconds"] == pytest.approx([11 / 2 - 1, 13.2 / 2 - 3, 10.8 / 2 - 1])

    for target in report.target_specs + ["evaluation.ratio<=1.1"]:
        report.check(target)
    ratio, seconds, ria, peak, evaluation = report.targets
    assert (ratio["measured"], ratio["min"], ratio["max"]) == (wanda["ratio"], wanda["ratio_min"], wanda["ratio_max"])
    assert ratio["repeats"] == 3 and ratio["passed"] is True
    assert (seconds["measured"], seconds["passed"]) == (11.0, True)
    assert ria["measured"] == 1.0 and ria["repeats"] == 1 and ria["passed"] is None and "at least 3" in ria["note"]
    assert peak["measured"] == 4.0 and peak["passed"] is True  # a peak: the largest, whatever the repeats
    assert evaluation["measured"] is None and evaluation["passed"] is None

    markdown = report.markdown()
    assert ("| wanda | – | – | 1.100 (1.100–1.200) | 1.053 (1.000–1.100) | 1.82 | 1.0 k / 0 | ≤ 1.15, ≤ 12 s, "
            "≤ 4 GiB | 1.00 / 4.00 |") in markdown
    assert "| floor (capture + 2 block passes) | – | – | 1.000 (0.857–1.143) | 1.000 (0.900–1.150) |" in markdown
    assert "| ria | – | – | 1.000 (1.000–1.000) | 1.000 (1.000–1.000) | 2.00 | 1.0 k / 0 | ≤ 1.15 | – |" in markdown
    assert ("| wanda | allocation › evidence | – | 0.000 (0.000–0.042) | 0.000 (0.000–0.025) | 0.000 | "
            "0 / 0 |") in markdown
    assert "| `wanda.ratio<=1.15` | 1.100 (1.100–1.200) | 3 | 1.150 | pass |" in markdown
    assert "| `ria.ratio<=1.15` | 1.000 | 1 | 1.150 | not judged: 1 repeats" in markdown
    assert "Other processes used a median 5.0% (largest 5.0%) of the machine's 2 CPUs" in markdown


def test_the_pass_ratio_counts_each_measurement_in_its_own_plain_passes_so_the_machine_s_speed_cancels():
    """Fake measurements on a machine whose speed moves (every time of a measurement scaled by ``slow``): the
    floor (capture 2 passes' worth, 10 first passes, 10 propagation passes) is always 22 passes, Wanda (its
    statistics passes 5% dearer, scoring 3 passes' worth, 9 propagation passes) 24.5, whatever the speed,
    while its wall ratio over the floors around it moves with them; a method without passes has none."""
    prune_speed = load_benchmark_module()
    report = fake_report(prune_speed, ["wanda.pass_ratio<=1.12", "wanda.ratio<=1.12", "magnitude.pass_ratio<=2",
                                       "evaluation.pass_ratio<=1"])

    def floor(slow):
        return fake(prune_speed, 22 * slow, 44 * slow, {"calibration_forward": (12 * slow, 24 * slow),
                                                        "propagation": (10 * slow, 20 * slow)}, passes=10)

    def wanda(slow):
        return fake(prune_speed, 24.5 * slow, 49 * slow, {"calibration_forward": (12.5 * slow, 25 * slow),
                                                          "scoring": (3 * slow, 6 * slow),
                                                          "propagation": (9 * slow, 18 * slow)}, passes=9)

    report.add("floor", floor(1.0))  # a method's pass ratio follows the floors added after it
    for slow, floors_around in ((1.0, (22.0, 44.0)), (2.0, (24.0, 48.0)), (1.2, (22.0, 44.0))):
        report.add("wanda", wanda(slow), floors_around)
    for slow in (1.3, 0.9, 1.1):
        report.add("floor", floor(slow))
    report.add("magnitude", fake(prune_speed, 2.0, 4.0, {"scoring": (2.0, 4.0)}), (22.0, 44.0))

    floors, entry = report.phases["floor"], report.phases["wanda"]
    assert floors["passes"] == [10] * 4 and entry["passes"] == [9] * 3
    assert floors["pass_ratios"] == pytest.approx([1.0] * 4) and entry["pass_ratios"] == pytest.approx([24.5 / 22] * 3)
    assert floors["pass_times"] == pytest.approx([s / 1.05 for s in (1.0, 1.3, 0.9, 1.1)])  # the machine's speed
    assert entry["pass_times"] == pytest.approx([1 / 1.05, 2 / 1.05, 1.2 / 1.05])
    assert entry["ratios"] == pytest.approx([24.5 / 22, 49 / 24, 29.4 / 22])  # the wall ratio keeps the speed
    assert entry["driver_phases"]["scoring"]["pass_ratios"] == pytest.approx([3 / 22] * 3)
    assert "pass_ratio" not in report.phases["magnitude"]

    for target in report.target_specs:
        report.check(target)
    passes, wall, magnitude, evaluation = report.targets
    assert passes["measured"] == pytest.approx(24.5 / 22) and passes["passed"] is True and passes["repeats"] == 3
    assert wall["measured"] == pytest.approx(29.4 / 22) and wall["passed"] is False
    assert magnitude["measured"] is None and evaluation["measured"] is None and evaluation["passed"] is None

    markdown = report.markdown()
    assert "| wanda | 1.114 (1.114–1.114) | 1.143 (0.952–1.905) | 1.336 (1.114–2.042) |" in markdown
    assert "| floor (capture + 2 block passes) | 1.000 (1.000–1.000) | 1.000 (0.857–1.238) |" in markdown
    assert "| magnitude | – | – | 0.091 (0.091–0.091) |" in markdown
    assert "| wanda | scoring | 0.136 (0.136–0.136) |" in markdown


@pytest.mark.parametrize("target", ["magnitude.pass_ratio<=2", "evaluation.pass_ratio<=1"])
def test_a_pass_ratio_target_where_no_passes_are_made_is_refused_before_measuring(target, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/prune_speed.py", "--methods", "magnitude,wanda", "--target",
                           target, "--json", str(tmp_path / "r.json"), *TINY_RUN], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"{target}: pass_ratio counts" in done.stderr, done.stderr[-2000:]
    assert "judge these on ratio" in done.stderr and not (tmp_path / "r.json").exists()


def test_evaluation_divides_each_perplexity_by_the_bare_loop_before_it():
    prune_speed = load_benchmark_module()
    ours = [fake(prune_speed, seconds, cpu) for seconds, cpu in ((2.0, 4.0), (3.0, 5.0), (2.2, 4.4))]
    bare = [fake(prune_speed, seconds, cpu) for seconds, cpu in ((2.0, 4.0), (2.0, 4.0), (2.0, 4.0))]
    entry = prune_speed.evaluation_entry("wikitext2", 8, 1024, ours, bare, SimpleNamespace(peak=5, own=2))
    assert entry["ratios"] == pytest.approx([1.0, 1.5, 1.1]) and entry["ratio"] == entry["ratios"][2]
    assert (entry["ratio_min"], entry["ratio_max"]) == (1.0, 1.5) and entry["median_seconds"] == 2.2
    assert entry["cpu_ratios"] == pytest.approx([1.0, 1.25, 1.1]) and entry["cpu_ratio"] == entry["cpu_ratios"][2]
    assert (entry["peak_bytes"], entry["own_peak_bytes"]) == (5, 2)


def test_phase_timings_record_cpu_time_and_page_faults_beside_the_wall_time():
    """A phase that writes 64 MiB it allocated after freed memory went back to the system faults its pages in;
    an allocation's block evidence is timed inside it."""
    prune_speed = load_benchmark_module()
    prune_speed.release(torch.device("cpu"))
    timings = prune_speed.PhaseTimings()
    with timings.measure("scoring"):
        torch.ones(16 * 2**20)
    assert timings.seconds["scoring"] > 0 and set(timings.usage["scoring"]) == set(prune_speed.PHASE_KEYS)
    assert timings.usage["scoring"]["cpu_seconds"] > 0 and timings.usage["scoring"]["minor_faults"] > 0
    built = SimpleNamespace(name="owl", meta=lambda key, default=None: (lambda scores: len(scores))
                            if key == "block_evidence" else default)
    allocation = prune_speed.TimedEvidence(built, timings)
    assert allocation.name == "owl" and allocation.meta("matrix_evidence") is None
    assert allocation.meta("block_evidence")([1, 2]) == 2 and "allocation.evidence" in timings.usage


def test_a_timed_repeat_keeps_the_memory_the_process_freed_and_pauses_the_garbage_collector(monkeypatch):
    """Only the memory round hands freed memory back before measuring (a timed repeat would fault it in again,
    by an amount that changes from one repeat to the next); no measurement lets the collector run inside it."""
    prune_speed, device = load_benchmark_module(), torch.device("cpu")
    trims, enabled = [], []
    monkeypatch.setattr(prune_speed, "LIBC", SimpleNamespace(malloc_trim=trims.append))
    repeat = prune_speed.timed(lambda: enabled.append(gc.isenabled()), device, memory=False)
    assert repeat.memory is None and trims == [] and enabled == [False] and gc.isenabled()
    memory_round = prune_speed.timed(lambda: enabled.append(gc.isenabled()), device)
    assert memory_round.memory is not None and trims and enabled == [False, False] and gc.isenabled()
    assert repeat.usage["seconds"] >= 0 and set(prune_speed.USAGE_KEYS[:6]) <= set(repeat.usage)


def test_the_allocator_is_set_once_to_take_tensors_from_its_heap_and_never_trim_it_by_itself(monkeypatch):
    prune_speed, calls = load_benchmark_module(), []
    mallopt = lambda param, value: calls.append((param, value)) or 1  # noqa: E731
    monkeypatch.setattr(prune_speed, "LIBC", SimpleNamespace(mallopt=mallopt))
    assert prune_speed.steady_allocator().startswith("glibc's") and calls == [(-3, 32 * 2**20), (-1, -1)]
    monkeypatch.setattr(prune_speed, "LIBC", SimpleNamespace())  # no mallopt (not glibc): left as it is
    assert prune_speed.steady_allocator() == "the C library's defaults"


def test_floor_spread_times_every_thread_count_on_one_model():
    """benchmarks/floor_spread.py: one row per run and thread count, the one model's floors each over their median."""
    done = subprocess.run([sys.executable, "benchmarks/floor_spread.py", "--runs", "2", "--threads", "1,2", *TINY_RUN],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| \d+ \| [12] \|", line)]
    assert [row.split("|")[1:3] for row in rows] == [[" 1 ", " 1 "], [" 1 ", " 2 "], [" 2 ", " 1 "], [" 2 ", " 2 "]]
    assert all(float(row.split("|")[3]) > 0 for row in rows)
    spreads = re.findall(r"(\d) thread\(s\): each floor / their median (\d\.\d+)–(\d\.\d+)", done.stdout)
    assert [count for count, _, _ in spreads] == ["1", "2"]
    assert all(float(low) <= 1.0 <= float(high) for _, low, high in spreads)
    assert done.stdout.startswith("Produced by `python benchmarks/floor_spread.py --runs 2")
