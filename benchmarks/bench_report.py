"""How large the report page gets, and how long it takes to render, for the full tier.

Running every backend on the full tier takes hours, so this synthesizes one result
record per (full-tier case, backend) with the shape the plugin writes (six checks,
messages, rerun command), a realistic mix of verdicts, then times `reports.render`.

    .venv/bin/python benchmarks/bench_report.py [--backends 3] [--out /tmp/bench-report]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from conformance import matrix
from conformance.case import Case
from conformance.environment import environment
from conformance.records import rerun_command
from reports.render import render

BACKENDS = ["torch[cpu]", "onnx-spec/ort[cpu]", "flax-linen[cpu]", "jax-scan[cpu]", "keras-jax[cpu]", "equinox[cpu]"]


def _check(name: str, headroom: float, tol: float, passed: bool) -> dict[str, Any]:
    error = headroom * tol
    return {
        "name": name,
        "kind": "arithmetic",
        "passed": passed,
        "message": f"{name}: worst element at [step=1, batch=0, unit=2]: expected 0.25, got {0.25 + error!r}; "
        f"abs err {error:.3g} {'<=' if passed else '>'} tolerance {tol:.3g} (headroom {headroom:.3g})",
        "max_abs": error,
        "max_rel": error * 4,
        "max_ulp": headroom * 50,
        "tolerance": tol,
        "headroom": headroom,
        "worst_index": {"step": 1, "batch": 0, "unit": 2},
        "expected": 0.25,
        "actual": 0.25 + error,
    }


def synthesize(path: Path, cases: list[Case], backends: list[str], seed: int = 0) -> int:
    """Write a complete results file; returns how many result records it holds."""
    rng = random.Random(seed)
    env = environment(
        {
            "tier": "full",
            "cases": len(cases),
            "seed": 0,
            "device": "all",
            "precision": "strict",
            "backends": backends,
            "matrix": "conformance/declared/matrix.toml",
        }
    )
    count = 0
    with path.open("w", encoding="utf-8") as out:

        def write(record: dict[str, Any]) -> None:
            out.write(json.dumps({**record, "run_id": "bench", "worker": "main"}, sort_keys=True) + "\n")

        write(env | {"started": "2026-01-01T00:00:00+0000"})
        for backend in backends:
            write(
                {
                    "kind": "backend",
                    "backend": backend,
                    "family": backend.split("[")[0],
                    "device": "cpu",
                    "available": True,
                    "availability": "",
                    "notes": {"version": "1.0"},
                }
            )
        for case in cases:
            for index, backend in enumerate(backends):
                tol = {"float64": 1e-13, "float32": 1e-5, "float16": 5e-3, "bfloat16": 4e-2}[
                    case.dtype
                ] * case.seq_len**0.5
                headroom = 10 ** rng.uniform(-4, -0.5) * (1 + case.seq_len / 100)
                verdict = "pass"
                if index == 2 and case.dtype == "bfloat16":
                    verdict = "unsupported"
                elif rng.random() < 0.02:
                    verdict, headroom = "fail", 10 ** rng.uniform(0.1, 3)
                elif index == 1 and case.lengths == "unsorted" and case.seq_len == 1:
                    verdict = "known_divergence"
                checks = []
                if verdict != "unsupported":
                    for tensor in ("output", "h_n"):
                        checks += [
                            {"name": f"{tensor}.shape", "kind": "shape", "passed": True, "message": ""},
                            {"name": f"{tensor}.dtype", "kind": "dtype", "passed": True, "message": ""},
                            _check(tensor, headroom * rng.uniform(0.5, 1), tol, verdict == "pass"),
                        ]
                write(
                    {
                        "kind": "result",
                        "case_id": case.id,
                        "case": case.as_dict(),
                        "backend": backend,
                        "family": backend.split("[")[0],
                        "device": "cpu",
                        "verdict": verdict,
                        "reason": "" if verdict == "pass" else f"{verdict}: synthetic",
                        "checks": checks,
                        "worst_headroom": max((c["headroom"] for c in checks if "headroom" in c), default=None),
                        "tolerance": {"atol": tol, "steps": case.seq_len},
                        "timing": {"reference_s": 0.001, "backend_s": 0.001, "compare_s": 0.001},
                        "divergence": "synthetic-entry" if verdict == "known_divergence" else None,
                        "rerun": rerun_command(case, backend),
                        "precision": "strict",
                        "reference": "oracle",
                    }
                )
                count += 1
        write({"kind": "end", "exitstatus": 1, "counts": {}, "finished": "2026-01-01T01:00:00+0000"})
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=3, help="number of synthetic backend columns (default 3)")
    parser.add_argument("--tier", default="full", choices=matrix.TIERS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-report"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = matrix.cases(args.tier)
    results = args.out / "results.jsonl"
    started = time.perf_counter()
    count = synthesize(results, cases, BACKENDS[: args.backends])
    print(
        f"synthesized {count} results ({len(cases)} cases × {args.backends} backends) in {time.perf_counter() - started:.1f} s; results file {results.stat().st_size / 2**20:.1f} MiB"
    )
    done = render([results], args.out / "report.html")
    print(
        f"rendered {done.report}: {done.size / 2**20:.2f} MiB in {done.seconds:.1f} s; summary {done.summary.stat().st_size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
