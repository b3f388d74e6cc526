"""ONNX columns: export count/time per exporter, session creation and run time, vs one fresh export per case.

    .venv/bin/python benchmarks/bench_onnx.py [--tier pairwise] [--naive 3]

Cold = an empty cache (a temporary root), exports in parallel fresh processes;
warm = the same root again (must export nothing). Naive = what a suite without
signature caching does: export in-process, make a session and run, per case;
timed on `--naive` cases per exporter and extrapolated to the tier.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from backends.onnx.column import OnnxColumn
from backends.onnx.export_store import ModelStore, Signature
from backends.onnx.model_source import ModelSource
from backends.onnx.ort import ORT, WEIGHTS_ENV
from backends.onnx.source_dynamo import DynamoSource
from backends.onnx.source_spec import SpecSource
from backends.onnx.source_torch import TorchExportSource
from backends.onnx.source_torchscript import TorchScriptSource
from conformance.case import Case
from conformance.contract import UnsupportedCase
from conformance.data import case_data
from conformance.matrix import cases as tier_cases

EXPORTERS: dict[str, type[TorchExportSource]] = {"torchscript": TorchScriptSource, "dynamo": DynamoSource}


def run_column(source: ModelSource, cases: list[Case], mode: str) -> tuple[float, float, int, int]:
    """(session-creation s, total run s, sessions, cells run) for `source` on ort[cpu] in weights `mode`."""
    os.environ[WEIGHTS_ENV] = mode
    backend = OnnxColumn.of(source, ORT)
    runner = ORT.runner(backend.device, backend.precision)
    backend.runner = runner
    started, ran = time.perf_counter(), 0
    for case in cases:
        weights, inputs = case_data(case)
        try:
            backend.run(case, weights, inputs)
            ran += 1
        except UnsupportedCase:
            pass
    return runner.create_s, time.perf_counter() - started, runner.created, ran


def naive_per_case(exporter: str, cases: list[Case]) -> float:
    """Mean seconds for export + session + run of one case, exporting afresh in-process every time."""
    started = time.perf_counter()
    for case in cases:
        store = ModelStore(Path(tempfile.mkdtemp()))
        source = EXPORTERS[exporter](store)
        model = source.export(Signature.of(exporter, case), case)  # in-process, every case: the naive path
        store.memory[model.key] = model
        backend = OnnxColumn.of(source, ORT)
        weights, inputs = case_data(case)
        with contextlib.suppress(UnsupportedCase):
            backend.run(case, weights, inputs)
    return (time.perf_counter() - started) / len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--naive", type=int, default=3, help="cases per exporter timed the naive way")
    parser.add_argument("--exporters", default=",".join(EXPORTERS))
    args = parser.parse_args()
    cases = tier_cases(args.tier)
    exporters = args.exporters.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    print(f"tier {args.tier}: {len(cases)} cases; cache {root}; {os.cpu_count()} cores")

    cold = ModelStore(root)
    totals: dict[str, float] = {}
    for exporter in exporters:
        started = time.perf_counter()
        cold_source = EXPORTERS[exporter](cold)
        cold.prepare(cold_source, cases)
        wall = time.perf_counter() - started
        ok = sum(cold.get(cold_source, c).status == "ok" for c in cases)
        print(
            f"cold  {exporter:12s} exports {cold.stats.count.get(exporter, 0):3d}  "
            f"export time {cold.stats.seconds.get(exporter, 0.0):7.1f} s (sum in workers)  wall {wall:6.1f} s  "
            f"models ok {ok}/{len(cases)}"
        )
        totals[exporter] = wall

    warm = ModelStore(root)
    sources: dict[str, ModelSource] = {"spec": SpecSource()} | {e: EXPORTERS[e](warm) for e in exporters}
    started = time.perf_counter()
    for exporter in exporters:
        warm.prepare(EXPORTERS[exporter](warm), cases)
    warm_load = time.perf_counter() - started
    print(f"warm  exports {sum(warm.stats.count.values())}  load {warm_load:.2f} s")
    warm_totals = dict.fromkeys(exporters, warm_load / len(exporters))

    for source in ["spec", *exporters]:
        for mode in ("initializers", "inputs"):
            create, total, sessions, ran = run_column(sources[source], cases, mode)
            print(
                f"ort[cpu] {source:12s} weights={mode:12s} sessions {sessions:3d}  "
                f"create {create:6.2f} s  create+run {total:6.2f} s  cells run {ran}"
            )
            if source != "spec" and mode == "initializers":
                totals[source] += total
                warm_totals[source] += total
    os.environ.pop(WEIGHTS_ENV, None)

    for exporter in exporters:
        per_case = naive_per_case(exporter, cases[: args.naive])
        naive = per_case * len(cases)
        print(
            f"naive {exporter:12s} {per_case:6.2f} s/case x {len(cases)} = {naive:7.1f} s;  cached cold "
            f"{totals[exporter]:6.1f} s -> {naive / totals[exporter]:5.2f}x;  cached warm "
            f"{warm_totals[exporter]:6.2f} s -> {naive / warm_totals[exporter]:6.1f}x"
        )


if __name__ == "__main__":
    main()
