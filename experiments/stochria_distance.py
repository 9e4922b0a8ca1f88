"""How far are stochRIA masks from RIA's as the sampling ratio β shrinks?

Prunes the configured model with RIA (the default run config plus any Hydra overrides
given on the command line) and, at every linear layer, also computes the stochRIA mask
for several β from the same weights and statistics. Prints (and writes with --out) a
Markdown table: the fraction of mask entries that differ from RIA's, averaged over
blocks per sublayer, and over all layers.

    SYMPRUNE_ASSETS=../shared/assets python experiments/stochria_distance.py \
        --out experiments/results/stochria_distance.md calibration.nsamples=32 calibration.seqlen=512
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from hydra import compose, initialize_config_dir

import symprune.config  # noqa: F401  (the run schema)
from symprune.driver import prune_model
from symprune.method import build_method
from symprune.runner import load_inputs, load_placed_model, plan_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
BETAS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)


class RIAWithStochRIAShadows:
    """A method for the driver: prunes with RIA, and records each stochRIA mask's distance from RIA's."""

    def __init__(self, ria, shadows):
        self.ria, self.shadows = ria, shadows
        self.required_stats = ria.required_stats
        self.differences: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def prune_layer(self, name, weight, stats):
        result = self.ria.prune_layer(name, weight, stats)
        sublayer = re.sub(r"^.*\.\d+\.", "", name)
        for beta, method in self.shadows.items():
            shadow = method.prune_layer(name, weight, stats).pruned
            self.differences[beta][sublayer].append(float((shadow != result.pruned).float().mean()))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["score=ria", *args.overrides])
        shadows = {
            beta: build_method(compose("config", overrides=["score=stochria", f"score.beta={beta}", *args.overrides]).score, cfg.sparsity, cfg.refine)
            for beta in BETAS
        }
    plan = plan_run(cfg)
    run = plan.settings
    calibration = load_inputs(plan).calibration
    model = load_placed_model(plan)
    method = RIAWithStochRIAShadows(plan.method, shadows)
    prune_model(model, method, calibration, placement=plan.placement, progress=run.progress)

    sublayers = list(method.differences[BETAS[0]])
    pattern = plan.method.describe()["sparsity"]
    lines = [
        f"Fraction of mask entries where stochRIA differs from RIA ({pattern}), mean over blocks; "
        f"{run.model.name}, calibration {run.calibration.name} {run.calibration.nsamples} x {run.calibration.seqlen}.",
        "",
        "| β | " + " | ".join(sublayers) + " | all layers |",
        "|---|" + "---|" * (len(sublayers) + 1),
    ]
    for beta in BETAS:
        per_sublayer = method.differences[beta]
        everything = [value for values in per_sublayer.values() for value in values]
        cells = [f"{sum(v) / len(v):.4f}" for v in per_sublayer.values()] + [f"{sum(everything) / len(everything):.4f}"]
        lines.append(f"| {beta} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
