"""What the invariant checks cost, per invariant: results, backend runs and seconds inside backend calls.

    python benchmarks/bench_invariants.py [--tier pairwise] [--backends torch] [--invariant NAME ...]
    python benchmarks/bench_invariants.py --results reports/out/results.jsonl   # an existing run

Runs `pytest conformance` as a user would (a subprocess) unless given a results file, then sums
the timings each result records: `backend_s` (every run of the check, the case's own included)
and `runs`. The oracle check's line is the baseline the invariants add to.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance.records import check_of, read_records  # noqa: E402


def summarize(path: Path) -> list[str]:
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in read_records(path):
        if record["kind"] != "result":
            continue
        row = totals[check_of(record)]
        row["results"] += 1
        row["ran"] += record["verdict"] not in ("unsupported", "skipped")
        timing = record.get("timing") or {}
        row["backend_s"] += float(timing.get("backend_s", 0.0))
        row["runs"] += float(timing.get("runs", 1.0 if "backend_s" in timing else 0.0))
    lines = [f"{'check':<32} {'results':>8} {'ran':>6} {'runs':>7} {'backend s':>10}"]
    for check, row in sorted(totals.items(), key=lambda item: item[0] != "oracle"):
        lines.append(
            f"{check:<32} {int(row['results']):>8} {int(row['ran']):>6} {int(row['runs']):>7} {row['backend_s']:>10.1f}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="summarize this results file instead of running")
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--backends", default=None)
    parser.add_argument("--invariant", action="append", default=[], help="instead of the tier's [invariants]")
    args = parser.parse_args()
    if args.results is not None:
        print("\n".join(summarize(args.results)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--no-report"]
        command += ["--tier", args.tier, "--results", str(results)]
        command += ["--backends", args.backends] if args.backends else []
        for name in args.invariant:
            command += ["--invariant", name]
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        print(f"tier {args.tier}: {time.perf_counter() - started:.1f} s wall")
        print("\n".join(summarize(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
