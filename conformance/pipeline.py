"""One check pipeline in three small steps, shared by every check path.

    attempt  availability, supports, run      -> ran / refused (skipped, unsupported) / crashed (error)
    judge    compare with expected values     -> pass / fail / convention, with the checks behind it
    relabel  the known-divergence registry    -> known_divergence / unexpected_pass

This is where "unsupported is not failed and failed is not hidden" is decided: the
backend's own refusal becomes `unsupported`, the comparison decides pass, fail or
convention, and the registry can only relabel, never hide, a difference. The oracle
check (`conformance.engine`), the cross-device check and the vectors verifier are
short compositions of these steps.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.compare import compare, verdict_of
from conformance.contract import Availability, Backend, UnsupportedCase, WorkerFailure, first_line
from conformance.data import GruOutput, Inputs, Weights, fresh
from conformance.divergences import Divergence, Reproduces, match
from conformance.dtypes import FORMATS
from conformance.records import Check, Result
from conformance.time_limit import NO_LIMIT, TimeLimit, capture
from conformance.tolerance import Tolerance
from conformance.verdict import Verdict


@dataclass(frozen=True)
class Reference:
    """Where expected values come from, and what a rerun command needs to use it again.

    `name` is recorded with every result ("oracle", or the vectors directory);
    `load` gives a case's weights, inputs and expected output.
    """

    name: str
    load: Callable[[Case], tuple[Weights, Inputs, GruOutput]]
    rerun_args: tuple[str, ...] = ()


@dataclass
class Attempt:
    """What asking one backend for one case gave: an output, or the verdict that replaces one."""

    verdict: Verdict | None  # None when the backend ran and returned an output
    output: GruOutput | None = None
    reason: str = ""
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.verdict is None


def _crash(error: BaseException, where: str) -> str:
    """The library's first line plus where it was raised, e.g. `ValueError: ... (at adapter.py:12, in run)`.
    An out-of-process backend's `WorkerFailure` already says all of that (or the signal, or the limit)."""
    if isinstance(error, WorkerFailure):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    at = f"at {frames[-1].filename}:{frames[-1].lineno}, " if frames else ""
    return f"{first_line(error)} ({at}in {where})"


def _kind(value: Any) -> str:
    """How a contract violation names what came back: `tuple`, `None`, `torch.Tensor`."""
    if value is None:
        return "None"
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"


def refusal(backend: Backend, case: Case) -> Attempt | None:
    """`skipped` when the backend isn't available here, `unsupported` when it says it can't express the case;
    `error` when `availability` or `supports` breaks the contract (raises, or returns the wrong type)."""
    tried = capture(lambda: backend.availability())
    if tried.error is not None:
        return Attempt(Verdict.ERROR, reason=f"{_crash(tried.error, 'availability')}; availability() must not raise")
    availability = tried.value
    if not isinstance(availability, Availability):
        return Attempt(Verdict.ERROR, reason=f"availability returned {_kind(availability)}; expected Availability")
    if not availability.available:
        return Attempt(Verdict.SKIPPED, reason=availability.describe())
    tried = capture(lambda: backend.supports(case))
    if tried.error is not None:
        return Attempt(
            Verdict.ERROR,
            reason=f"{_crash(tried.error, 'supports')}; supports() must return None or a reason, not raise",
        )
    reason = tried.value
    if reason is not None and not isinstance(reason, str):
        return Attempt(Verdict.ERROR, reason=f"supports returned {_kind(reason)}; expected None or a reason (str)")
    if reason:
        return Attempt(Verdict.UNSUPPORTED, reason=reason)
    return None


NUMERIC_DTYPES = {f.numpy for f in FORMATS.values()}


def as_output(value: Any) -> tuple[GruOutput | None, str]:
    """The backend's answer as numpy arrays, or why it breaks the contract (the reason of an `error`).

    Anything with `__array__` that numpy converts without loss is accepted (a CPU torch tensor, a jax
    array); what can't be converted exactly (a bfloat16 or `requires_grad` torch tensor, a CUDA
    tensor) or isn't an array at all (a list, None) is refused, naming what came back.
    """
    if not isinstance(value, GruOutput):
        return None, f"run returned {_kind(value)}; expected GruOutput(output=..., h_n=...)"
    arrays: dict[str, np.ndarray] = {}
    for name in ("output", "h_n"):
        item = getattr(value, name)
        if isinstance(item, np.ndarray):
            array = item
        elif hasattr(item, "__array__"):
            try:
                array = np.asarray(item)
            except Exception as error:
                return None, (
                    f"run returned {name} as {_kind(item)}, which numpy can't convert without loss "
                    f"({first_line(error)}); return a numpy array in the case dtype"
                )
        else:
            return None, (
                f"run returned {name} as {_kind(item)}; expected a numpy array (or an array that converts to one "
                "without loss: anything with __array__)"
            )
        if array.dtype.kind not in "biuf" and array.dtype not in NUMERIC_DTYPES:
            return None, f"run returned {name} as an array of {array.dtype}; expected real numbers"
        arrays[name] = array
    return GruOutput(**arrays), ""


