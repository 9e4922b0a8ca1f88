"""What DSnoT / R²-DSnoT did in each run, from the run records' per-layer refinement info.

One Markdown row per refined run: layers refined, layers whose Σ_i|e_i| grew, Σ|e| over the refined
layers before and after, swaps, cycles (mean over refined layers) and rows still active at the end.

    python experiments/refinement_error.py outputs/experiments/refinement --out experiments/results/refinement_error.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from symprune.tables import find_records

LABEL = ("refine", "refine.reweight", "score", "sparsity.ratio", "calibration.nsamples")
COLUMNS = ("refinement, score, ratio, samples", "layers refined", "layers with larger Σ|e|", "Σ|e| before",
           "Σ|e| after", "swaps", "mean cycles", "rows active at the end")


def summary(layers: list[dict]) -> list[str]:
    refined = [layer["info"] for layer in layers if layer["info"].get("refined")]
    before = sum(info["abs_error_before"] for info in refined)
    after = sum(info["abs_error_after"] for info in refined)
    return [
        str(len(refined)),
        str(sum(info["abs_error_after"] > info["abs_error_before"] for info in refined)),
        f"{before:.4g}",
        f"{after:.4g}",
        str(sum(info["swaps"] for info in refined)),
        f"{sum(info['cycles'] for info in refined) / max(len(refined), 1):.1f}",
        str(sum(info["active_rows"] for info in refined)),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = sorted(
        ([record.label(LABEL), *summary(record.data["layers"])] for record in find_records(args.directories)
         if record.value("refine") != "none"),
        key=lambda row: row[0],
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(table)
    else:
        print(table, end="")


if __name__ == "__main__":
    main()
