"""Matrix rows (features), cells, the diffable JSON summary and `--compare`.

A feature is one condition on one case field (`num_layers == 2`, `seq_len >= 256`),
so the page's JavaScript can apply the very same condition to list a cell's cases
without a second copy of the logic.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import schema
from conformance.case import DTYPES, LENGTHS
from conformance.pairs import CHECKED, Coverage, coverage, unit
from conformance.records import BACKWARD, FORWARD
from conformance.schema import SchemaError
from conformance.verdict import Verdict
from reports.load import FLAKY, Entry, Merged

LONG_SEQUENCE = 256
SUMMARY_SCHEMA = 1
FAILING = (*(v.value for v in Verdict if v.failing), FLAKY)
DIVERGING = (Verdict.KNOWN_DIVERGENCE.value, Verdict.CONVENTION.value)
# Cell status, and the legend's wording for it.
STATUSES = {
    "pass": "all pass",
    "mixed": "pass where supported",
    "fail": "some fail",
    "flaky": "flaky (verdicts disagree)",
    "known": "known divergence",
    "convention": "convention difference (padded positions)",
    "unsupported": "unsupported",
    "not_run": "not run",
}


@dataclass(frozen=True)
class Feature:
    key: str
    label: str
    dim: str | None = None
    op: str = "=="
    value: Any = None

    def matches(self, case: dict[str, Any]) -> bool:
        if self.dim is None:
            return True
        got = case.get(self.dim)
        if self.op == ">=":
            return got is not None and got >= self.value
        return got == self.value

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "dim": self.dim, "op": self.op, "value": self.value}


LENGTH_LABELS = {
    "dense": "dense (not packed)",
    "sorted": "packed, sorted",
    "unsorted": "packed, unsorted",
    "full": "packed, full lengths",
    "zero": "packed, an item of length 0",
}


def candidate_features(entries: list[Entry]) -> list[Feature]:
    """Every row the matrix can have, in reading order; value-driven rows follow the data."""
    layers = sorted({n for e in entries if (n := e.case.get("num_layers")) is not None})
    rows = [Feature("all", "all cases")]
    rows += [Feature(f"num_layers={n}", f"{n} layer{'s' if n != 1 else ''}", "num_layers", "==", n) for n in layers]
    rows += [
        Feature("bidirectional", "bidirectional", "bidirectional", "==", True),
        Feature("batch_first", "batch_first", "batch_first", "==", True),
        Feature("no_bias", "no bias", "bias", "==", False),
        Feature("h0", "initial state h0", "initial_state", "==", True),
    ]
    rows += [Feature(f"lengths={v}", LENGTH_LABELS[v], "lengths", "==", v) for v in LENGTHS]
    rows += [
        Feature("seq_len=1", "single step (seq_len 1)", "seq_len", "==", 1),
        Feature(
            f"seq_len>={LONG_SEQUENCE}", f"long sequence (seq_len ≥ {LONG_SEQUENCE})", "seq_len", ">=", LONG_SEQUENCE
        ),
        Feature("batch=1", "batch 1", "batch", "==", 1),
        Feature("hidden_size=1", "hidden size 1", "hidden_size", "==", 1),
    ]
    rows += [Feature(f"dtype={d}", d, "dtype", "==", d) for d in DTYPES]
    rows.append(Feature("export_shape=other", "traced at another shape (B4T7)", "export_shape", "==", "other"))
    rows.append(Feature("export_shape=degenerate", "traced at batch 1, seq_len 1", "export_shape", "==", "degenerate"))
    return rows


def features(entries: list[Entry]) -> list[Feature]:
    """The rows that at least one case of this report falls in."""
    return [f for f in candidate_features(entries) if any(f.matches(e.case) for e in entries)]


@dataclass
class Cell:
    counts: Counter[str]
    worst_headroom: float | None

    @property
    def n(self) -> int:
        """Cases attempted: a skipped case (backend not installed here) was never tried."""
        return sum(v for k, v in self.counts.items() if k != "skipped")

    @property
    def passed(self) -> int:
        return self.counts["pass"]

    @property
    def status(self) -> str:
        if self.n == 0:
            return "not_run"
        if self.counts[FLAKY]:
            return "flaky"
        if any(self.counts[v] for v in FAILING):
            return "fail"
        if self.counts[Verdict.KNOWN_DIVERGENCE.value]:
            return "known"
        if self.counts[Verdict.CONVENTION.value]:
            return "convention"
        if self.counts["unsupported"] == self.n:
            return "unsupported"
        return "mixed" if self.counts["unsupported"] else "pass"

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "passed": self.passed,
            "counts": dict(sorted(self.counts.items())),
            "worst_headroom": round_sig(self.worst_headroom),
            "status": self.status,
        }


def round_sig(value: float | None, digits: int = 3) -> float | None:
    """Rounded so that noise in the last bits does not show up as a diff."""
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def cells(merged: Merged, rows: list[Feature], quantity: str = FORWARD) -> dict[str, dict[str, Cell]]:
    """column key -> feature key -> cell, over one quantity's results (forward: outputs; backward: gradients)."""
    table: dict[str, dict[str, Cell]] = {c.key: {f.key: Cell(Counter(), None) for f in rows} for c in merged.columns}
    for entry in merged.entries:
        if entry.quantity != quantity:
            continue
        headroom = entry.worst_headroom
        for feature in rows:
            if not feature.matches(entry.case):
                continue
            cell = table[entry.column][feature.key]
            cell.counts[entry.verdict] += 1
            if headroom is not None and (cell.worst_headroom is None or headroom > cell.worst_headroom):
                cell.worst_headroom = headroom
    return table