def attempt(backend: Backend, case: Case, weights: Weights, inputs: Inputs, limit: TimeLimit = NO_LIMIT) -> Attempt:
    """Availability, supports, run: never raises for anything the backend does (a crash is a result).

    The backend gets its own copies of the data (`fresh`), so nothing it does to them reaches the
    expected values or the next backend, and its `run` is held to the per-case time limit: in a
    thread for an in-process backend, by its worker process (killed and restarted past the limit)
    for an out-of-process one.
    """
    refused = refusal(backend, case)
    if refused is not None:
        return refused
    mine = fresh(weights, inputs)
    started = time.perf_counter()
    from conformance.out_of_process import WorkerBackend  # here: its frames import vectors, which import this module

    if isinstance(backend, WorkerBackend):  # a worker process can be killed: it holds itself to the limit
        backend.case_timeout_s = limit.seconds
        outcome = capture(lambda: backend.run(case, *mine))
    else:
        outcome = limit.call(backend.name, case.id, lambda: backend.run(case, *mine))
    timing = {"backend_s": time.perf_counter() - started}
    if outcome.hung_on is not None:
        return Attempt(
            Verdict.ERROR,
            reason=f"not run: this backend's run on case {outcome.hung_on} exceeded the per-case time limit of "
            f"{limit.seconds:g} s (--case-timeout) and is still running in the background",
        )
    if outcome.timed_out:
        return Attempt(
            Verdict.ERROR,
            reason=f"run exceeded the per-case time limit of {limit.seconds:g} s (--case-timeout); an in-process call "
            "can't be stopped, so it goes on in a background thread and this backend's later cases are not run",
            timing=timing,
        )
    if isinstance(outcome.error, UnsupportedCase):
        return Attempt(Verdict.UNSUPPORTED, reason=str(outcome.error))
    if outcome.error is not None:  # a backend crash is a result, not a crash of the suite
        return Attempt(Verdict.ERROR, reason=_crash(outcome.error, "run"), timing=timing)
    output, problem = as_output(outcome.value)
    if output is None:
        return Attempt(Verdict.ERROR, reason=problem, timing=timing)
    return Attempt(None, output, timing=timing)


@dataclass
class Judgement:
    verdict: Verdict
    checks: list[Check]
    reason: str


def judge(
    case: Case, expected: GruOutput, actual: GruOutput, tolerance: Tolerance, lengths: np.ndarray | None
) -> Judgement:
    """Compare one output with the expected one; the reason lists every failing check's message."""
    checks = compare(case, expected, actual, tolerance, lengths)
    return Judgement(verdict_of(checks), checks, "\n".join(c.message for c in checks if not c.passed))


def relabel(result: Result, registry: list[Divergence], reproduces: Reproduces | None = None) -> None:
    """Apply the known-divergence registry: a matching failure no larger than the entry says becomes
    `known_divergence`; a larger one stays a failure and says which entry it didn't fit; a matching pass
    becomes `unexpected_pass` (a fixed upstream bug must be noticed). Other verdicts stay what they are.
    `reproduces(variant_id)` answers for entries bounded by a semantic variant."""
    entry = match(registry, result.backend, result.case)
    if entry is None:
        return
    failing = [c.name for c in result.failing_checks]
    if result.verdict in (Verdict.FAIL, Verdict.CONVENTION, Verdict.ERROR) and entry.explains(failing):
        why = entry.misfit(result, reproduces)
        if why is not None:
            result.reason += f"\nnot the known divergence {entry.id}: {why}"
            return
        result.divergence = entry.id
        result.reason = f"known divergence {entry.id}: {entry.reason}\n{result.reason}"
        result.verdict = Verdict.KNOWN_DIVERGENCE
    elif result.verdict == Verdict.PASS:
        result.divergence = entry.id
        result.verdict = Verdict.UNEXPECTED_PASS
        result.reason = (
            f"known divergence {entry.id} no longer reproduces for this case: "
            "remove or narrow its entry in conformance/declared/divergences.toml"
        )
