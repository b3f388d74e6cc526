"""Loading and merging results files: runs, columns and one entry per (column, case, quantity).

The quantity is what a result checked: the outputs (forward) or the gradients (backward); a
record written before the backward check has none and is forward.

A column is a backend in one environment. Environments are told apart by what
can change a number (OS, CPU, GPUs, Python, package versions, precision mode),
never by hostname or time, so two identical CI runners share a column and a
case they disagree on becomes `flaky` instead of one verdict silently winning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, overload

from conformance.records import CROSS_DEVICE, FORWARD, ORACLE_CHECK, PYTORCH_FORM, QUANTITIES, check_of, read_records
from conformance.verdict import Verdict

FLAKY = "flaky"
# Worst first: the order of the case table and of "which verdict colours a cell".
SEVERITY = (FLAKY, *(v.value for v in Verdict))
HEADLINE_PACKAGES = ("torch", "jax", "flax", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript")


@dataclass
class Run:
    """One pytest session, as its records describe it (a file may hold several)."""

    run_id: str
    source: str
    environment: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    torn: bool = False
    results: int = 0
    backend_notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    env_key: str = ""
    env_label: str = ""

    @property
    def options(self) -> dict[str, Any]:
        return (self.environment or {}).get("options", {})

    @property
    def partial_reasons(self) -> list[str]:
        """Why this run's results may be incomplete; empty for a run that finished."""
        reasons = []
        if self.end is None:
            reasons.append("no end record (the run crashed or was interrupted)")
        if self.torn:
            reasons.append("the last line was cut off mid-write")
        quantities = len(QUANTITIES) if self.options.get("quantity") == "both" else 1
        expected = self.options.get("cases", 0) * len(self.options.get("backends", [])) * quantities
        if expected and self.results < expected:
            reasons.append(f"{self.results} of {expected} results recorded")
        return reasons


@dataclass
class Column:
    """A backend in one environment: what a matrix column and a summary key stand for."""

    key: str
    backend: str
    family: str
    device: str
    env_key: str
    env_label: str = ""
    notes: list[dict[str, Any]] = field(default_factory=list)
    availability: list[str] = field(default_factory=list)
    form: str = ""  # the GRU form the backend declares (its record's "form"); "" in older files: PyTorch's


@dataclass
class DevicePair:
    """One backend on the CPU and on a GPU in one environment: a row of the cross-device section."""

    key: str
    cpu: str
    gpu: str
    family: str
    env_label: str = ""


@dataclass
class Entry:
    """A (column, case, quantity) with every time it was seen; more than one verdict makes it flaky."""

    column: str
    case_id: str
    case: dict[str, Any]
    seen: list[dict[str, Any]] = field(default_factory=list)
    quantity: str = FORWARD  # forward (outputs) or backward (gradients)
    check: str = ORACLE_CHECK  # "invariant:<name>" for an invariant check's entry (Merged.invariants)

    # Cached: an entry is complete once `load` returns, and the matrix asks each one many times.
    @cached_property
    def verdicts(self) -> list[str]:
        return sorted({r["verdict"] for r in self.seen}, key=SEVERITY.index)

    @cached_property
    def verdict(self) -> str:
        verdicts = self.verdicts
        return FLAKY if len(verdicts) > 1 else verdicts[0]

    @property
    def worst(self) -> dict[str, Any]:
        """The occurrence shown by default: the most severe, then the largest headroom."""
        return min(self.seen, key=lambda r: (SEVERITY.index(r["verdict"]), -_number(r.get("worst_headroom"), -1.0)))

    @cached_property
    def worst_headroom(self) -> float | None:
        values = [_number(r.get("worst_headroom")) for r in self.seen]
        numbers = [v for v in values if v is not None]
        return max(numbers) if numbers else None

    @cached_property
    def max_abs(self) -> float | None:
        """Largest absolute error of any arithmetic check: what the sequence-length plot draws."""
        numbers = [r["max_abs"] for r in self.seen if r["max_abs"] is not None]
        return max(numbers) if numbers else None


