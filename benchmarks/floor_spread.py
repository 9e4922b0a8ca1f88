"""The machine's own spread: the floor (capture + two passes of every block) run again and again on one loaded model
and the same calibration activations, alternating thread counts, with nothing to prune and nothing allocated anew.
What differs between these runs is the machine, not symprune: prune_speed.py's repeats can differ by no less.

    SYMPRUNE_ASSETS=../shared/assets python benchmarks/floor_spread.py --runs 3 --threads 1,2
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys

import torch
from hydra import compose, initialize_config_dir

from prune_speed import BASE_OVERRIDES, floor, timed
from symprune.config import CONFIG_DIR
from symprune.run.plan import plan_run
from symprune.run.runner import load_inputs, load_placed_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="floors per thread count")
    parser.add_argument("--threads", default=str(torch.get_num_threads()), help="comma-separated thread counts")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, after the benchmark's own")
    args = parser.parse_args()
    counts = [int(count) for count in args.threads.split(",")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plan = plan_run(compose("config", overrides=[*BASE_OVERRIDES, "score=wanda", *args.overrides]))
    calibration = load_inputs(plan).calibration
    model = load_placed_model(plan)
    floor(model, calibration, plan)  # warm-up: first calls, the heap grown
    seconds: dict[int, list[float]] = {count: [] for count in counts}
    print(f"Produced by `python {shlex.join(sys.argv)}`\n")
    print("| run | threads | seconds | CPU seconds | CPU / wall | minor faults | others' CPU seconds |")
    print("|---|---|---|---|---|---|---|")
    for run in range(args.runs):
        for count in counts:
            torch.set_num_threads(count)
            used = timed(lambda: floor(model, calibration, plan), plan.device, memory=False).usage
            seconds[count].append(used["seconds"])
            print(f"| {run + 1} | {count} | {used['seconds']:.2f} | {used['cpu_seconds']:.2f} | "
                  f"{used['cpu_seconds'] / used['seconds']:.2f} | {used['minor_faults']} | "
                  f"{used.get('others_cpu_seconds', float('nan')):.2f} |", flush=True)
    for count, values in seconds.items():
        middle = statistics.median(values)
        print(f"\n{count} thread(s): each floor / their median {min(values) / middle:.3f}–{max(values) / middle:.3f}")


if __name__ == "__main__":
    main()
