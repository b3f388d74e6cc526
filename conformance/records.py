"""Results as plain data, and the JSON-lines file they are appended to as they finish.

This is the records layer: what a check leaves behind, with no numerical imports
(no numpy, no oracle), so `reports/` can read and render results without loading
the machinery that produced them.

One file holds records of six kinds, each a JSON object with a "kind" key:
  environment   once per run (and per xdist worker): machine, versions, options
  backend       once per backend per process: its notes (versions, precision, export facts)
  result        one per (case, backend), written the moment it finishes
  cross_device  one per (case, device pair): the same backend on CPU and GPU compared directly
  coverage      once per backend, when the run finishes: its plan, its own space of value
                pairs, what it checked, and whether that let the run pass (`conformance.accounting`)
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

from conformance.case import Case
from conformance.verdict import Verdict

SCHEMA_VERSION = 1

ENVIRONMENT = "environment"
BACKEND = "backend"
RESULT = "result"
CROSS_DEVICE = "cross_device"
COVERAGE = "coverage"
END = "end"
KINDS = (ENVIRONMENT, BACKEND, RESULT, CROSS_DEVICE, COVERAGE, END)

# What a failing check means: "shape" and "dtype" (the backend returned the wrong
# kind of thing), "arithmetic" (numbers differ beyond tolerance), "convention"
# (padded positions hold values where PyTorch gives zeros: documented behaviour of
# the backend's own API, not an arithmetic error).
CHECK_KINDS = ("shape", "dtype", "arithmetic", "convention")


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


def rerun_command(case: Case, backend: str, precision: str = "strict", extra: Sequence[str] = ()) -> str:
    """One line that reruns exactly this case on this backend, whatever tier produced it.

    `extra` carries the options that made the backend, the reference or the verdict what it was
    (`--backend-module`, a non-default `--divergences`, `--vectors DIR`)."""
    parts = ["pytest", "conformance", "--backends", backend, "--case", case.id]
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
    probe: str | None = None  # the declared refusal this case was attempted to confirm (`conformance.plan`)

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
            "probe": self.probe,
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
            probe=record.get("probe"),
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


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a results file; a torn last line (a crash mid-write) is skipped."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if line.endswith("\n"):
                    raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
                return  # truncated final line of an interrupted run
            if not isinstance(record, dict) or "kind" not in record:
                raise ValueError(f"{path}:{number}: not a results record (no 'kind')")
            yield record


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
