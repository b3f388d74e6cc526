"""What isolating backends costs per (backend, case): fresh data copies and the time-limit worker thread.

    python benchmarks/bench_isolation.py [--tier pairwise] [--repeat 200]

Prints, over the tier's cases, the median and largest time to copy a case's weights and inputs
(`conformance.data.fresh`), and the median overhead of handing a call to a backend's worker thread
(`conformance.time_limit.TimeLimit`) against calling it inline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import matrix  # noqa: E402
from conformance.data import case_data, fresh  # noqa: E402
from conformance.time_limit import TimeLimit  # noqa: E402


def per_call(call, repeat: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    cases = matrix.cases(args.tier)
    copies = []
    for case in cases:
        weights, inputs = case_data(case)
        copies.append(per_call(lambda w=weights, i=inputs: fresh(w, i), args.repeat))
    print(f"{args.tier}: {len(cases)} cases")
    print(f"fresh copies per call: median {statistics.median(copies) * 1e6:.1f} us, max {max(copies) * 1e6:.1f} us")
    inline, limited = TimeLimit(0), TimeLimit(300)
    direct = per_call(lambda: inline.call("b", "c", lambda: None), args.repeat * 10)
    threaded = per_call(lambda: limited.call("b", "c", lambda: None), args.repeat * 10)
    print(f"time-limit worker handoff per call: {(threaded - direct) * 1e6:.1f} us (inline {direct * 1e6:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
