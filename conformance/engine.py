"""One check: a case, a backend, a reference -> a Result with a verdict.

This is where "unsupported is not failed and failed is not hidden" is decided:
the backend's own refusal becomes `unsupported`, the comparison decides pass /
fail / convention, and the registry can only relabel, never hide, a difference.
"""

from __future__ import annotations

import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from functools import lru_cache

from conformance.case import Case
from conformance.compare import compare, verdict_of
from conformance.contract import Backend, UnsupportedCase, first_line
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.divergences import Divergence, match
from conformance.oracle import gru_reference
from conformance.results import Result
from conformance.tolerance import derive

Reference = Callable[[Case], tuple[Weights, Inputs, GruOutput]]


@lru_cache(maxsize=64)
def oracle_reference(case: Case) -> tuple[Weights, Inputs, GruOutput]:
    """Weights, inputs and the float64 oracle's answer; computed once per case per process."""
    weights, inputs = case_data(case)
    return weights, inputs, gru_reference(case, weights, inputs)


def rerun_command(
    case: Case, backend: str, precision: str = "strict", vectors: str | None = None, extra: Sequence[str] = ()
) -> str:
    """One line that reruns exactly this case on this backend, whatever tier produced it.

    `extra` carries the options that made the backend or the verdict what it was
    (`--backend-module`, a non-default `--divergences`)."""
    parts = ["pytest", "conformance", "--backends", backend, "--case", case.id, *extra]
    if precision != "strict":
        parts += ["--precision", precision]
    if vectors:
        parts += ["--vectors", vectors]
    return shlex.join(parts)


def check(
    backend: Backend,
    case: Case,
    reference: Reference = oracle_reference,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    reference_name: str = "oracle",
    rerun_args: Sequence[str] = (),
) -> Result:
    vectors = None if reference_name == "oracle" else reference_name
    result = Result(
        case=case,
        backend=backend.name,
        family=backend.family,
        device=backend.device,
        verdict="pass",
        rerun=rerun_command(case, backend.name, precision, vectors, rerun_args),
        precision=precision,
        reference=reference_name,
    )
    availability = backend.availability()
    if not availability.available:
        result.verdict, result.reason = "skipped", availability.describe()
        return result
    reason = backend.supports(case)
    if reason:
        result.verdict, result.reason = "unsupported", reason
        return result

    started = time.perf_counter()
    weights, inputs, expected = reference(case)
    after_reference = time.perf_counter()
    try:
        actual = backend.run(case, weights, inputs)
    except UnsupportedCase as error:
        result.verdict, result.reason = "unsupported", str(error)
        return result
    except Exception as error:  # a backend crash is a result, not a crash of the suite
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result.verdict = "error"
        result.reason = f"{first_line(error)} (at {frame.filename}:{frame.lineno})"
    finally:
        after_backend = time.perf_counter()
        result.timing = {"reference_s": after_reference - started, "backend_s": after_backend - after_reference}

    if result.verdict != "error":
        tolerance = derive(case, precision)
        result.tolerance = tolerance.as_dict()
        result.checks = compare(case, expected, actual, tolerance, inputs.lengths)
        result.verdict = verdict_of(result.checks)
        failing = [c for c in result.checks if not c.passed]
        result.reason = "\n".join(c.message for c in failing)
    result.timing["compare_s"] = time.perf_counter() - after_backend

    entry = match(registry or [], backend.name, case)
    if entry is not None:
        failing_names = [c.name for c in result.checks if not c.passed]
        if result.verdict in ("fail", "convention", "error") and entry.explains(failing_names):
            result.divergence = entry.id
            result.reason = f"known divergence {entry.id}: {entry.reason}\n{result.reason}"
            result.verdict = "known_divergence"
        elif result.verdict == "pass":
            result.divergence = entry.id
            result.verdict = "unexpected_pass"
            result.reason = (
                f"known divergence {entry.id} no longer reproduces for this case: "
                "remove or narrow its entry in fixtures/divergences.toml"
            )
    return result
