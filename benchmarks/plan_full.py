"""The full tier's plan, the CI exhaustive job's shards, and the measurement behind their estimates.

    python benchmarks/plan_full.py                         # plans, from the reference timings (a cold machine)
    python benchmarks/plan_full.py --cache DIR             # ... or from what DIR's caches recorded
    python benchmarks/plan_full.py --measure [--tier triples] [--cache DIR]
    python benchmarks/plan_full.py --measure --fit-only --cache DIR   # fit to runs already made on DIR
    python benchmarks/plan_full.py --check 1/400 [--cache DIR]

Printing: the plan of the full tier on every CPU backend (what one machine would face), then
for each exhaustive job of `.github/workflows/conformance.yml` (`cpu-full`: the full tier on
the backends in its BACKENDS, in the shards of its SHARD; `cpu-triples`) the plan of its
longest shard and its estimated wall time on a 4-core runner against the job's timeout.

--measure runs `pytest conformance --tier TIER --device cpu` on an empty cache (every
export, program and check cold), fits `seconds = fixed + per_unit x units` to what that
run recorded, per exporter, per compiled-program family (forward and vjp), per backend's
forward, backward and invariant checks and for the oracle (then it runs the full tier's other
invariants on the full job's backends, so their rate covers what that job runs), and writes them to `conformance/declared/timings.toml`: the reference timings a
cold plan estimates from. The triples tier is the sample: it holds every triple of values,
so every kind of case, and builds almost one model per case.

--check I/N runs one shard of the exhaustive job's full-tier part cold and prints its wall
time next to the plan's estimate for it: the estimate, tested.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
TIMINGS = ROOT / "conformance" / "declared" / "timings.toml"


EXHAUSTIVE_JOBS = {"cpu-full": "full", "cpu-triples": "triples"}  # workflow job -> the tier it runs


def exhaustive_jobs() -> list[tuple[str, str, str | None, int, int, str]]:
    """What the workflow's exhaustive jobs run: (job, tier, backends or None, shard count, timeout minutes,
    --quantity)."""
    import yaml

    jobs = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]
    found = []
    for name, tier in EXHAUSTIVE_JOBS.items():
        env = jobs[name].get("env", {})
        shards = int(str(env.get("SHARD", "1/1")).rsplit("/", 1)[1])
        timeout = int(jobs[name]["timeout-minutes"])
        found.append((name, tier, env.get("BACKENDS") or None, shards, timeout, str(env.get("QUANTITY", "both"))))
    return found


def select(backends: str | None) -> list[Any]:
    from conformance import selection

    return selection.select(backends.split(",") if backends else None, "cpu", [], "strict")


def job_plan(
    title: str, tier: str, cases: list[Any], chosen: list[Any], quantity: str, root: Path | None = None
) -> Any:
    """The plan of what an exhaustive job runs: its `--quantity` checks and the tier's invariants."""
    from conformance import estimate, invariants, matrix
    from conformance.plugin import QUANTITY_CHOICES

    applies = [i.applies for i in invariants.named(matrix.invariants(tier))]
    return estimate.make(title, cases, chosen, root=root, quantities=QUANTITY_CHOICES[quantity], invariants=applies)


def shard_plans(tier: str, backends: str | None, count: int, quantity: str) -> list[Any]:
    from conformance import matrix, sharding

    cases, chosen = matrix.cases(tier), select(backends)
    return [
        job_plan(f"{tier} shard {i}/{count}", tier, sharding.select(cases, sharding.Shard(i, count)), chosen, quantity)
        for i in range(1, count + 1)
    ]


def show_plans() -> None:
    from conformance import matrix
    from conformance.estimate import RUNNER_CORES, runner_wall

    title = "full tier, every CPU backend, both quantities and its invariants, one machine"
    full = job_plan(title, "full", matrix.cases("full"), select(None), "both")
    print("\n".join(full.lines()))
    print(f"\nCI exhaustive jobs ({RUNNER_CORES}-core runners):")
    for job, tier, backends, count, timeout, quantity in exhaustive_jobs():
        plans = shard_plans(tier, backends, count, quantity)
        worst = max(plans, key=lambda p: p.total_s)
        wall = runner_wall(worst.total_s) / 60
        print(
            f"  {job}: --tier {tier} --backends {backends or '(all)'} --quantity {quantity} in {count} shard(s): "
            "longest shard "
            f"{worst.total_s / 60:.0f} min of work -> about {wall:.0f} min on {RUNNER_CORES} cores, install included "
            f"({100 * wall / timeout:.0f}% of its {timeout} min timeout)"
        )
        print("    " + "\n    ".join(worst.lines()))