def _slim(record: dict[str, Any], run: Run) -> dict[str, Any]:
    """What the report keeps of a result: passing checks are reduced to the largest error they saw."""
    checks = record.get("checks", [])
    errors = [_number(c.get("max_abs")) for c in checks if c.get("kind") == "arithmetic"]
    numbers = [e for e in errors if e is not None]
    return {
        "verdict": record["verdict"],
        "reason": record.get("reason", ""),
        "rerun": record.get("rerun", ""),
        "divergence": record.get("divergence"),
        "diagnosis": record.get("diagnosis"),
        "tolerance": record.get("tolerance"),
        "worst_headroom": record.get("worst_headroom"),
        "max_abs": max(numbers) if numbers else None,
        "checks": [c for c in checks if not c.get("passed", True)],
        "run_id": run.run_id,
        "source": run.source,
    }


@dataclass
class Merged:
    runs: list[Run]
    columns: list[Column]
    entries: list[Entry]
    sources: list[str]
    # The cross-device check: pairs, and one entry per (pair, case) with `column` the pair's key.
    pairs: list[DevicePair] = field(default_factory=list)
    cross_device: list[Entry] = field(default_factory=list)
    # The invariant checks: one entry per (column, case, check); `entries` holds the oracle check's only.
    invariants: list[Entry] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return any(run.partial_reasons for run in self.runs) or not self.runs

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


