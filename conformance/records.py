"""Results as plain data, and the JSON-lines file they are appended to as they finish.

This is the records layer: what a check leaves behind, with no numerical imports
(no numpy, no oracle), so `reports/` can read and render results without loading
the machinery that produced them.

One file holds records of five kinds, each a JSON object with a "kind" key:
  environment   once per run (and per xdist worker): machine, versions, options
  backend       once per backend per process: its notes (versions, precision, export facts)
  result        one per (case, backend, quantity: forward or backward), written the moment it finishes
  cross_device  one per (case, device pair): the same backend on CPU and GPU compared directly
  probe         with --explain, one per failing backend: its failing cases' one-field neighbours
  end           once, when the run finishes; a file without it is partial
Readers ignore kinds they don't know and a truncated last line, so a crash loses
nothing already written.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from conformance import schema
from conformance.case import Case
from conformance.schema import SchemaError
from conformance.verdict import NAMES, Verdict

SCHEMA_VERSION = 1

ENVIRONMENT = "environment"
BACKEND = "backend"
RESULT = "result"
CROSS_DEVICE = "cross_device"
PROBE = "probe"
END = "end"
KINDS = (ENVIRONMENT, BACKEND, RESULT, CROSS_DEVICE, PROBE, END)

# What a failing check means: "shape" and "dtype" (the backend returned the wrong
# kind of thing), "arithmetic" (numbers differ beyond tolerance), "convention"
# (padded positions hold values where PyTorch gives zeros: documented behaviour of
# the backend's own API, not an arithmetic error).
CHECK_KINDS = ("shape", "dtype", "arithmetic", "convention")
# Every check a forward result can hold (conformance/compare.py makes them; the registry's `checks` name them).
CHECK_NAMES = (
    "output.shape",
    "output.dtype",
    "output",
    "output.padding",
    "h_n.shape",
    "h_n.dtype",
    "h_n",
    "h_n.zero-length",
)

# What a result checks: the GRU's outputs, or its gradients (dL/d inputs and parameters for a fixed loss).
FORWARD = "forward"
BACKWARD = "backward"
QUANTITIES = (FORWARD, BACKWARD)
# Layers whose parameters' gradient checks a registry entry can name (conformance/compare_backward.py makes them).
GRADIENT_LAYERS = 10


def gradient_check_names(layers: int = GRADIENT_LAYERS) -> tuple[str, ...]:
    """Every check a backward result can hold, for up to `layers` layers: `grad <tensor>` for x, h0 and each
    state_dict parameter, with its `.shape` and `.dtype` checks, and `grad x.padding`."""
    tensors = ["x", "h0"]
    for layer in range(layers):
        for suffix in ("", "_reverse"):
            tensors += [f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    names = [f"grad {t}{part}" for t in tensors for part in ("", ".shape", ".dtype")]
    return (*names, "grad x.padding")


GRADIENT_CHECK_NAMES = gradient_check_names()

# What a result checks (its `check` field). "oracle": the backend against the float64 oracle (the
# default: records written before the field existed are oracle results). "invariant:<name>": a
# metamorphic property of the backend alone, its runs compared with each other (conformance.invariants).
# A (backend, case) has one oracle result and at most one result per invariant.
ORACLE_CHECK = "oracle"
INVARIANT_PREFIX = "invariant:"

# How a backend record names the GRU form PyTorch's nn.GRU computes (conformance.forms.Form.describe):
# the form every backend implements unless it declares another.
PYTORCH_FORM = "linear_before_reset=1 (PyTorch's form)"


def check_of(record: dict[str, Any]) -> str:
    """The check a result record comes from; "oracle" for records older than the field."""
    return str(record.get("check") or ORACLE_CHECK)


@dataclass
class Check:
    """One comparison of one tensor (or of its shape or dtype), explaining itself."""

    name: str  # "output.shape", "output.dtype", "output", "output.padding", "h_n", ...
    kind: str  # one of CHECK_KINDS
    passed: bool
    message: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    max_ulp: float | None = None
    tolerance: float | None = None
    headroom: float | None = None  # max_abs / tolerance; > 1 fails
    worst_index: dict[str, Any] | None = None
    expected: float | None = None
    actual: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(**data)


def worst_headroom(checks: list[Check]) -> float | None:
    """The largest arithmetic headroom of a result (padding and structure checks have none that counts)."""
    values = [c.headroom for c in checks if c.headroom is not None and c.kind == "arithmetic"]
    return max(values) if values else None


def rerun_command(
    case: Case, backend: str, precision: str = "strict", extra: Sequence[str] = (), quantity: str | None = None
) -> str:
    """One line that reruns exactly this case on this backend, whatever tier produced it.

    `extra` carries the options that made the backend, the reference or the verdict what it was
    (`--backend-module`, a non-default `--divergences`, `--vectors DIR`); `quantity` (forward or
    backward) makes it rerun that check alone."""
    parts = ["pytest", "conformance", "--backends", backend]
    if quantity is not None:
        parts += ["--quantity", quantity]
    parts += ["--case", case.id]
    if precision != "strict":
        parts += ["--precision", precision]
    return shlex.join([*parts, *extra])


@dataclass
class Result:
    """One (backend, case) check: its verdict, the checks behind it, and how to rerun it."""

    case: Case
    backend: str
    family: str
    device: str
    verdict: Verdict
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    divergence: str | None = None
    rerun: str = ""
    precision: str = "strict"
    reference: str = "oracle"  # or the vectors directory the expected values came from
    diagnosis: dict[str, Any] | None = None  # the likely mistake behind a failure (conformance.diagnosis)
    quantity: str = FORWARD  # what was checked: outputs (forward) or gradients (backward); one of QUANTITIES
    check: str = ORACLE_CHECK  # which check produced it: "oracle", or "invariant:<name>" (conformance.invariants)

    @property
    def worst_headroom(self) -> float | None:
        return worst_headroom(self.checks)

    @property
    def failing_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": RESULT,
            "case_id": self.case.id,
            "case": self.case.as_dict(),
            "backend": self.backend,
            "family": self.family,
            "device": self.device,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "checks": [c.as_dict() for c in self.checks],
            "worst_headroom": self.worst_headroom,
            "tolerance": self.tolerance,
            "timing": self.timing,
            "divergence": self.divergence,
            "rerun": self.rerun,
            "precision": self.precision,
            "reference": self.reference,
            "diagnosis": self.diagnosis,
            "quantity": self.quantity,
            "check": self.check,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        return cls(
            case=Case.from_dict(record["case"]),
            backend=record["backend"],
            family=record["family"],
            device=record["device"],
            verdict=Verdict.parse(record["verdict"]),
            reason=record.get("reason", ""),
            checks=[Check.from_dict(c) for c in record.get("checks", [])],
            tolerance=record.get("tolerance"),
            timing=record.get("timing", {}),
            divergence=record.get("divergence"),
            rerun=record.get("rerun", ""),
            precision=record.get("precision", "strict"),
            reference=record.get("reference", "oracle"),
            diagnosis=record.get("diagnosis"),
            quantity=record.get("quantity", FORWARD),  # written before the backward check: forward
            check=record.get("check", ORACLE_CHECK),
        )


@dataclass
class CrossDeviceResult:
    """The same backend family on the CPU and a GPU, compared with each other (see `conformance.cross_device`)."""

    case: Case
    family: str
    backends: tuple[str, str]  # (cpu, gpu) backend names
    devices: tuple[str, str]
    verdict: Verdict
    precision: str
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, Any] | None = None

    @property
    def worst_headroom(self) -> float | None:
        return worst_headroom(self.checks)

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": CROSS_DEVICE,
            "case_id": self.case.id,
            "case": self.case.as_dict(),
            "family": self.family,
            "backends": list(self.backends),
            "devices": list(self.devices),
            "verdict": self.verdict.value,
            "reason": self.reason,
            "checks": [c.as_dict() for c in self.checks],
            "worst_headroom": self.worst_headroom,
            "tolerance": self.tolerance,
            "precision": self.precision,
        }


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class ResultsWriter:
    """Appends one JSON object per line and flushes it, so a crash loses nothing written."""

    def __init__(self, path: Path, run_id: str, worker: str = "main") -> None:
        self.path = path
        self.run_id = run_id
        self.worker = worker
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_finite({**record, "run_id": self.run_id, "worker": self.worker}), sort_keys=True)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RecordError(SchemaError):
    """A results file that doesn't hold results records; names the file, the line and the field."""