@dataclass
class ColumnCoverage:
    """What a column checked and how much of its own space of value pairs that covers (over every run merged)."""

    tests: int
    checked: int
    coverage: Coverage | None  # None when no run recorded the column's space (smoke, --case)

    def short(self) -> str:
        """The column heading's line: `16 checked · 352/352 pairs`."""
        if self.coverage is None:
            return f"{self.checked} checked"
        return f"{self.checked} checked · {self.coverage.fraction()} {unit(self.coverage.strength).split()[-1]}"

    def describe(self) -> str:
        text = f"checked {self.checked} of {self.tests} cases"
        return text + (f"; {self.coverage.describe()}" if self.coverage is not None else "")

    def as_dict(self) -> dict[str, Any]:
        pairs = None if self.coverage is None else [len(self.coverage.covered), len(self.coverage.space)]
        return {"tests": self.tests, "checked": self.checked, "pairs": pairs}


def column_coverage(merged: Merged) -> dict[str, ColumnCoverage]:
    """Column key -> its coverage; a case counts as checked when any run compared its output (in the quantity
    its coverage records count: the forward check unless the runs checked gradients only)."""
    checked_names = {v.value for v in CHECKED}
    counted = {c.key: c.covered_quantity for c in merged.columns}
    by_column: dict[str, list[Entry]] = {}
    for entry in merged.entries:
        if entry.quantity == counted.get(entry.column, FORWARD):
            by_column.setdefault(entry.column, []).append(entry)
    found: dict[str, ColumnCoverage] = {}
    for column in merged.columns:
        mine = by_column.get(column.key, [])
        checked = [e for e in mine if any(r["verdict"] in checked_names for r in e.seen)]
        covers = None
        if column.space is not None:
            covers = coverage(column.space, column.dimensions, [e.case for e in checked], column.strength)
        found[column.key] = ColumnCoverage(len(mine), len(checked), covers)
    return found


CROSS_DEVICE = "cross_device"  # the summary's key, and the feature a `--compare` line names
BACKWARD_CELLS = BACKWARD  # the summary's key of the backward matrix (column -> feature -> cell)
CROSS_DEVICE_LABEL = "cross-device (CPU vs GPU)"


def cross_device_cells(merged: Merged) -> dict[str, Cell]:
    """Pair key -> one cell over its cases: `passed` is the cases where both devices agree."""
    table = {pair.key: Cell(Counter(), None) for pair in merged.pairs}
    for entry in merged.cross_device:
        cell = table[entry.column]
        cell.counts[entry.verdict] += 1
        headroom = entry.worst_headroom
        if headroom is not None and (cell.worst_headroom is None or headroom > cell.worst_headroom):
            cell.worst_headroom = headroom
    return table


