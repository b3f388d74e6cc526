"""What each backend's own coverage costs: its tests on the tier, the planning time, and the time of its extras.

    python benchmarks/bench_coverage.py [--tier pairwise] [--backends torch,onnx-dynamo]
    python benchmarks/bench_coverage.py --results reports/out/results.jsonl [--cache .cache]

Without `--results` it plans the tier (no backend runs): the seconds to enumerate the matrix's
space, evaluate every backend's `supports` over it and build the covers, then per backend its
shared cases, extras, probes and the value pairs they cover. With `--results` (a run of that
tier) it also splits each backend's measured time between the shared tests and the tests the
plan added (extras and added probes): the per-result timings (reference, backend call,
compare, diagnosis), plus, for the torch exporters, the export seconds of the models only the
added tests need, read from the export store under `--cache` (its metadata records each
export's duration; a warm cache still knows what the cold export cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import matrix, selection  # noqa: E402
from conformance import plan as planning  # noqa: E402
from conformance.case import Case  # noqa: E402
from conformance.records import RESULT, read_records  # noqa: E402

EXPORTERS = {"onnx-torchscript": "torchscript", "onnx-dynamo": "dynamo"}


def export_seconds(cache: Path, family: str, cases: list[Case]) -> float:
    """Seconds the store spent exporting the distinct models these cases need (0 for a source that doesn't export)."""
    import json

    from backends.onnx.export_store import Signature

    exporter = EXPORTERS.get(family)
    if exporter is None:
        return 0.0
    total, seen = 0.0, set()
    for case in cases:
        key = Signature.of(exporter, case).key()
        meta = cache / "onnx" / exporter / f"{key}.json"
        if key in seen or not meta.exists():
            continue
        seen.add(key)
        total += float(json.loads(meta.read_text(encoding="utf-8")).get("export_s", 0.0))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=None, help="as for pytest conformance (default: every installed family)")
    parser.add_argument("--results", type=Path, default=None, help="a results file of a run of this tier")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache", help="the export store's root")
    args = parser.parse_args()

    backends = selection.select(args.backends.split(",") if args.backends else None, "cpu")
    started = time.perf_counter()
    space = planning.space(matrix.load(), args.seed, planning.STRENGTH.get(args.tier, 2))
    _ = space.codes
    space_s = time.perf_counter() - started
    shared = matrix.cases(args.tier, args.seed)
    shared += [c for c in matrix.zero_length(args.seed) if c not in shared]  # every tier adds them (as the plugin)
    started = time.perf_counter()
    plan = planning.build(shared, backends, space)
    plan_s = time.perf_counter() - started
    print(f"tier {args.tier}: {len(shared)} shared cases; {len(backends)} backends; {len(plan.items)} tests")
    print(f"space: {len(space.cases)} valid cases, {space.n_pairs} value pairs, built in {space_s:.2f} s")
    print(f"plan (supports over the space, covers, probes): {plan_s:.2f} s")
    width = max(len(b.name) for b in backends)
    print(f"{'backend':<{width}}  tests  shared  in-space  extra  probes(added)  pairs")
    for name, b in plan.backends.items():
        pairs = f"{b.planned_pairs}/{len(b.space or [])}"
        probes = f"{len(b.probes)}({b.added_probes})"
        print(f"{name:<{width}}  {b.tests:>5}  {b.shared:>6}  {b.in_space:>8}  {b.extra:>5}  {probes:>13}  {pairs:>7}")
    extras = [p for p in plan.items if p.extra]
    distinct = {p.case.id for p in extras}
    print(f"extra tests: {len(extras)} over {len(distinct)} distinct cases")

    if args.results is None:
        return 0
    shared_ids = {c.id for c in shared}
    spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    added_cases: dict[str, list[Case]] = defaultdict(list)
    for record in read_records(args.results):
        if record["kind"] != RESULT:
            continue
        part = "shared" if record["case_id"] in shared_ids else "added"
        spent[record["backend"]][part] += sum(record.get("timing", {}).values())
        spent[record["backend"]][part + "_n"] += 1
        if part == "added":
            added_cases[record["backend"]].append(Case.from_dict(record["case"]))
    print(f"\nmeasured in {args.results} (seconds summed over results: reference, backend call, compare, diagnosis)")
    print(f"{'backend':<{width}}  shared tests (s)  added tests (s)  added exports (s)")
    total = 0.0
    for name, stats in spent.items():
        family = name.split("/")[0].split("[")[0]
        exports = export_seconds(args.cache, family, added_cases[name])
        total += stats["added"] + exports
        shared_text = f"{int(stats['shared_n'])} ({stats['shared']:.1f})"
        added_text = f"{int(stats['added_n'])} ({stats['added']:.1f})"
        print(f"{name:<{width}}  {shared_text:>16}  {added_text:>15}  {exports:>17.1f}")
    print(f"added cost, all backends: {total:.1f} s of test and export time (exports run in parallel workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
