"""What diagnosing a failure costs, next to the oracle call every case already pays.

    python benchmarks/bench_diagnosis.py [--tier pairwise] [--repeat 3] [--recall]

Runs a planted backend that fails every case of the tier (tests/planted_mistakes.py's
(n, r, z) gate order) and times, per case: one oracle call, `variants.diagnose` (every
applicable variant), `precision.diagnose_precision` (one emulation per coarser format)
and `patterns.find_pattern` over the tier. Each figure is the best of --repeat runs.
`--recall` also runs every planted mistake over the tier and counts, of the cases each
one fails, how many name its variant first and how many name it at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "examples", ROOT / "tests"):
    sys.path.insert(0, str(extra))

from planted_mistakes import MISTAKES, CandidateFirstGateOrder  # noqa: E402

from conformance import matrix  # noqa: E402
from conformance.compare import compare, verdict_of  # noqa: E402
from conformance.data import case_data  # noqa: E402
from conformance.oracle import gru_reference  # noqa: E402
from conformance.patterns import find_pattern  # noqa: E402
from conformance.precision import candidates, diagnose_precision  # noqa: E402
from conformance.tolerance import derive  # noqa: E402
from conformance.variants import applicable, describe, diagnose  # noqa: E402


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--recall", action="store_true", help="also count how often each planted mistake is named")
    args = parser.parse_args()
    backend = CandidateFirstGateOrder()
    cases = matrix.cases(args.tier, 0)
    print(f"tier {args.tier}: {len(cases)} cases, backend {backend.name} (fails every case)")
    print(
        f"{'case':62} {'oracle ms':>9} {'variants':>8} {'variants ms':>11} {'x oracle':>8} "
        f"{'formats':>7} {'precision ms':>12} {'x oracle':>8}  top match"
    )
    totals = {"oracle": 0.0, "variants": 0.0, "precision": 0.0}
    outcomes, named = [], 0
    for case in cases:
        weights, inputs = case_data(case)
        oracle_s, expected = best_of(args.repeat, lambda: gru_reference(case, weights, inputs))  # noqa: B023
        actual = backend.run(case, weights, inputs)
        tolerance = derive(case)
        failed = verdict_of(compare(case, expected, actual, tolerance, inputs.lengths)) == "fail"
        outcomes.append((case, failed))
        variants_s, matches = best_of(
            args.repeat,
            lambda: diagnose(case, weights, inputs, actual, tolerance.atol, expected),  # noqa: B023
        )
        precision_s, _ = best_of(
            args.repeat,
            lambda: diagnose_precision(case, weights, inputs, actual, tolerance.atol, expected),  # noqa: B023
        )
        totals["oracle"] += oracle_s
        totals["variants"] += variants_s
        totals["precision"] += precision_s
        top = matches[0].id if matches else "-"
        named += top == "gate-order-nrz"
        print(
            f"{case.id:62} {1000 * oracle_s:>9.2f} {len(applicable(case)):>8} {1000 * variants_s:>11.1f} "
            f"{variants_s / oracle_s:>8.1f} {len(candidates(case)):>7} {1000 * precision_s:>12.1f} "
            f"{precision_s / oracle_s:>8.1f}  {top}"
        )
    pattern_s, pattern = best_of(args.repeat, lambda: find_pattern(outcomes))
    n = len(cases)
    diagnosis = totals["variants"] + totals["precision"]
    print()
    print(f"oracle, per case (mean):              {1000 * totals['oracle'] / n:8.2f} ms")
    print(
        f"variants.diagnose, per failing case:  {1000 * totals['variants'] / n:8.2f} ms "
        f"({totals['variants'] / totals['oracle']:.1f}x the oracle)"
    )
    print(
        f"diagnose_precision, per failing case: {1000 * totals['precision'] / n:8.2f} ms "
        f"({totals['precision'] / totals['oracle']:.1f}x the oracle)"
    )
    print(f"both, whole tier:                     {diagnosis:8.2f} s")
    print(f"named gate-order-nrz first:           {named} of {sum(failed for _, failed in outcomes)} failing cases")
    print(f"find_pattern over the tier:           {1000 * pattern_s:8.2f} ms  ({pattern.describe()})")
    last = next(c for c in reversed(cases))
    weights, inputs = case_data(last)
    expected = gru_reference(last, weights, inputs)
    actual = backend.run(last, weights, inputs)
    print(
        f"example diagnosis line ({last.id}): {describe(diagnose(last, weights, inputs, actual, derive(last).atol, expected))}"
    )
    if args.recall:
        recall(cases)
    return 0


def recall(cases: list[Any]) -> None:
    """Of the cases each planted mistake fails, how many name its variant first, and at all."""
    print()
    print(f"{'planted mistake':40} {'variant':34} {'failing':>7} {'first':>5} {'named':>5}")
    for mistake, want in MISTAKES.items():
        backend = mistake()
        failing = first = anywhere = 0
        for case in cases:
            weights, inputs = case_data(case)
            expected = gru_reference(case, weights, inputs)
            actual = backend.run(case, weights, inputs)
            tolerance = derive(case)
            if verdict_of(compare(case, expected, actual, tolerance, inputs.lengths)) != "fail":
                continue
            ids = [m.id for m in diagnose(case, weights, inputs, actual, tolerance.atol, expected)]
            failing += 1
            first += ids[:1] == [want]
            anywhere += want in ids
        print(f"{backend.family:40} {want:34} {failing:>7} {first:>5} {anywhere:>5}")


if __name__ == "__main__":
    raise SystemExit(main())
