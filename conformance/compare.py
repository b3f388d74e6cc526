"""The comparison engine: shape and dtype first, then numbers, valid and padded positions apart.

Each check is plain data that explains itself: which tensor, the index of the
worst element (named axes), both values, abs/rel/ULP error, tolerance, headroom.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput
from conformance.dtypes import name_of, ulp
from conformance.records import Check
from conformance.tolerance import Tolerance
from conformance.verdict import Verdict


def output_axes(case: Case) -> tuple[str, str, str]:
    return ("batch", "step", "unit") if case.batch_first else ("step", "batch", "unit")


def name_index(case: Case, tensor: str, index: tuple[int, ...]) -> dict[str, Any]:
    """Turn a flat numpy index into named axes, with the direction a unit belongs to."""
    h = case.hidden_size
    if tensor == "h_n":
        layer, direction = divmod(index[0], case.num_directions)
        return {
            "layer": layer,
            "direction": "backward" if direction else "forward",
            "batch": index[1],
            "unit": index[2],
        }
    named: dict[str, Any] = dict(zip(output_axes(case), (int(i) for i in index), strict=True))
    if case.bidirectional:
        direction, unit = divmod(named["unit"], h)
        named.update(direction="backward" if direction else "forward", unit=unit)
    return named


def structure_checks(tensor: str, expected: np.ndarray, actual: Any, dtype: str) -> list[Check]:
    checks = []
    shape = tuple(getattr(actual, "shape", ()))
    ok = shape == expected.shape
    checks.append(
        Check(f"{tensor}.shape", "shape", ok, "" if ok else f"{tensor} shape: expected {expected.shape}, got {shape}")
    )
    got = name_of(np.asarray(actual).dtype) if hasattr(actual, "dtype") else type(actual).__name__
    ok = got == dtype
    checks.append(Check(f"{tensor}.dtype", "dtype", ok, "" if ok else f"{tensor} dtype: expected {dtype}, got {got}"))
    return checks


def numeric_check(
    case: Case,
    name: str,
    tensor: str,
    expected: np.ndarray,
    actual: np.ndarray,
    mask: np.ndarray,
    tol: float,
    kind: str,
    names: Callable[[tuple[int, ...]], dict[str, Any]] | None = None,
) -> Check:
    """Max errors over the masked elements; the worst element is the largest abs error (NaN counts as worst).

    `names` turns the worst element's index into named axes; default: `name_index` of `tensor`."""
    if not mask.any():
        return Check(name, kind, True, "no elements", max_abs=0.0, tolerance=tol, headroom=0.0)
    act = np.asarray(actual, dtype=np.float64)
    diff = np.abs(act - expected)
    diff = np.where(np.isnan(diff), np.inf, diff)
    diff = np.where(mask, diff, -1.0)
    flat = int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    masked = diff[mask]
    max_abs = float(masked.max())
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(mask, diff / np.abs(expected), 0.0)
        ulps = np.where(mask, diff / ulp(expected, case.dtype), 0.0)
    max_rel = float(np.nan_to_num(rel[mask], nan=np.inf, posinf=np.inf).max())
    max_ulp = float(np.nan_to_num(ulps[mask], nan=np.inf, posinf=np.inf).max())
    headroom = max_abs / tol if tol > 0 else (0.0 if max_abs == 0 else float("inf"))
    passed = max_abs <= tol
    named = names(idx) if names is not None else name_index(case, tensor, idx)
    where = ", ".join(f"{k}={v}" for k, v in named.items())
    message = (
        f"{name}: worst element at [{where}]: expected {float(expected[idx])!r}, got {float(act[idx])!r}; "
        f"abs err {max_abs:.3g} {'<=' if passed else '>'} tolerance {tol:.3g} (headroom {headroom:.3g}), "
        f"max rel err {max_rel:.3g}, max {max_ulp:.3g} ULP"
    )
    return Check(
        name,
        kind,
        passed,
        message,
        max_abs=max_abs,
        max_rel=max_rel,
        max_ulp=max_ulp,
        tolerance=tol,
        headroom=headroom,
        worst_index=named,
        expected=float(expected[idx]),
        actual=float(act[idx]),
    )


