"""One check pipeline in three small steps, shared by every check path.

    attempt  availability, supports, run      -> ran / refused (skipped, unsupported) / crashed (error)
    judge    compare with expected values     -> pass / fail / convention, with the checks behind it
    confirm  a probe of a declared refusal    -> unsupported quoting the library / unexpected_support
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

import numpy as np

from conformance.case import Case
from conformance.compare import compare, verdict_of
from conformance.contract import Backend, Refusal, UnsupportedCase, first_line
from conformance.data import GruOutput, Inputs, Weights
from conformance.divergences import Divergence, match
from conformance.records import Check, Result
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
    """The library's first line plus where it was raised, e.g. `ValueError: ... (at adapter.py:12, in run)`."""
    frames = traceback.extract_tb(error.__traceback__)
    at = f"at {frames[-1].filename}:{frames[-1].lineno}, " if frames else ""
    return f"{first_line(error)} ({at}in {where})"


def refusal(backend: Backend, case: Case, probe: Refusal | None = None) -> Attempt | None:
    """`skipped` when the backend isn't available here, `unsupported` when it says it can't express the case
    (unless this case is a `probe`: the representative of a declared refusal, attempted anyway)."""
    availability = backend.availability()
    if not availability.available:
        return Attempt(Verdict.SKIPPED, reason=availability.describe())
    if probe is not None:
        return None
    reason = backend.supports(case)
    if reason:
        return Attempt(Verdict.UNSUPPORTED, reason=reason)
    return None


def attempt(backend: Backend, case: Case, weights: Weights, inputs: Inputs, probe: Refusal | None = None) -> Attempt:
    """Availability, supports, run: never raises for anything the backend does (a crash is a result)."""
    refused = refusal(backend, case, probe)
    if refused is not None:
        return refused
    started = time.perf_counter()
    try:
        output = backend.run(case, weights, inputs)
    except UnsupportedCase as error:
        return Attempt(Verdict.UNSUPPORTED, reason=str(error))
    except Exception as error:  # a backend crash is a result, not a crash of the suite
        return Attempt(Verdict.ERROR, reason=_crash(error, "run"), timing={"backend_s": time.perf_counter() - started})
    return Attempt(None, output, timing={"backend_s": time.perf_counter() - started})


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


def confirm(result: Result, probe: Refusal) -> None:
    """Judge a probe: the declaration holds when the library refuses (the reason quotes it, first line);
    a probe that ran and agrees is `unexpected_support`, failing like `unexpected_pass`; one that ran
    and disagrees keeps its failure, its reason saying the declaration is stale too."""
    declared = f"declared unsupported ({probe.key}): {probe.reason}"
    if result.verdict == Verdict.UNSUPPORTED:
        result.reason = f"{result.reason}\n(this run's probe of the declared refusal {probe.key}: confirmed)"
    elif result.verdict in (Verdict.PASS, Verdict.CONVENTION):
        agrees = "agrees with the reference" if result.verdict == Verdict.PASS else "agrees at valid positions"
        result.verdict = Verdict.UNEXPECTED_SUPPORT
        result.reason = (
            f"{declared}; but the library ran this probe of it and the output {agrees}: "
            "remove or narrow the declaration (the adapter's `refusals`)"
            + (f"\n{result.reason}" if result.reason else "")
        )
    elif result.verdict != Verdict.SKIPPED:
        result.reason = f"{declared}; but attempting this probe of it gave:\n{result.reason}"


def relabel(result: Result, registry: list[Divergence]) -> None:
    """Apply the known-divergence registry: a matching failure becomes `known_divergence`, a matching pass
    becomes `unexpected_pass` (a fixed upstream bug must be noticed). Other verdicts stay what they are."""
    entry = match(registry, result.backend, result.case)
    if entry is None:
        return
    failing = [c.name for c in result.failing_checks]
    if result.verdict in (Verdict.FAIL, Verdict.CONVENTION, Verdict.ERROR) and entry.explains(failing):
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
