"""Gradient checks: a backend's dL/d(x, h0, parameters) against the float64 BPTT oracle, one check per tensor.

The same machinery as the forward comparison (`conformance.compare`): shape and dtype first,
then the largest absolute error against that tensor's derived tolerance
(`conformance.tolerance_backward`), with the worst element named by axis, so a failure reads
`grad weight_hh_l1_reverse: worst element at [gate=z, row=3, column=1]: ...`.

* A parameter's rows are its gate blocks (r, z, n) of H rows each: the worst element names
  the gate, the row within it and the column; a column of `weight_ih_l{k>0}` in a
  bidirectional GRU also says which direction's output it reads (`input_direction`).
* dL/dx names step, batch and feature in the case's layout; dL/dh0 names layer, direction,
  batch and unit, like h_n.
* dL/dx at padded positions is its own check, `grad x.padding`, with tolerance exactly 0
  and kind "arithmetic": a padded input never reaches the loss, so any gradient there is
  a real error (a backward that runs through padded steps), not a convention.
* A missing or an unexpected gradient is a "shape" failure named after the tensor.

`verdict_of` then decides the verdict exactly as for the forward check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.compare import name_index, numeric_check, structure_checks, valid_mask, verdict_of
from conformance.records import Check
from conformance.tolerance_backward import BackwardTolerance
from conformance.verdict import Verdict

GATES = ("r", "z", "n")


def check_name(tensor: str) -> str:
    """The check of one gradient tensor: `grad x`, `grad h0`, `grad weight_hh_l1_reverse`."""
    return f"grad {tensor}"


def _layer(tensor: str) -> int:
    return int(tensor.split("_l")[1].split("_")[0])


def gradient_index(case: Case, tensor: str, index: tuple[int, ...]) -> dict[str, Any]:
    """Named axes of one element of gradient `tensor` (a key of `Gradients.tensors`)."""
    if tensor == "x":
        axes = ("batch", "step", "feature") if case.batch_first else ("step", "batch", "feature")
        return dict(zip(axes, (int(i) for i in index), strict=True))
    if tensor == "h0":
        return name_index(case, "h_n", index)
    hidden = case.hidden_size
    gate, row = divmod(int(index[0]), hidden)
    named: dict[str, Any] = {"gate": GATES[gate], "row": row}
    if len(index) == 2:
        column = int(index[1])
        if tensor.startswith("weight_ih") and case.bidirectional and _layer(tensor) > 0:
            direction, column = divmod(column, hidden)
            named["input_direction"] = "backward" if direction else "forward"
        named["column"] = column
    return named


def _missing(tensor: str, actual: Mapping[str, Any]) -> Check:
    name = check_name(tensor)
    got = ", ".join(actual) or "nothing"
    return Check(name, "shape", False, f"{name}: missing: the backend returned no gradient for {tensor} (got: {got})")


def _unexpected(tensor: str, expected: Mapping[str, Any]) -> Check:
    name = check_name(tensor)
    return Check(
        name,
        "shape",
        False,
        f"{name}: unexpected: the case has no input or parameter {tensor!r} (expected: {', '.join(expected)})",
    )


def compare_gradients(
    case: Case,
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    tolerance: BackwardTolerance,
    lengths: np.ndarray | None,
) -> list[Check]:
    """Every check of one backward result, in the expected tensors' order; numbers only where shapes agree."""
    checks: list[Check] = []
    for tensor, want in expected.items():
        if tensor not in actual:
            checks.append(_missing(tensor, actual))
            continue
        name = check_name(tensor)
        exp = np.asarray(want, dtype=np.float64)
        structure = structure_checks(name, exp, actual[tensor], case.dtype)
        checks += structure
        if not structure[0].passed:
            continue
        act = np.asarray(actual[tensor])
        names = partial(gradient_index, case, tensor)
        atol = tolerance.atol[tensor]
        if tensor != "x":
            checks.append(
                numeric_check(case, name, tensor, exp, act, np.ones(exp.shape, bool), atol, "arithmetic", names)
            )
            continue
        valid = valid_mask(case, lengths, exp.shape)
        checks.append(numeric_check(case, name, tensor, exp, act, valid, atol, "arithmetic", names))
        if case.packed:
            checks.append(numeric_check(case, name + ".padding", tensor, exp, act, ~valid, 0.0, "arithmetic", names))
    checks += [_unexpected(tensor, expected) for tensor in actual if tensor not in expected]
    return checks


@dataclass
class GradientJudgement:
    """What comparing one backward result gives: the verdict, the checks behind it, and every failure's message."""

    verdict: Verdict
    checks: list[Check]
    reason: str


def judge_gradients(
    case: Case,
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    tolerance: BackwardTolerance,
    lengths: np.ndarray | None,
) -> GradientJudgement:
    """`compare_gradients`, then `verdict_of`: pass or fail (a gradient has no convention to differ by)."""
    checks = compare_gradients(case, expected, actual, tolerance, lengths)
    return GradientJudgement(verdict_of(checks), checks, "\n".join(c.message for c in checks if not c.passed))
