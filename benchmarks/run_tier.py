"""Where the time of a tier goes: wall time, case count, and the share spent inside backend calls.

    python benchmarks/run_tier.py [--tier pairwise] [--backends torch] [--quantity both] [-n N]

Runs `pytest conformance` as a user would (a subprocess, so imports and collection
count), then reads the per-result timings from its JSON-lines file.
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

from conformance.records import read_records  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--backends", default=None, help="as for pytest conformance (default: every installed family)")
    parser.add_argument("--quantity", default=None, help="forward, backward or both (default: the suite's, both)")
    parser.add_argument("-n", default=None, help="pytest-xdist workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--tier", args.tier]
        command += ["--results", str(results)]
        if args.backends:
            command += ["--backends", args.backends]
        if args.quantity:
            command += ["--quantity", args.quantity]
        if args.n:
            command += ["-n", args.n]
        started = time.perf_counter()
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        records = list(read_records(results))
    if not any(r["kind"] == "end" for r in records):
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        return 1
    rows = [r for r in records if r["kind"] == "result"]
    env = next(r for r in records if r["kind"] == "environment")
    per_backend: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        quantity = r.get("quantity", "forward")
        stats = per_backend[r["backend"] + ("" if quantity == "forward" else f" ({quantity})")]
        stats["results"] += 1
        for key, value in r.get("timing", {}).items():
            stats[key] += value
    backend_s = sum(s["backend_s"] for s in per_backend.values())
    reference_s = sum(s["reference_s"] for s in per_backend.values())
    print(f"tier {args.tier}: {env['options']['cases']} cases x {len(per_backend)} backend rows = {len(rows)} results")
    print(f"wall time (pytest conformance, imports and collection included): {wall:.2f} s")
    print(f"inside backend calls: {backend_s:.2f} s ({100 * backend_s / wall:.1f}% of wall)")
    print(
        f"reference (data + oracle, cached per case per process): {reference_s:.2f} s ({100 * reference_s / wall:.1f}%)"
    )
    print(f"{'backend (quantity)':44} {'results':>8} {'backend s':>10} {'per result ms':>14} {'reference s':>12}")
    for name, stats in sorted(per_backend.items()):
        per = 1000 * stats["backend_s"] / max(stats["results"], 1)
        print(
            f"{name:44} {int(stats['results']):>8} {stats['backend_s']:>10.2f} {per:>14.1f} {stats['reference_s']:>12.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
