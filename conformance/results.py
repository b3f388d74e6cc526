"""Results as plain data, and the JSON-lines file they are appended to as they finish.

One file holds records of four kinds, each a JSON object with a "kind" key:
  environment  once per run (and per xdist worker): machine, versions, options
  backend      once per backend per process: its notes (versions, precision, export facts)
  result       one per (case, backend), written the moment it finishes
  end          once, when the run finishes; a file without it is partial
Readers ignore kinds they don't know and a truncated last line, so a crash loses
nothing already written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from conformance.case import Case
from conformance.compare import Check, worst_headroom

SCHEMA_VERSION = 1

# pass: agrees within tolerance. fail: shape, dtype or arithmetic disagreement.
# convention: only padded positions differ. unsupported: the backend can't express
# the case (reason quotes the library). known_divergence: fails as a registry entry
# says it does. unexpected_pass: a registry entry no longer reproduces. error: the
# backend raised something that is neither. skipped: the backend isn't available here.
VERDICTS = ("pass", "fail", "convention", "unsupported", "known_divergence", "unexpected_pass", "error", "skipped")


@dataclass
class Result:
    case: Case
    backend: str
    family: str
    device: str
    verdict: str
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    divergence: str | None = None
    rerun: str = ""
    precision: str = "strict"
    reference: str = "oracle"  # or the vectors directory the expected values came from

    @property
    def worst_headroom(self) -> float | None:
        return worst_headroom(self.checks)

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": "result",
            "case_id": self.case.id,
            "case": self.case.as_dict(),
            "backend": self.backend,
            "family": self.family,
            "device": self.device,
            "verdict": self.verdict,
            "reason": self.reason,
            "checks": [c.as_dict() for c in self.checks],
            "worst_headroom": self.worst_headroom,
            "tolerance": self.tolerance,
            "timing": self.timing,
            "divergence": self.divergence,
            "rerun": self.rerun,
            "precision": self.precision,
            "reference": self.reference,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        return cls(
            case=Case.from_dict(record["case"]),
            backend=record["backend"],
            family=record["family"],
            device=record["device"],
            verdict=record["verdict"],
            reason=record.get("reason", ""),
            checks=[Check.from_dict(c) for c in record.get("checks", [])],
            tolerance=record.get("tolerance"),
            timing=record.get("timing", {}),
            divergence=record.get("divergence"),
            rerun=record.get("rerun", ""),
            precision=record.get("precision", "strict"),
            reference=record.get("reference", "oracle"),
        )


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
    return [Result.from_record(r) for p in paths for r in read_records(p) if r["kind"] == "result"]


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
