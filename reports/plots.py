"""The two plots, drawn with matplotlib and returned as inline SVG text.

Aggregates, not points: the full tier has tens of thousands of results and one
SVG element per result would dominate the page. Text stays text (svg.fonttype
none, no mathtext), so a library string in a label is escaped by matplotlib's
XML writer and never parsed as markup or math.
"""

from __future__ import annotations

import io
import statistics
from collections import defaultdict
from typing import Any

from conformance.case import DTYPES
from conformance.records import BACKWARD, FORWARD
from reports.load import Merged

FLOOR_ABS = 1e-18  # where an exact 0 error is drawn on a log axis
FLOOR_HEADROOM = 1e-6


def _pyplot() -> Any:
    """Imported here so `pytest conformance --no-report` never pays for matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "gru-conformance",  # stable ids: the same data gives the same page
            "text.parse_math": False,
            "font.size": 8,
            "axes.titlesize": 9,
            "figure.dpi": 72,
        }
    )
    return plt


def _log_axis(axis: Any, plain: bool = False) -> None:
    """Tick labels as plain text ("1e-08", "260"): mathtext is off, so the default formatter would print TeX."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def label(value: float, _position: int) -> str:
        if value <= 0:
            return ""
        if plain:
            return f"{value:g}"
        exponent = math.log10(value)
        return f"1e{round(exponent)}" if abs(exponent - round(exponent)) < 1e-9 else ""

    axis.set_major_locator(LogLocator(base=10, numticks=8))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(NullFormatter())


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _colours(names: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def error_vs_length(merged: Merged) -> str | None:
    """Largest absolute error against seq_len, one panel per dtype, median line and min-max band per column.

    Forward results only: a gradient's error has the gradient's scale, which grows with the sums it is."""
    data: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for entry in merged.entries:
        if entry.quantity != FORWARD:
            continue
        error = entry.max_abs
        if error is None or error != error:  # None or NaN
            continue
        seq_len = entry.case.get("seq_len")
        if seq_len is None:
            raise ValueError(f"result for case {entry.case_id} ({entry.column}) has no seq_len")
        data[entry.case.get("dtype", "?")][entry.column][seq_len].append(max(error, FLOOR_ABS))
    if not data:
        return None
    plt = _pyplot()
    dtypes = [d for d in DTYPES if d in data] + sorted(set(data) - set(DTYPES))
    columns = [c.key for c in merged.columns if any(c.key in data[d] for d in dtypes)]
    colours = _colours(columns)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(2.6 * len(dtypes) + 0.4, 2.4), squeeze=False, sharex=True)
    ticks = sorted({t for by_column in data.values() for series in by_column.values() for t in series})
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Limits set by hand: one value (a single case) would make matplotlib's autoscale degenerate.
        finite = [v for series in data[dtype].values() for vs in series.values() for v in vs if v != float("inf")]
        low, high = (min(finite), max(finite)) if finite else (FLOOR_ABS, 1.0)
        ax.set_ylim(low / 3, high * 3)
        ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
        for column in columns:
            series = data[dtype].get(column)
            if not series:
                continue
            lengths = sorted(series)
            per_length = [[v for v in series[t] if v != float("inf")] or [FLOOR_ABS] for t in lengths]
            ax.plot(
                lengths,
                [statistics.median(v) for v in per_length],
                marker="o",
                ms=3,
                lw=1.2,
                color=colours[column],
                label=column,
            )
            if len(lengths) > 1:  # a band over a single seq_len would be invisible
                ax.fill_between(
                    lengths,
                    [min(v) for v in per_length],
                    [max(v) for v in per_length],
                    color=colours[column],
                    alpha=0.15,
                    lw=0,
                )
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(lambda value, _position: f"{value:g}")
        ax.xaxis.set_minor_formatter("")
        _log_axis(ax.yaxis)
        ax.set_title(dtype)
        ax.set_xlabel("seq_len")
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    axes[0][0].set_ylabel("max |error|")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(4, len(labels)),
        frameon=False,
        bbox_to_anchor=(0.5, -0.02 - 0.05 * (len(labels) // 4)),
    )
    fig.tight_layout(rect=(0, 0.12 + 0.04 * (len(labels) // 4), 1, 1))
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _row(column: str, quantity: str) -> str:
    return column if quantity == FORWARD else f"{column} ({quantity})"


def headroom_distribution(merged: Merged) -> str | None:
    """Box per column of worst headroom (error / tolerance) on a log axis; 1 is the tolerance. A column's
    backward results (gradients) get their own box under its forward one, in the same colour."""
    values: dict[str, list[float]] = defaultdict(list)
    for entry in merged.entries:
        headroom = entry.worst_headroom
        if headroom is not None and headroom == headroom and headroom != float("inf"):
            values[_row(entry.column, entry.quantity)].append(max(headroom, FLOOR_HEADROOM))
    if not values:
        return None
    plt = _pyplot()
    rows = [(c.key, _row(c.key, q)) for c in merged.columns for q in (FORWARD, BACKWARD) if _row(c.key, q) in values]
    columns = [row for _, row in rows]
    base = _colours([c.key for c in merged.columns])
    colours = {row: base[column] for column, row in rows}
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(columns) + 0.9))
    boxes = ax.boxplot(
        [values[c] for c in columns],
        orientation="horizontal",
        whis=(0, 100),
        showfliers=False,
        widths=0.6,
        patch_artist=True,
    )
    for patch, column in zip(boxes["boxes"], columns, strict=True):
        patch.set_facecolor(colours[column])
        patch.set_alpha(0.5)
    ax.set_yticks(range(1, len(columns) + 1), [f"{c} (n={len(values[c])})" for c in columns])
    ax.invert_yaxis()
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.axvline(1.0, color="#c0392b", ls="--", lw=1)
    ax.text(1.0, 1.0, " tolerance", color="#c0392b", transform=ax.get_xaxis_transform(), va="bottom", fontsize=7)
    ax.set_xlabel("worst headroom per case (max |error| / tolerance; > 1 fails)")
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    fig.tight_layout()
    svg = _svg(fig)
    plt.close(fig)
    return svg