def summary(
    merged: Merged,
    rows: list[Feature],
    table: dict[str, dict[str, Cell]],
    cross: dict[str, Cell] | None = None,
    backward: dict[str, dict[str, Cell]] | None = None,
    covered: dict[str, ColumnCoverage] | None = None,
) -> dict[str, Any]:
    """The machine-readable twin of the matrices: same input, byte-identical output. `cells` is the forward
    matrix; `backward` the backward one (gradients), columns that ran no backward check left out."""
    backward_cells = {
        column: {key: cell.as_dict() for key, cell in row.items()}
        for column, row in (backward or {}).items()
        if any(cell.n or cell.counts for cell in row.values())
    }
    return {
        # Column -> tests, checked, and [covered, total] value pairs of its own space (null when not recorded).
        "coverage": {key: c.as_dict() for key, c in sorted((covered or {}).items())},
        "schema": SUMMARY_SCHEMA,
        "partial": merged.partial,
        "runs": sorted(
            (
                {
                    "run_id": r.run_id,
                    "tier": r.options.get("tier"),
                    "seed": r.options.get("seed"),
                    "environment": r.env_label or None,
                }
                for r in merged.runs
            ),
            key=lambda d: str(d["run_id"]),
        ),
        "features": {f.key: f.label for f in rows},
        "cells": {column: {key: cell.as_dict() for key, cell in row.items()} for column, row in table.items()},
        # Pair key ("torch[cpu] vs torch[cuda]", "@ environment" when several) -> cell; `passed` = agreeing cases.
        CROSS_DEVICE: {key: cell.as_dict() for key, cell in sorted((cross or {}).items())},
        BACKWARD_CELLS: backward_cells,
    }


class SummaryError(SchemaError):
    """A `--compare` summary that isn't one this renderer wrote; names the file, the cell and the field."""


def _cell(where: schema.Where, value: Any, field: str) -> dict[str, Any]:
    cell = schema.table(where, value, field, "a cell (a table with n, passed, status, counts)")
    schema.check_keys(where.at(field), cell, ("n", "passed", "counts", "worst_headroom", "status"), ("n", "passed"))
    schema.integer(where, cell["n"], f"{field}.n", minimum=0)
    schema.integer(where, cell["passed"], f"{field}.passed", minimum=0)
    if "status" in cell:
        schema.one_of(where, cell["status"], f"{field}.status", RANK)
    counts = schema.table(where, cell.get("counts", {}), f"{field}.counts")
    for verdict, count in counts.items():
        schema.integer(where, count, f"{field}.counts.{verdict}", minimum=0)
    if cell.get("worst_headroom") is not None:
        schema.number(where, cell["worst_headroom"], f"{field}.worst_headroom")
    return cell


def read_summary(path: Path) -> dict[str, Any]:
    """A JSON summary to `--compare` with, validated: every cell `compare` reads has the fields it reads."""
    data = schema.read_json(path, "JSON summary", SummaryError)
    where = schema.Where(str(path), error=SummaryError)
    if not isinstance(data, dict):
        raise where.expected("", "a JSON object (a report's .summary.json)", data)
    if data.get("schema") != SUMMARY_SCHEMA:
        raise where.fail(f"summary schema {data.get('schema')!r}; this renderer reads schema {SUMMARY_SCHEMA}")
    features = schema.table(where, data.get("features", {}), "features")
    for key, label in features.items():
        if not isinstance(label, str):
            raise where.expected(f"features.{key}", "a label (string)", label)
    for column, row in schema.table(where, data.get("cells", {}), "cells").items():
        for feature, cell in schema.table(where, row, f"cells[{column!r}]").items():
            _cell(where, cell, f"cells[{column!r}][{feature!r}]")
    for pair, cell in schema.table(where, data.get(CROSS_DEVICE, {}), CROSS_DEVICE).items():
        _cell(where, cell, f"{CROSS_DEVICE}[{pair!r}]")
    for column, row in schema.table(where, data.get(BACKWARD_CELLS, {}), BACKWARD_CELLS).items():
        for feature, cell in schema.table(where, row, f"{BACKWARD_CELLS}[{column!r}]").items():
            _cell(where, cell, f"{BACKWARD_CELLS}[{column!r}][{feature!r}]")
    return data


