"""Synthetic results records for the report tests (helpers only; no tests here).

They are built from the real Case and Check types, so a schema change in the core
breaks these helpers instead of leaving the report tested against a stale shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conformance.case import Case
from conformance.compare import Check
from conformance.records import rerun_command

BASE_ENV: dict[str, Any] = {
    "kind": "environment",
    "python": "3.11.7",
    "implementation": "CPython",
    "os": "Linux 6.1",
    "machine": "x86_64",
    "cpu": "Test CPU",
    "cpu_count": 2,
    "gpus": [],
    "hostname": "ci-1",
    "packages": {"numpy": "2.1.0", "torch": "2.5.1", "jax": None, "onnx": None},
    "options": {
        "tier": "smoke",
        "cases": 3,
        "seed": 0,
        "device": "all",
        "precision": "strict",
        "backends": ["torch[cpu]"],
    },
    "started": "2026-01-02T03:04:05+0000",
}

CASES = [
    Case(5, 6),
    Case(5, 6, num_layers=2, bidirectional=True, lengths="sorted"),
    Case(5, 6, seq_len=260, dtype="float64"),
]


def result(
    case: Case,
    backend: str = "torch[cpu]",
    verdict: str = "pass",
    headroom: float = 0.01,
    reason: str = "",
    quantity: str = "forward",
) -> dict[str, Any]:
    """A result record as the plugin writes it: arithmetic checks that agree with `verdict` (of the gradient
    of weight_hh_l0 for a backward result)."""
    failed = verdict in ("fail", "known_divergence")
    tol = 1e-5
    checks = [
        Check(
            "output" if quantity == "forward" else "grad weight_hh_l0",
            "arithmetic",
            not failed,
            f"output: abs err {headroom * tol:.3g}",
            max_abs=headroom * tol,
            max_rel=headroom * tol * 10,
            max_ulp=headroom * 100,
            tolerance=tol,
            headroom=headroom,
            worst_index={"step": 1, "batch": 0, "unit": 2} if quantity == "forward" else {"gate": "z", "row": 1},
            expected=0.25,
            actual=0.25 + headroom * tol,
        ).as_dict()
    ]
    if verdict in ("unsupported", "skipped", "error"):
        checks = []
    family, device = backend.split("[")[0], backend.split("[")[1].rstrip("]")
    return {
        "kind": "result",
        "case_id": case.id,
        "case": case.as_dict(),
        "backend": backend,
        "family": family,
        "device": device,
        "verdict": verdict,
        "reason": reason,
        "checks": checks,
        "worst_headroom": headroom if checks else None,
        "tolerance": {"atol": tol} if quantity == "forward" else {"atol": {"weight_hh_l0": tol}, "sum_terms": 15},
        "timing": {},
        "divergence": None,
        "rerun": rerun_command(case, backend, quantity=quantity),
        "precision": "strict",
        "reference": "oracle",
        "quantity": quantity,
    }


def backend_record(backend: str, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "backend",
        "backend": backend,
        "family": backend.split("[")[0],
        "device": backend.split("[")[1].rstrip("]"),
        "available": True,
        "availability": "",
        "notes": notes or {},
    }


def write_run(
    path: Path,
    results: list[dict[str, Any]],
    *,
    run_id: str = "run-1",
    env: dict[str, Any] | None = None,
    end: bool = True,
    notes: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A whole results file: environment, backend notes, results, and (unless `end=False`) the end record."""
    environment = json.loads(json.dumps(env or BASE_ENV))
    backends = sorted({r["backend"] for r in results})
    environment["options"]["backends"] = backends
    records = [environment] + [backend_record(b, (notes or {}).get(b)) for b in backends] + results
    if end:
        records.append({"kind": "end", "exitstatus": 0, "counts": {}, "finished": "2026-01-02T03:05:00+0000"})
    lines = [json.dumps({**r, "run_id": run_id, "worker": "main"}, sort_keys=True) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