def _optional(check: Any) -> Any:
    def run(where: schema.Where, value: Any, field: str) -> Any:
        return None if value is None else check(where, value, field)

    return run


def _verdict(where: schema.Where, value: Any, field: str) -> str:
    return str(schema.one_of(where, value, field, NAMES))


def _any_text(where: schema.Where, value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise where.expected(field, "a string", value)
    return value


def _check_record(where: schema.Where, value: Any, field: str) -> dict[str, Any]:
    check = schema.table(where, value, field, "a check (a table with name, kind, passed, ...)")
    if not isinstance(check.get("name"), str):
        raise where.expected(f"{field}.name", "a string", check.get("name"))
    return check


def _headroom(where: schema.Where, value: Any, field: str) -> Any:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return value  # the writer's spelling of non-finite numbers
    return schema.number(where, value, field)


def _pair(where: schema.Where, value: Any, field: str) -> list[str]:
    names = schema.list_of(where, value, field, _any_text, "a list of two backend names")
    if len(names) != 2:
        raise where.expected(field, "a list of two backend names", value)
    return names


_TABLE = _optional(schema.table)
_TEXT = _optional(_any_text)
# What each known kind must hold for the readers (reports, `python -m reports verdicts`): field -> check.
# Required fields are checked as given; optional ones may be absent or null.
_REQUIRED: dict[str, dict[str, Any]] = {
    RESULT: {"case_id": schema.text, "backend": schema.text, "verdict": _verdict},
    CROSS_DEVICE: {"case_id": schema.text, "backends": _pair, "verdict": _verdict},
    BACKEND: {"backend": schema.text},
    ENVIRONMENT: {},
    END: {},
}
_OPTIONAL: dict[str, dict[str, Any]] = {
    RESULT: {
        "case": schema.table,
        "family": _TEXT,
        "device": _TEXT,
        "reason": _TEXT,
        "rerun": _TEXT,
        "divergence": _TEXT,
        "tolerance": _TABLE,
        "timing": _TABLE,
        "worst_headroom": _optional(_headroom),
        "checks": _optional(lambda w, v, f: schema.list_of(w, v, f, _check_record, "a list of checks", False)),
        "quantity": lambda w, v, f: schema.one_of(w, v, f, QUANTITIES),
    },
    CROSS_DEVICE: {
        "case": schema.table,
        "family": _TEXT,
        "reason": _TEXT,
        "tolerance": _TABLE,
        "worst_headroom": _optional(_headroom),
        "checks": _optional(lambda w, v, f: schema.list_of(w, v, f, _check_record, "a list of checks", False)),
    },
    BACKEND: {"family": _TEXT, "device": _TEXT, "notes": _TABLE, "availability": _TEXT},
    ENVIRONMENT: {
        "options": schema.table,
        "packages": _TABLE,
        "gpus": _optional(lambda w, v, f: schema.list_of(w, v, f, _any_text, "a list of GPU names", False)),
    },
    END: {"counts": _TABLE},
}


def check_record(record: dict[str, Any], where: schema.Where) -> None:
    """Refuse a record of a known kind that lacks what readers use (unknown kinds pass: newer writers)."""
    kind = record["kind"]
    if kind not in _REQUIRED:
        return
    where = where.at(f"{kind} record")
    for name, check in _REQUIRED[kind].items():
        if name not in record:
            raise where.fail("missing", name)
        check(where, record[name], name)
    for name, check in _OPTIONAL[kind].items():
        if name in record:
            check(where, record[name], name)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a results file; a torn last line (a crash mid-write) is skipped.

    Each record is checked against its kind's schema, so a hand-edited or foreign file is refused
    with the line and field at fault instead of failing somewhere in the report."""
    schema.regular_file(path, "results file", RecordError)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise RecordError(f"{path}: can't read this results file: {error.strerror or error}") from None
    with handle:
        number = 0
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    if line.endswith("\n"):
                        raise RecordError(f"{path}:{number}: not a JSON line ({error})") from None
                    return  # truncated final line of an interrupted run
                if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
                    raise RecordError(f"{path}:{number}: not a results record (no 'kind')")
                check_record(record, schema.Where(f"{path}:{number}", error=RecordError))
                yield record
        except UnicodeDecodeError:
            raise RecordError(f"{path}:{number + 1}: not a text line (not UTF-8); is this a results file?") from None


def read_results(paths: Iterable[Path]) -> list[Result]:
    return [Result.from_record(r) for p in paths for r in read_records(p) if r["kind"] == RESULT]


def worker_path(path: Path, worker: str) -> Path:
    """Where an xdist worker writes: results.jsonl -> results.gw0.jsonl beside it."""
    return path.with_name(f"{path.stem}.{worker}{path.suffix}")


def merge_worker_files(path: Path, workers: Iterable[str]) -> int:
    """Append each worker's file to the main one, then remove it. Returns records moved."""
    moved = 0
    with path.open("a", encoding="utf-8") as out:
        for worker in sorted(workers):
            part = worker_path(path, worker)
            if not part.exists():
                continue
            text = part.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                text = text[: text.rfind("\n") + 1]  # drop a torn last line
            out.write(text)
            moved += text.count("\n")
            os.remove(part)
    return moved