def write_summary(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# A headroom change counts only if it at least doubles (or halves) and the larger
# side is of a size that matters; 1e-5 -> 3e-5 is noise, 0.3 -> 0.9 is not.
HEADROOM_FACTOR = 2.0
HEADROOM_FLOOR = 0.1
RANK = {"pass": 0, "mixed": 1, "not_run": 1, "unsupported": 2, "convention": 3, "known": 3, "fail": 4, "flaky": 5}


@dataclass
class Change:
    direction: str  # worse, better, added, removed
    column: str
    feature: str
    label: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {
            "direction": self.direction,
            "column": self.column,
            "feature": self.feature,
            "label": self.label,
            "why": self.why,
        }

    def line(self) -> str:
        return f"{self.direction:<7} {self.column} × {self.label}: {self.why}"


def _bad(cell: dict[str, Any]) -> int:
    return sum(cell.get("counts", {}).get(v, 0) for v in FAILING)


def _fraction(cell: dict[str, Any]) -> float:
    return cell["passed"] / cell["n"] if cell.get("n") else 0.0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Cells (and cross-device pairs) that got worse or better between two summaries, worst news first."""
    if old.get("schema") != SUMMARY_SCHEMA:
        raise ValueError(f"old summary has schema {old.get('schema')!r}; this renderer reads schema {SUMMARY_SCHEMA}")
    labels = {**old.get("features", {}), **new.get("features", {})}
    changes: list[Change] = []
    # The backward matrix's columns read "torch[cpu] (backward)"; a summary from before it has no such key.
    for key, suffix in (("cells", ""), (BACKWARD_CELLS, f" ({BACKWARD})")):
        old_cells, new_cells = old.get(key, {}), new.get(key, {})
        for column in sorted(set(old_cells) | set(new_cells)):
            before, after = old_cells.get(column, {}), new_cells.get(column, {})
            for feature in sorted(set(before) | set(after)):
                change = _cell_change(
                    column + suffix, feature, labels.get(feature, feature), before.get(feature), after.get(feature)
                )
                if change is not None:
                    changes.append(change)
    # A summary from before the cross-device section has no such key: every pair then reads as added.
    old_pairs, new_pairs = old.get(CROSS_DEVICE, {}), new.get(CROSS_DEVICE, {})
    for pair in sorted(set(old_pairs) | set(new_pairs)):
        change = _cell_change(pair, CROSS_DEVICE, CROSS_DEVICE_LABEL, old_pairs.get(pair), new_pairs.get(pair))
        if change is not None:
            changes.append(change)
    order = {"worse": 0, "removed": 1, "better": 2, "added": 3}
    return sorted(changes, key=lambda c: (order[c.direction], c.column, c.feature))


def _cell_change(
    column: str, feature: str, label: str, a: dict[str, Any] | None, b: dict[str, Any] | None
) -> Change | None:
    """How one cell moved between two summaries; None when it did not (noticeably)."""
    if a is None or not a.get("n"):
        if b is not None and b.get("n"):
            return Change("added", column, feature, label, f"now {b['passed']}/{b['n']} passed")
        return None
    if b is None or not b.get("n"):
        return Change("removed", column, feature, label, f"was {a['passed']}/{a['n']} passed")
    worse, better = [], []
    passed = f"passed {a['passed']}/{a['n']} → {b['passed']}/{b['n']}"
    if _bad(b) > _bad(a) or _fraction(b) < _fraction(a):
        worse.append(passed)
    elif _bad(b) < _bad(a) or _fraction(b) > _fraction(a):
        better.append(passed)
    if RANK[b["status"]] > RANK[a["status"]]:
        worse.append(f"{a['status']} → {b['status']}")
    elif RANK[b["status"]] < RANK[a["status"]]:
        better.append(f"{a['status']} → {b['status']}")
    ha, hb = a.get("worst_headroom"), b.get("worst_headroom")
    if ha is not None and hb is not None and max(ha, hb) >= HEADROOM_FLOOR:
        text = f"worst headroom {_fmt(ha)} → {_fmt(hb)}"
        if hb >= ha * HEADROOM_FACTOR:
            worse.append(text)
        elif ha >= hb * HEADROOM_FACTOR:
            better.append(text)
    if worse:
        return Change("worse", column, feature, label, "; ".join(worse + better))
    if better:
        return Change("better", column, feature, label, "; ".join(better))
    return None
