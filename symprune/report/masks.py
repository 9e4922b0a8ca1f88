"""``symprune-masks compare REFERENCE OTHER [OTHER ...]``: how far saved masks are from a reference.

For every other mask set against the reference: per linear layer, per block, per sublayer type (the
layer's name after its block index, e.g. ``self_attn.q_proj``) and overall, the fraction of entries
that differ and the IoU (intersection over union) of the pruned sets. Markdown and CSV tables, and a
PNG heat map (block × sublayer) of the differing fraction per compared set.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from symprune.errors import ConfigError  # noqa: E402
from symprune.model.masks import MaskSet, load_masks, masks_path  # noqa: E402
from symprune.report.provenance import generated_line, png_metadata  # noqa: E402
from symprune.run.record import RECORD_NAME  # noqa: E402


@dataclass
class Counts:
    """Entry counts of one comparison, summable over layers."""

    entries: int = 0
    differing: int = 0
    intersection: int = 0
    union: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.entries + other.entries, self.differing + other.differing,
                      self.intersection + other.intersection, self.union + other.union)

    @property
    def differing_fraction(self) -> float:
        return self.differing / self.entries

    @property
    def iou(self) -> float:
        return self.intersection / self.union if self.union else 1.0


def layer_counts(reference: MaskSet, other: MaskSet) -> dict[str, Counts]:
    if set(reference.shapes) != set(other.shapes) or any(reference.shapes[n] != other.shapes[n] for n in reference.shapes):
        raise ConfigError("the mask sets cover different layers or shapes: compare masks of the same model")
    counts = {}
    for name in sorted(reference.shapes):
        a, b = reference.mask(name), other.mask(name)
        counts[name] = Counts(a.numel(), int((a ^ b).sum()), int((a & b).sum()), int((a | b).sum()))
    return counts


def block_and_sublayer(name: str) -> tuple[int, str]:
    """``model.layers.3.self_attn.q_proj`` -> (3, ``self_attn.q_proj``): the first numeric path component
    is the block, what follows it the sublayer, for every model family."""
    match = re.search(r"\.(\d+)\.(.+)$", name)
    if match is None:
        raise ConfigError(f"layer name {name} has no block index")
    return int(match.group(1)), match.group(2)


def grouped(counts: dict[str, Counts], by: int) -> dict:
    groups: dict = {}
    for name, value in counts.items():
        key = block_and_sublayer(name)[by]
        groups[key] = groups.get(key, Counts()) + value
    return dict(sorted(groups.items()))


def labels(locations: Sequence[str]) -> list[str]:
    """Each location's label: a run directory by the overrides that tell it apart from the others (its
    command line, less what every compared run shares), a mask file by its path."""
    overrides = []
    for location in locations:
        record = Path(location) / RECORD_NAME
        overrides.append(json.loads(record.read_text()).get("overrides") or [] if record.is_file() else None)
    shared = set.intersection(*(set(o) for o in overrides if o is not None)) if any(o is not None for o in overrides) else set()
    return [" ".join(o for o in own if o not in shared) or location if own is not None else location
            for location, own in zip(locations, overrides)]


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines) + "\n"


def compare(locations: Sequence[str], out: Path | None, command: str) -> str:
    reference = load_masks(locations[0])
    names = labels(locations)
    comparisons = [(names[i], layer_counts(reference, load_masks(location))) for i, location in enumerate(locations[1:], 1)]
    totals = [(name, sum(counts.values(), Counts())) for name, counts in comparisons]
    groups = {title: [grouped(counts, by) for _, counts in comparisons] for title, by in (("sublayer", 1), ("block", 0))}
    sections = [
        generated_line("md", command),
        f"# Masks compared with {names[0]}", "",
        markdown_table(["compared", "entries differing", "IoU of the pruned sets"],
                       [[name, percent(total.differing_fraction), f"{total.iou:.4f}"] for name, total in totals]),
    ]
    for title, per_comparison in groups.items():
        keys = list(per_comparison[0]) if per_comparison else []
        table = [[str(key), *(f"{percent(group[key].differing_fraction)} / {group[key].iou:.4f}" for group in per_comparison)]
                 for key in keys]
        sections += [f"## Per {title} (entries differing / IoU)", "",
                     markdown_table([title, *(name for name, _ in comparisons)], table)]
    text = "\n".join(sections)
    if out is not None:
        rows = [["compared", "level", "key", "entries", "differing_fraction", "iou"]]
        for index, (name, counts) in enumerate(comparisons):
            for title, per_comparison in groups.items():
                rows += [[name, title, key, *_fields(value)] for key, value in per_comparison[index].items()]
            rows += [[name, "layer", layer, *_fields(value)] for layer, value in counts.items()]
            rows.append([name, "overall", "", *_fields(totals[index][1])])
        out.mkdir(parents=True, exist_ok=True)
        (out / "masks_compared.md").write_text(text)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        (out / "masks_compared.csv").write_text(f"{generated_line('csv', command)}\n{buffer.getvalue()}")
        heat_map(comparisons, out / "masks_compared.png", command)
    return text


def _fields(value: Counts) -> list:
    return [value.entries, value.differing_fraction, value.iou]


def heat_map(comparisons: Sequence[tuple[str, dict[str, Counts]]], path: Path, command: str) -> Path:
    """One panel per compared set: the differing fraction per block (rows) and sublayer (columns)."""
    figure, axes = plt.subplots(1, len(comparisons), figsize=(4 + 3 * len(comparisons), 6), squeeze=False)
    for axis, (name, counts) in zip(axes[0], comparisons):
        blocks = sorted({block_and_sublayer(layer)[0] for layer in counts})
        sublayers = sorted({block_and_sublayer(layer)[1] for layer in counts})
        grid = [[0.0] * len(sublayers) for _ in blocks]
        for layer, value in counts.items():
            block, sublayer = block_and_sublayer(layer)
            grid[blocks.index(block)][sublayers.index(sublayer)] = 100 * value.differing_fraction
        image = axis.imshow(grid, aspect="auto", cmap="viridis")
        axis.set_xticks(range(len(sublayers)), sublayers, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(blocks)), [str(block) for block in blocks], fontsize=7)
        axis.set_ylabel("block")
        axis.set_title(name, fontsize=8)
        figure.colorbar(image, ax=axis, label="% entries differing")
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata=png_metadata(command))
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="symprune-masks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare_cmd = commands.add_parser("compare", help="fraction of differing entries and IoU against the first mask set")
    compare_cmd.add_argument("locations", nargs="+", help="run directories (with masks.safetensors) or mask files")
    compare_cmd.add_argument("--out", help="also write masks_compared.{md,csv,png} into this directory")
    args = parser.parse_args(argv)
    if len(args.locations) < 2:
        parser.exit(2, "symprune-masks compare: give a reference and at least one mask set to compare with it\n")
    try:
        for location in args.locations:
            if not masks_path(location).is_file():
                raise ConfigError(f"no mask file at {masks_path(location)}")
        command = "symprune-masks " + " ".join(shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:]))
        print(compare(args.locations, Path(args.out) if args.out else None, command), end="")
    except ConfigError as error:
        parser.exit(2, f"symprune-masks: {error}\n")


if __name__ == "__main__":
    main()
