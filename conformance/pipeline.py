"""One check pipeline in three small steps, shared by every check path.

    attempt  availability, supports, run      -> ran / refused (skipped, unsupported) / crashed (error)
    judge    compare with expected values     -> pass / fail / convention, with the checks behind it
    relabel  the known-divergence registry    -> known_divergence / unexpected_pass

The backward check takes the same steps: `attempt_backward` (the same refusals, time limit and
contract checks around `run_backward`; a backend that isn't `Differentiable` is unsupported),
then `conformance.compare_backward.judge_gradients`, then `relabel`.

This is where "unsupported is not failed and failed is not hidden" is decided: the
backend's own refusal becomes `unsupported`, the comparison decides pass, fail or
convention, and the registry can only relabel, never hide, a difference. The oracle
check (`conformance.engine`), the cross-device check and the vectors verifier are
short compositions of these steps.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.compare import compare, verdict_of
from conformance.contract import (
    Availability,
    Backend,
    Differentiable,
    UnsupportedCase,
    WorkerFailure,
    backward_refusal,
    first_line,
)
from conformance.data import Cotangents, GruOutput, Inputs, Weights, fresh
from conformance.divergences import Divergence, Reproduces, matching
from conformance.dtypes import FORMATS
from conformance.forms import Form
from conformance.records import Check, Result
from conformance.time_limit import NO_LIMIT, TimeLimit, capture
from conformance.tolerance import Tolerance
from conformance.verdict import Verdict


@dataclass(frozen=True)
class Reference:
    """Where expected values come from, and what a rerun command needs to use it again.

    `name` is recorded with every result ("oracle", or the vectors directory);
    `load` gives a case's weights, inputs and expected output; `load_backward` the backward
    check's cotangents and expected gradients (None: this reference holds none, e.g. vectors
    written before gradients were stored), or None for a case it holds none for.
    """

    name: str
    load: Callable[[Case], tuple[Weights, Inputs, GruOutput]]
    rerun_args: tuple[str, ...] = ()
    load_backward: Callable[[Case], tuple[Cotangents, dict[str, np.ndarray]] | None] | None = None
    # The same for a backend that declares another GRU form (conformance.contract.declared_form); None: none.
    other_form: Callable[[Case, Form], tuple[Weights, Inputs, GruOutput]] | None = None


@dataclass
class Attempt:
    """What asking one backend for one case gave: an output, or the verdict that replaces one."""

    verdict: Verdict | None  # None when the backend ran and returned an output (or gradients)
    output: GruOutput | None = None
    reason: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    gradients: dict[str, np.ndarray] | None = None  # what `run_backward` returned, by name

    @property
    def ran(self) -> bool:
        return self.verdict is None


@dataclass
class Attempts:
    """The case's own run per (backend, case, precision), kept for the invariant checks of the same pair:
    the oracle check's run is one of determinism's two identical runs, and every invariant's base.

    Bounded (oldest dropped first): a dropped run is simply made again."""

    size: int = 4096
    runs: dict[tuple[str, Case, str], Attempt] = field(default_factory=dict)

    def get(
        self,
        backend: Backend,
        case: Case,
        precision: str,
        weights: Weights,
        inputs: Inputs,
        limit: TimeLimit = NO_LIMIT,
    ) -> Attempt:
        key = (backend.name, case, precision)
        if key not in self.runs:
            if len(self.runs) >= self.size:
                self.runs.pop(next(iter(self.runs)))
            self.runs[key] = attempt(backend, case, weights, inputs, limit)
        return self.runs[key]


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


def _as_array(what: str, name: str, item: Any) -> tuple[np.ndarray | None, str]:
    """One returned tensor as a numpy array, or why it breaks the contract (`what` returned it: run, run_backward)."""
    if isinstance(item, np.ndarray):
        array = item
    elif hasattr(item, "__array__"):
        try:
            array = np.asarray(item)
        except Exception as error:
            return None, (
                f"{what} returned {name} as {_kind(item)}, which numpy can't convert without loss "
                f"({first_line(error)}); return a numpy array in the case dtype"
            )
    else:
        return None, (
            f"{what} returned {name} as {_kind(item)}; expected a numpy array (or an array that converts to one "
            "without loss: anything with __array__)"
        )
    if array.dtype.kind not in "biuf" and array.dtype not in NUMERIC_DTYPES:
        return None, f"{what} returned {name} as an array of {array.dtype}; expected real numbers"
    return array, ""


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
        array, problem = _as_array("run", name, getattr(value, name))
        if array is None:
            return None, problem
        arrays[name] = array
    return GruOutput(**arrays), ""


def as_gradients(value: Any) -> tuple[dict[str, np.ndarray] | None, str]:
    """`run_backward`'s answer as numpy arrays by name, or why it breaks the contract (as `as_output`).

    Which names it should hold is the judge's business (a missing or unexpected gradient is a named
    failing check); here only the kind of thing: a mapping of names to arrays."""
    if not isinstance(value, Mapping):
        return (
            None,
            f"run_backward returned {_kind(value)}; expected a mapping of names (x, h0, state_dict names) to arrays",
        )
    arrays: dict[str, np.ndarray] = {}
    for name, item in value.items():
        if not isinstance(name, str):
            return None, f"run_backward returned a gradient keyed {name!r} ({_kind(name)}); expected names (str)"
        array, problem = _as_array("run_backward", name, item)
        if array is None:
            return None, problem
        arrays[name] = array
    return arrays, ""


def _limited(backend: Backend, case: Case, limit: TimeLimit, what: str, call: Callable[[], Any]) -> tuple[Any, Attempt]:
    """`call()`, the backend's `what` (run, run_backward), held to the per-case time limit: its value and an
    `Attempt` holding its time, or None and the `Attempt` that replaces it (a refusal, a crash, the limit)."""
    from conformance.out_of_process import WorkerBackend  # here: its frames import vectors, which import this module

    started = time.perf_counter()
    if isinstance(backend, WorkerBackend):  # a worker process can be killed: it holds itself to the limit
        backend.case_timeout_s = limit.seconds
        outcome = capture(call)
    else:
        outcome = limit.call(backend.name, case.id if what == "run" else f"{case.id} ({what})", call)
    timing = {"backend_s": time.perf_counter() - started}
    if outcome.hung_on is not None:
        return None, Attempt(
            Verdict.ERROR,
            reason=f"not run: this backend's run on case {outcome.hung_on} exceeded the per-case time limit of "
            f"{limit.seconds:g} s (--case-timeout) and is still running in the background",
        )
    if outcome.timed_out:
        return None, Attempt(
            Verdict.ERROR,
            reason=f"{what} exceeded the per-case time limit of {limit.seconds:g} s (--case-timeout); an in-process "
            "call can't be stopped, so it goes on in a background thread and this backend's later cases are not run",
            timing=timing,
        )
    if isinstance(outcome.error, UnsupportedCase):
        return None, Attempt(Verdict.UNSUPPORTED, reason=str(outcome.error))
    if outcome.error is not None:  # a backend crash is a result, not a crash of the suite
        return None, Attempt(Verdict.ERROR, reason=_crash(outcome.error, what), timing=timing)
    return outcome.value, Attempt(None, timing=timing)


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
    value, tried = _limited(backend, case, limit, "run", lambda: backend.run(case, *mine))
    if not tried.ran:
        return tried
    tried.output, problem = as_output(value)
    if tried.output is None:
        return Attempt(Verdict.ERROR, reason=problem, timing=tried.timing)
    return tried


def attempt_backward(
    backend: Backend,
    case: Case,
    weights: Weights,
    inputs: Inputs,
    cotangents: Cotangents,
    limit: TimeLimit = NO_LIMIT,
) -> Attempt:
    """`attempt` for the backward check: the same refusals, copies, time limit and contract checks around
    `run_backward`. A backend that isn't `Differentiable` is `unsupported`, saying why."""
    refused = refusal(backend, case)
    if refused is not None:
        return refused
    if not isinstance(backend, Differentiable):
        return Attempt(Verdict.UNSUPPORTED, reason=backward_refusal(backend) or "")
    mine = fresh(weights, inputs)
    seeds = Cotangents(output=np.array(cotangents.output, copy=True), h_n=np.array(cotangents.h_n, copy=True))
    value, tried = _limited(backend, case, limit, "run_backward", lambda: backend.run_backward(case, *mine, seeds))
    if not tried.ran:
        return tried
    tried.gradients, problem = as_gradients(value)
    if tried.gradients is None:
        return Attempt(Verdict.ERROR, reason=problem, timing=tried.timing)
    return tried


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
    `reproduces(variant_id, scale)` answers for entries bounded by a semantic variant. Where several
    entries are about the case, the first that explains the failure and fits it relabels it; if none
    does, the failure stays and says why each didn't. Only entries for the result's `check` apply (an
    oracle divergence says nothing about an invariant)."""
    entries = matching(registry, result.backend, result.case, result.quantity, result.check)
    if not entries:
        return
    entry = entries[0]
    failing = [c.name for c in result.failing_checks]
    if result.verdict in (Verdict.FAIL, Verdict.CONVENTION, Verdict.ERROR):
        misfits = []
        for candidate in entries:
            if not candidate.explains(failing):
                continue
            why = candidate.misfit(result, reproduces)
            if why is None:
                result.divergence = candidate.id
                result.reason = f"known divergence {candidate.id}: {candidate.reason}\n{result.reason}"
                result.verdict = Verdict.KNOWN_DIVERGENCE
                return
            misfits.append(f"\nnot the known divergence {candidate.id}: {why}")
        result.reason += "".join(misfits)
    elif result.verdict == Verdict.PASS:
        result.divergence = entry.id
        result.verdict = Verdict.UNEXPECTED_PASS
        result.reason = (
            f"known divergence {entry.id} no longer reproduces for this case: "
            "remove or narrow its entry in conformance/declared/divergences.toml"
        )
