"""PNG plots of an experiment: the metric against one key (sparsity, p, β, γ, ...), a line per series,
a panel per value of the panel keys. x values are placed in numeric order when they are numbers
(∞ last), else in first-seen order. A point averaged over calibration seeds (as in the tables) has
an error bar of one sample standard deviation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from symprune.report.provenance import png_metadata  # noqa: E402
from symprune.report.records import Aggregate, Record, combine, dotted, newest_per_config, numeric_order  # noqa: E402


def plot_table(records: Sequence[Record], spec: dict[str, Any], path: Path, title: str = "",
               command: str = "") -> Path:
    plot = spec["plot"]
    metric = plot.get("metric", spec["metric"])
    records, _ = newest_per_config(records)
    claims: dict[str, dict[str, dict[Any, list[tuple[Record, Any]]]]] = {}
    xs: list[Any] = []
    for record in sorted(records, key=lambda r: r.finished):
        value = dotted(record.data, metric)
        x = record.value(plot["x"])
        if value is None or x is None:
            continue
        panel = record.label(plot.get("panels", [])) or "all"
        series = record.label(plot["series"])
        claims.setdefault(panel, {}).setdefault(series, {}).setdefault(x, []).append((record, value))
        xs += [] if x in xs else [x]
    points: dict[str, dict[str, dict[Any, Aggregate]]] = {
        panel: {series: {x: combine(group) for x, group in by_x.items()} for series, by_x in by_series.items()}
        for panel, by_series in claims.items()
    }
    xs = numeric_order(xs)
    panels = list(points)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for series, values in points[panel].items():
            present = [x for x in xs if x in values]
            positions, means = [xs.index(x) for x in present], [values[x].mean for x in present]
            if any(values[x].n > 1 for x in present):
                axis.errorbar(positions, means, yerr=[values[x].std or 0.0 for x in present], marker="o", capsize=3,
                              label=series)
            else:
                axis.plot(positions, means, marker="o", label=series)
        axis.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30 if len(xs) > 4 else 0)
        axis.set_xlabel(plot["x"])
        axis.set_ylabel(plot.get("ylabel", metric.split(".")[-2] + " " + metric.split(".")[-1]))
        axis.set_title(panel if panel != "all" else title)
        if plot.get("log_y"):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata=png_metadata(command) if command else None)
    plt.close(figure)
    return path