def valid_mask(case: Case, lengths: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """True at output positions inside each item's length, in the case's layout."""
    steps = np.arange(case.seq_len)
    lens = np.full(case.batch, case.seq_len) if lengths is None else np.asarray(lengths)
    valid = steps[:, None] < lens[None, :]  # (T, B)
    if case.batch_first:
        valid = valid.T
    return np.broadcast_to(valid[..., None], shape)


def ran_items(lengths: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """True at h_n elements of items that ran at least one step (every item unless a length is 0)."""
    if lengths is None:
        return np.ones(shape, bool)
    return np.broadcast_to((np.asarray(lengths) > 0)[None, :, None], shape)


ZERO_LENGTH = "h_n.zero-length"


def zero_length_check(case: Case, expected: np.ndarray, actual: np.ndarray, empty: np.ndarray, tol: float) -> Check:
    """h_n of the items of length 0, against the policy (their h0, or 0 without h0): a convention, never arithmetic.

    No two libraries agree on what an empty sequence returns, so a difference here is recorded as
    the backend's convention, named by what came back; the other items are judged by the `h_n` check.
    The tolerance is the case's: an implementation that keeps the state of an item that never runs
    returns h0 exactly, one that does anything else is off by O(1).
    """
    check = numeric_check(case, ZERO_LENGTH, "h_n", expected, actual, empty, tol, "convention")
    if check.passed:
        return check
    got = np.asarray(actual, dtype=np.float64)[empty]
    if np.isnan(got).any():
        what = "h_n of a length-0 item holds NaN, not " + ("h0" if case.initial_state else "0 (h0 omitted)")
    elif not case.initial_state:
        what = "h_n of a length-0 item is not 0 (its h0, omitted)"
    elif np.all(np.abs(got) <= tol):
        what = "h_n of a length-0 item is 0, not h0"
    else:
        what = "h_n of a length-0 item is neither h0 nor 0"
    check.message = f"{what}; {check.message}"
    return check


def compare(
    case: Case, expected: GruOutput, actual: GruOutput, tolerance: Tolerance, lengths: np.ndarray | None
) -> list[Check]:
    """All checks of one result. Numbers are only compared where shapes agree."""
    checks: list[Check] = []
    for tensor in ("output", "h_n"):
        exp = np.asarray(getattr(expected, tensor), dtype=np.float64)
        act = getattr(actual, tensor)
        structure = structure_checks(tensor, exp, act, case.dtype)
        checks += structure
        if not structure[0].passed:
            continue
        act = np.asarray(act)
        if tensor == "h_n":
            ran = ran_items(lengths, exp.shape)
            checks.append(numeric_check(case, "h_n", "h_n", exp, act, ran, tolerance.atol, "arithmetic"))
            if not ran.all():
                checks.append(zero_length_check(case, exp, act, ~ran, tolerance.atol))
            continue
        valid = valid_mask(case, lengths, exp.shape)
        checks.append(numeric_check(case, "output", "output", exp, act, valid, tolerance.atol, "arithmetic"))
        if case.packed:
            # PyTorch pads with exact zeros; anything else there is a convention difference.
            checks.append(numeric_check(case, "output.padding", "output", exp, act, ~valid, 0.0, "convention"))
    return checks


def verdict_of(checks: list[Check]) -> Verdict:
    """pass, fail (any shape/dtype/arithmetic failure, whatever else fails too), or convention (only padding differs)."""
    failed = {c.kind for c in checks if not c.passed}
    if failed - {"convention"}:
        return Verdict.FAIL
    return Verdict.CONVENTION if failed else Verdict.PASS