def _run_suite(args: list[str], cache: Path) -> float:
    env = os.environ | {"GRU_CONFORMANCE_CACHE": str(cache)}
    command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--device", "cpu"]
    command += ["--no-report", *args]
    print("$", " ".join(shlex.quote(a) for a in command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest conformance exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return wall


def measure(tier: str, cache: Path) -> None:
    """Run `tier` cold on `cache` and write the fitted rates to the reference timings file."""
    from conformance import matrix

    with tempfile.TemporaryDirectory() as tmp:
        wall = _run_suite(["--tier", tier, "--results", str(Path(tmp) / "r.jsonl")], cache)
        print(f"cold --tier {tier} on every CPU backend: {wall:.0f} s wall")
        # The full tier's other invariants (new batch, structure or lengths: new builds) on the full job's
        # backends, so their "(invariants)" rate averages over every invariant that job runs.
        _, full, backends, _, _, _ = next(j for j in exhaustive_jobs() if j[1] == "full")
        others = [i for i in matrix.invariants(full) if i not in matrix.invariants(tier)]
        if others:
            args = ["--tier", tier, "--quantity", "forward", "--invariant", ",".join(others), "-k", "test_invariant"]
            args += ["--results", str(Path(tmp) / "i.jsonl"), *(["--backends", backends] if backends else [])]
            wall += _run_suite(args, cache)
            print(f"then the full tier's other invariants ({', '.join(others)}) on its job's backends: {wall:.0f} s")
    write_timings(tier, cache, f"{wall:.0f} s wall")


def write_timings(tier: str, cache: Path, wall: str) -> None:
    """Fit the rates to what the runs on `cache` recorded and write the reference timings file."""
    from conformance import estimate

    samples: dict[str, list[tuple[float, float]]] = dict(estimate.recorded_runs(cache))
    builds: dict[str, dict[str, tuple[float, float]]] = {}  # builder -> key -> (units, seconds), columns deduplicated
    for backend in select(None):
        for build in backend.recorded() if hasattr(backend, "recorded") else []:
            if build.seconds is not None:
                builds.setdefault(build.builder, {})[build.key] = (build.units, build.seconds)
    samples |= {builder: list(found.values()) for builder, found in builds.items()}
    lines = [
        "# Reference timings: what a cold plan (`pytest conformance --plan`) estimates from, until this",
        "# machine's caches have recorded their own. seconds = fixed + per_unit x units, units = seq_len x",
        "# layers x directions (of the trace shape, for exports). Written by `benchmarks/plan_full.py --measure`:",
        f"# a cold `--tier {tier}` run on every CPU backend, {wall}.",
        "",
        "[measured]",
        f'on = "{platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}, '
        f'{time.strftime("%Y-%m-%d")}, cold --tier {tier}"',
        "",
    ]
    for name in sorted(samples):
        rate = estimate.fit(samples[name], "measured")
        if rate is None:
            continue
        lines += [f'[rates."{name}"]', f"fixed = {rate.fixed:.4g}", f"per_unit = {rate.per_unit:.4g}"]
        lines += [f"samples = {rate.samples}", ""]
    TIMINGS.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {TIMINGS.relative_to(ROOT)} ({len(samples)} rates)")


def check(shard: str, cache: Path) -> None:
    """One shard of the exhaustive job's full-tier part, cold: its wall time against the plan's estimate."""
    from conformance import matrix, sharding

    _, tier, backends, _, _, quantity = next(j for j in exhaustive_jobs() if j[1] == "full")
    index, of = (int(x) for x in shard.split("/"))
    cases = sharding.select(matrix.cases(tier), sharding.Shard(index, of))
    estimated = job_plan("check", tier, cases, select(backends), quantity, root=cache).total_s
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--tier", tier, "--shard", shard, "--quantity", quantity, "--results", str(Path(tmp) / "r.jsonl")]
        wall = _run_suite([*args, *(["--backends", backends] if backends else [])], cache)
    print(
        f"--tier {tier} --shard {shard} ({len(cases)} cases, backends {backends}): plan {estimated:.0f} s, ran {wall:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="measure a cold tier and write the reference timings")
    parser.add_argument("--tier", default="triples", help="the tier --measure runs (default: triples)")
    parser.add_argument(
        "--fit-only", action="store_true", help="with --cache: fit the reference timings to what runs recorded there"
    )
    parser.add_argument("--check", default=None, metavar="I/N", help="run one shard of the full-tier part cold")
    parser.add_argument("--cache", default=None, help="cache root (default: a fresh temporary one for --measure)")
    args = parser.parse_args()
    if args.measure or args.check:
        cache = Path(args.cache or tempfile.mkdtemp(prefix="gru-plan-"))
        os.environ["GRU_CONFORMANCE_CACHE"] = str(cache)  # the stores read (and the runs fill) this cache
        if args.measure and args.fit_only:
            write_timings(args.tier, cache, "timed by the runs that filled the cache")
        elif args.measure:
            measure(args.tier, cache)
        if args.check:
            check(args.check, cache)
        return 0
    if args.cache:
        os.environ["GRU_CONFORMANCE_CACHE"] = args.cache
    show_plans()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