@overload
def _number(value: Any, default: float) -> float: ...
@overload
def _number(value: Any, default: None = None) -> float | None: ...
def _number(value: Any, default: float | None = None) -> float | None:
    """Headroom and errors as floats; the writer stores inf/nan as strings."""
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def torn_tail(path: Path) -> bool:
    """True when the file ends in a line that is neither terminated nor valid JSON."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 1_000_000))
        tail = handle.read()
    if not tail or tail.endswith(b"\n"):
        return False
    last = tail.rsplit(b"\n", 1)[-1]
    try:
        json.loads(last)
    except ValueError:
        return True
    return False


def fingerprint(environment: dict[str, Any] | None) -> dict[str, str]:
    """The facts that can change a result; equal fingerprints share a column."""
    if environment is None:
        return {"environment": "unknown"}
    facts = {
        "os": str(environment.get("os", "?")),
        "cpu": str(environment.get("cpu", "?")),
        "GPU": ", ".join(environment.get("gpus") or []) or "none",
        "Python": str(environment.get("python", "?")),
        "precision": str(environment.get("options", {}).get("precision", "?")),
    }
    for name, version in sorted((environment.get("packages") or {}).items()):
        if name not in ("pytest", "gru-conformance", "covertable"):
            facts[name] = str(version) if version else "none"
    return facts


def _label_environments(runs: list[Run]) -> None:
    """Name each environment by what differs from the others, e.g. "torch 2.6.0" or "GPU none"."""
    facts = {}
    for run in runs:
        prints = fingerprint(run.environment)
        run.env_key = json.dumps(prints, sort_keys=True)
        facts[run.env_key] = prints
    if len(facts) < 2:
        return
    keys = sorted({k for f in facts.values() for k in f})
    differing = [k for k in keys if len({f.get(k) for f in facts.values()}) > 1]
    # Package versions first: they are what a user compares after an upgrade.
    differing.sort(key=lambda k: (k in ("os", "cpu", "GPU", "Python", "precision"), k))
    labels = {}
    for number, (key, prints) in enumerate(sorted(facts.items()), 1):
        parts = [f"{k} {prints.get(k, '-')}" for k in differing[:2]]
        label = ", ".join(parts) + (f" +{len(differing) - 2}" if len(differing) > 2 else "")
        labels[key] = label if len(label) <= 48 else f"env {number}"
    if len(set(labels.values())) < len(labels):
        labels = {key: f"env {n}" for n, key in enumerate(sorted(facts), 1)}
    for run in runs:
        run.env_label = labels[run.env_key]


def load(paths: Sequence[Path]) -> Merged:
    """Read every file, group records by run, and merge results per (column, case)."""
    runs: dict[tuple[str, str], Run] = {}
    # Slimmed as they are read (a full-tier file is hundreds of MiB); case dicts shared per id.
    raw_results: list[tuple[Run, dict[str, Any], dict[str, Any]]] = []
    case_dicts: dict[str, dict[str, Any]] = {}
    backend_records: list[tuple[Run, dict[str, Any]]] = []
    raw_cross: list[tuple[Run, dict[str, Any], dict[str, Any]]] = []
    raw_invariants: list[tuple[Run, dict[str, Any], dict[str, Any]]] = []
    for path in paths:
        torn = torn_tail(path)
        last: Run | None = None
        for record in read_records(path):
            key = (str(path), str(record.get("run_id", "?")))
            run = runs.setdefault(key, Run(run_id=key[1], source=str(path)))
            last = run
            kind = record["kind"]
            if kind == "environment":
                run.environment = record
            elif kind == "end":
                run.end = record
            elif kind == "backend":
                backend_records.append((run, record))
            elif kind == "result":
                if check_of(record) != ORACLE_CHECK:
                    meta = {k: record.get(k) for k in ("backend", "family", "device", "case_id")}
                    meta["case"] = case_dicts.setdefault(record["case_id"], record.get("case", {}))
                    meta["check"] = check_of(record)
                    raw_invariants.append((run, meta, _slim(record, run)))
                    continue
                run.results += 1
                meta = {k: record.get(k) for k in ("backend", "family", "device", "case_id")}
                meta["quantity"] = record.get("quantity", FORWARD)
                meta["case"] = case_dicts.setdefault(record["case_id"], record.get("case", {}))
                raw_results.append((run, meta, _slim(record, run)))
            elif kind == CROSS_DEVICE:
                meta = {"backends": record.get("backends") or ["?", "?"], "family": record.get("family")}
                meta["case_id"] = record["case_id"]
                meta["case"] = case_dicts.setdefault(record["case_id"], record.get("case", {}))
                raw_cross.append((run, meta, _slim(record, run)))
        if torn and last is not None:
            last.torn = True
        elif torn:
            runs[(str(path), "?")] = Run(run_id="?", source=str(path), torn=True)
    run_list = list(runs.values())
    _label_environments(run_list)

    columns: dict[str, Column] = {}

    def column_for(run: Run, record: dict[str, Any]) -> Column:
        backend = record["backend"]
        key = f"{backend} @ {run.env_label}" if run.env_label else backend
        if key not in columns:
            columns[key] = Column(
                key, backend, record.get("family") or backend, record.get("device") or "?", run.env_key, run.env_label
            )
        return columns[key]

    for run, record in backend_records:
        column = column_for(run, record)
        column.form = column.form or str(record.get("form") or "")
        notes = record.get("notes") or {}
        if notes and notes not in column.notes:
            column.notes.append(notes)
        if not record.get("available", True) and record.get("availability") not in column.availability:
            column.availability.append(record.get("availability", ""))
        run.backend_notes[record["backend"]] = notes

    entries: dict[tuple[str, str, str], Entry] = {}
    for run, meta, slim in raw_results:
        column = column_for(run, meta)
        entry_key = (column.key, meta["case_id"], meta["quantity"])
        if entry_key not in entries:
            entries[entry_key] = Entry(column.key, meta["case_id"], meta["case"], quantity=meta["quantity"])
        entries[entry_key].seen.append(slim)

    invariants: dict[tuple[str, str, str], Entry] = {}
    for run, meta, slim in raw_invariants:
        column = column_for(run, meta)
        key3 = (column.key, meta["case_id"], meta["check"])
        if key3 not in invariants:
            invariants[key3] = Entry(column.key, meta["case_id"], meta["case"], check=meta["check"])
        invariants[key3].seen.append(slim)

    pairs: dict[str, DevicePair] = {}
    cross: dict[tuple[str, str], Entry] = {}
    for run, meta, slim in raw_cross:
        cpu, gpu = (str(b) for b in meta["backends"][:2])
        name = f"{cpu} vs {gpu}" + (f" @ {run.env_label}" if run.env_label else "")
        pairs.setdefault(name, DevicePair(name, cpu, gpu, meta["family"] or cpu.split("[")[0], run.env_label))
        if (name, meta["case_id"]) not in cross:
            cross[(name, meta["case_id"])] = Entry(name, meta["case_id"], meta["case"])
        cross[(name, meta["case_id"])].seen.append(slim)

    # Grouped by declared form, PyTorch's first (the report says so), then by family as before.
    ordered = sorted(
        columns.values(), key=lambda c: (not is_pytorch_form(c.form), c.form, c.family, c.backend, c.env_label)
    )
    return Merged(
        run_list,
        ordered,
        list(entries.values()),
        [str(p) for p in paths],
        sorted(pairs.values(), key=lambda p: (p.family, p.cpu, p.gpu, p.env_label)),
        list(cross.values()),
        list(invariants.values()),
    )


def is_pytorch_form(form: str) -> bool:
    """A column's declared form is PyTorch's (older files record none: every backend then claimed it)."""
    return not form or form == PYTORCH_FORM
