"""Invariant checks: properties a GRU must have whatever its numbers, tested by running it against itself.

A backend can agree with the oracle on every fixed case and still be wrong in use: an item's
result that depends on the other items of its batch (PyTorch's CPU GRU, pytorch#32023), on the
padding after it, or on whether h0 was omitted or passed as zeros (mlx#3249 dropped b_hn on the
first step only when h0 was omitted). Each invariant here is metamorphic: it runs the backend on
the case and on a transformed copy of it and compares the two answers with each other, so it
needs no oracle and applies to any backend as a black box.

    batch-independence    each item run alone gives its row of the batched result
    omitted-h0            running without h0 equals running with explicit zeros
    padding-independence  extra padded steps after a packed batch change no valid output and no h_n
    order-equivariance    permuting the items of an unsorted batch permutes the results
    determinism           two identical runs agree bit for bit

Each invariant is its own check kind: a `Result` whose `check` is `invariant:<name>`, with its own
verdict, tolerance and explanation, composed of the pipeline's steps (attempt, then a comparison,
then the registry, whose entries name the check they explain).

Tolerance. Both runs are the same backend on the same mathematical problem; each is within the
case's derived `atol` of the exact answer (what the oracle check certifies), so they are within
`2 * atol` of each other (the cross-device argument). Bit-for-bit would be too strict: a batch of
one and a batch of three may go through different BLAS kernels, whose blocking rounds differently,
and that is no leak; a leak (another item's data, a dropped bias, a state that runs on through
padding) moves results by far more. Every check records its largest difference, so a pair that
is bit-identical shows max_abs 0. Determinism alone is bit for bit: the same call twice has no
reason to round differently; a difference is reported (a `convention` of the backend: informative,
not a failure) unless the backend claims determinism (`deterministic = True`), where it fails.

The derived cases keep the case's structure; only batch or seq_len change, and h0 is given for
`omitted-h0`. A one-item packed batch is labelled `full`: the lengths kind only says how a batch is
packed (`Case.impossibility` needs two items for sorted/unsorted), the item's own length is data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from conformance.case import Case
from conformance.compare import numeric_check, valid_mask
from conformance.contract import Backend
from conformance.data import GruOutput, Inputs, Weights, case_data, uniform
from conformance.divergences import Divergence
from conformance.dtypes import quantize
from conformance.pipeline import Attempts, attempt, refusal, relabel
from conformance.records import INVARIANT_PREFIX, Check, Result, rerun_command
from conformance.time_limit import NO_LIMIT, TimeLimit
from conformance.tolerance import derive
from conformance.verdict import Verdict

EXTRA_STEPS = 3  # padding-independence: steps appended after the batch's longest item
FACTOR = 2.0  # two runs, each within atol of the truth


@dataclass(frozen=True)
class Derived:
    """One transformed run: its case and inputs, and what the report calls it ("item 2 alone")."""

    label: str
    case: Case
    inputs: Inputs


@dataclass(frozen=True)
class Invariant:
    """A metamorphic property: runs to make from a case, and how their outputs must relate to the case's own.

    `derive` gives the transformed runs; `expect` turns the case's own output into what the transformed
    runs, put together by `assemble`, must equal. `applies` says whether the property says anything
    about a case (no batch to split in a batch of one): inapplicable pairs are never generated.
    """

    name: str
    explanation: str
    applies: Callable[[Case], bool]
    derive: Callable[[Case, Inputs], list[Derived]]
    assemble: Callable[[Case, list[GruOutput]], GruOutput]
    expect: Callable[[Case, GruOutput], GruOutput]
    valid_only: bool = True  # compare valid positions and h_n (padding has its own oracle check)
    exact: bool = False

    @property
    def check(self) -> str:
        return INVARIANT_PREFIX + self.name

    def cases(self, case: Case) -> list[Case]:
        """The derived cases (for backends that build a model per case ahead of time)."""
        _, inputs = case_data(case)
        return [d.case for d in self.derive(case, inputs)]


def _batch_axis(case: Case) -> int:
    return 0 if case.batch_first else 1


def _time_axis(case: Case) -> int:
    return 1 if case.batch_first else 0


def _take_items(case: Case, inputs: Inputs, items: Sequence[int]) -> Inputs:
    """The inputs of some items of the batch, in the order given."""
    index = np.asarray(items)
    return Inputs(
        x=np.ascontiguousarray(np.take(inputs.x, index, axis=_batch_axis(case))),
        h0=None if inputs.h0 is None else np.ascontiguousarray(inputs.h0[:, index]),
        lengths=None if inputs.lengths is None else np.ascontiguousarray(inputs.lengths[index]),
    )


def _take_output(case: Case, output: GruOutput, items: Sequence[int]) -> GruOutput:
    index = np.asarray(items)
    return GruOutput(
        np.ascontiguousarray(np.take(output.output, index, axis=_batch_axis(case))),
        np.ascontiguousarray(np.asarray(output.h_n)[:, index]),
    )


def _same(case: Case, output: GruOutput) -> GruOutput:
    return output


def _only(case: Case, outputs: list[GruOutput]) -> GruOutput:
    return outputs[0]


# --- batch-independence -------------------------------------------------------------------------


def _alone(case: Case) -> Case:
    lengths = "dense" if case.lengths == "dense" else "full"
    return replace(case, batch=1, lengths=lengths)


def _each_alone(case: Case, inputs: Inputs) -> list[Derived]:
    return [Derived(f"item {b} alone", _alone(case), _take_items(case, inputs, [b])) for b in range(case.batch)]


def _stack_items(case: Case, outputs: list[GruOutput]) -> GruOutput:
    return GruOutput(
        np.concatenate([np.asarray(o.output) for o in outputs], axis=_batch_axis(case)),
        np.concatenate([np.asarray(o.h_n) for o in outputs], axis=1),
    )


# --- omitted-h0 ---------------------------------------------------------------------------------


def _zero_h0(case: Case, inputs: Inputs) -> list[Derived]:
    zeros = np.zeros((case.num_layers * case.num_directions, case.batch, case.hidden_size), dtype=inputs.x.dtype)
    return [Derived("h0 given as zeros", replace(case, initial_state=True), replace(inputs, h0=zeros))]


# --- padding-independence -----------------------------------------------------------------------


def _extended(case: Case, inputs: Inputs) -> list[Derived]:
    """EXTRA_STEPS more steps of fresh values (never zeros: a leak must show), same lengths."""
    shape = list(inputs.x.shape)
    shape[_time_axis(case)] = EXTRA_STEPS
    extra = quantize(uniform(case, "invariant-padding", tuple(shape), -1.0, 1.0), case.dtype)
    x = np.concatenate([inputs.x, extra], axis=_time_axis(case))
    longer = replace(case, seq_len=case.seq_len + EXTRA_STEPS)
    return [Derived(f"{EXTRA_STEPS} padded steps appended", longer, replace(inputs, x=x))]


def _first_steps(case: Case, outputs: list[GruOutput]) -> GruOutput:
    output = np.take(np.asarray(outputs[0].output), np.arange(case.seq_len), axis=_time_axis(case))
    return GruOutput(np.ascontiguousarray(output), outputs[0].h_n)


# --- order-equivariance -------------------------------------------------------------------------


def _rolled(case: Case) -> list[int]:
    """Item i of the permuted batch is item (i + 1) mod B of the original: never the identity for B >= 2."""
    return [(i + 1) % case.batch for i in range(case.batch)]


def _permuted(case: Case, inputs: Inputs) -> list[Derived]:
    order = _rolled(case)
    return [Derived(f"items in order {order}", case, _take_items(case, inputs, order))]


def _permute_expected(case: Case, output: GruOutput) -> GruOutput:
    return _take_output(case, output, _rolled(case))


# --- determinism ----------------------------------------------------------------------------------


def _again(case: Case, inputs: Inputs) -> list[Derived]:
    return [Derived("the same call again", case, inputs)]


INVARIANTS: dict[str, Invariant] = {
    invariant.name: invariant
    for invariant in (
        Invariant(
            "batch-independence",
            "each item run alone gives its row of the batched result",
            lambda case: case.batch >= 2 and case.lengths != "zero",
            _each_alone,
            _stack_items,
            _same,
        ),
        Invariant(
            "omitted-h0",
            "running without h0 equals running with h0 given as zeros",
            lambda case: not case.initial_state and case.lengths != "zero",
            _zero_h0,
            _only,
            _same,
        ),
        Invariant(
            "padding-independence",
            f"{EXTRA_STEPS} extra padded steps after a packed batch change no valid output and no h_n",
            lambda case: case.packed and case.lengths != "zero",
            _extended,
            _first_steps,
            _same,
        ),
        Invariant(
            "order-equivariance",
            "permuting the items of an unsorted packed batch permutes the results",
            lambda case: case.lengths == "unsorted",
            _permuted,
            _only,
            _permute_expected,
        ),
        Invariant(
            "determinism",
            "two identical runs agree bit for bit (a difference is informative unless the backend claims determinism)",
            lambda case: case.lengths != "zero",
            _again,
            _only,
            _same,
            valid_only=False,
            exact=True,
        ),
    )
}


class InvariantError(ValueError):
    """An unknown invariant name (in the matrix file, say)."""


def named(names: Sequence[str], where: str = "") -> list[Invariant]:
    """The invariants of these names, in the order given; an unknown name says which are valid."""
    unknown = [n for n in names if n not in INVARIANTS]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise InvariantError(f"{prefix}unknown invariant(s) {', '.join(unknown)}; valid: {', '.join(INVARIANTS)}")
    return [INVARIANTS[n] for n in names]


def claims_determinism(backend: Backend) -> bool:
    """Optional contract attribute: a backend that promises bit-identical repeated runs."""
    return bool(getattr(backend, "deterministic", False))


def _agreement(
    case: Case, invariant: Invariant, expected: GruOutput, actual: GruOutput, tol: float, lengths: np.ndarray | None
) -> list[Check]:
    """Shape, then numbers: valid outputs (or all of them) and h_n of the assembled runs against the expectation."""
    checks: list[Check] = []
    kind = "arithmetic"
    for tensor in ("output", "h_n"):
        want, got = np.asarray(getattr(expected, tensor)), np.asarray(getattr(actual, tensor))
        if want.shape != got.shape:
            message = f"{tensor} shape: the case's own run gave {want.shape}, the transformed runs {got.shape}"
            checks.append(Check(f"{tensor}.shape", "shape", False, message))
            continue
        want64 = want.astype(np.float64)
        if tensor == "output" and invariant.valid_only:
            mask = valid_mask(case, lengths, want.shape)
        else:
            mask = np.ones(want.shape, bool)
        checks.append(numeric_check(case, tensor, tensor, want64, got, mask, tol, kind))
    return checks


def _describe_failure(invariant: Invariant, derived: list[Derived], checks: list[Check]) -> str:
    runs = ", ".join(d.label for d in derived[:3]) + (f", ... ({len(derived)} runs)" if len(derived) > 3 else "")
    lines = [f"invariant {invariant.name} broken: {invariant.explanation} (compared: the case's own run vs {runs})"]
    lines += [c.message for c in checks if not c.passed]
    return "\n".join(lines)


def check(
    backend: Backend,
    case: Case,
    invariant: Invariant,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    data: Callable[[Case], tuple[Weights, Inputs]] = case_data,
    attempts: Attempts | None = None,
    limit: TimeLimit = NO_LIMIT,
) -> Result:
    """Run the case and its transformed copies on one backend, compare them, record a Result."""
    result = Result(
        case=case,
        backend=backend.name,
        family=backend.family,
        device=backend.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(
            case, backend.name, precision, [*rerun_args, "--invariant", invariant.name, "-k", "test_invariant"]
        ),
        precision=precision,
        reference="self",
        check=invariant.check,
    )
    weights, inputs = data(case)
    derived = invariant.derive(case, inputs)
    for run in [Derived("the case itself", case, inputs), *derived]:
        refused = refusal(backend, run.case)
        if refused is not None:
            prefix = "" if run.case == case else f"{run.label} ({run.case.id}): "
            result.verdict, result.reason = refused.verdict or Verdict.ERROR, prefix + refused.reason
            return result
    started = time.perf_counter()
    own = (attempts or Attempts()).get(backend, case, precision, weights, inputs, limit)
    tried = [own] + [attempt(backend, d.case, weights, d.inputs, limit) for d in derived]
    result.timing = {"backend_s": time.perf_counter() - started, "runs": float(len(tried))}
    for run, got in zip([Derived("the case itself", case, inputs), *derived], tried, strict=True):
        if got.output is None:
            result.verdict = got.verdict or Verdict.ERROR
            prefix = "" if run.case == case and run.inputs is inputs else f"{run.label} ({run.case.id}): "
            result.reason = prefix + got.reason
            relabel(result, registry or [])  # a known crash of this backend is known here too
            return result
    outputs = [t.output for t in tried[1:] if t.output is not None]
    assert own.output is not None
    expected = invariant.expect(case, own.output)
    actual = invariant.assemble(case, outputs)
    single = derive(case, precision)
    tol = 0.0 if invariant.exact else FACTOR * single.atol
    result.tolerance = single.as_dict() | {
        "atol": tol,
        "basis": "bit for bit" if invariant.exact else f"{FACTOR:g} x atol: two runs, each within atol of the truth",
    }
    result.checks = _agreement(case, invariant, expected, actual, tol, inputs.lengths)
    failing = [c for c in result.checks if not c.passed]
    if failing:
        result.reason = _describe_failure(invariant, derived, failing)
        if invariant.exact and not claims_determinism(backend) and all(c.kind == "arithmetic" for c in failing):
            for c in failing:
                c.kind = "convention"  # informative: nothing promised bit-identical runs
            result.verdict = Verdict.CONVENTION
            result.reason += "\n(informative: the backend does not claim determinism, so this is not a failure)"
        else:
            result.verdict = Verdict.FAIL
    relabel(result, registry or [])  # the result's check (this invariant) picks the entries
    return result
