"""What each backend checked, how much of its own space that covers, and whether the run may end green.

A green run must mean something was checked. A backend that ends a run having compared no
output (every case refused, or not available) would otherwise read as a pass: pytest
reports refusals as skips and exits 0. So, per backend that took part in the run:

- it checked nothing although it is available: the run fails, saying what it could not run,
  why (the most frequent refusal), and which option gives it coverage;
- it is not available here: the run fails only when `--backends` named it (the user asked
  for it by name); a backend that came with the default selection or a glob is reported;
- under `--shard`, a shard holding none of the cases its `supports` admits is reported, not
  failed: the other shards hold them;
- it checked something but less than its own space (a covering tier whose cases the library
  then refused at run time): reported, with the pairs still missing.

What counts is the oracle check of one quantity: the forward check when the run has it (the
invariants and the backward check of the same pairs follow the same plan but add no coverage of
their own), else the backward check of the backends that are `Differentiable` (the others refuse
every backward case by construction: no tier could give them coverage, so they aren't accounted).

Plain data in, plain data out (no numerical import): the plugin feeds it records and the plan's
spaces, and writes what it returns as `coverage` records the report reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conformance.pairs import CHECKED, Coverage, coverage
from conformance.records import BACKWARD, COVERAGE, FORWARD, ORACLE_CHECK, check_of
from conformance.verdict import Verdict


@dataclass(frozen=True)
class RunShape:
    """The facts about the run that decide what a backend's shortfall means."""

    tier: str  # a matrix tier, or "case" / "vectors"
    covering: bool  # the tier promises every value pair (each backend gets its own cover)
    shard: str | None = None
    strength: int = 2
    dimensions: tuple[str, ...] = ()
    named: frozenset[str] = frozenset()  # backends `--backends` named exactly (no glob, not the default)
    quantity: str = FORWARD  # the quantity whose oracle check the accounts count
    differentiable: frozenset[str] = frozenset()  # backends with a backward check (counted when `quantity` is)


def counts_for(record: dict[str, Any], shape: RunShape) -> bool:
    """Whether a result record counts in its backend's account (see the module's docstring)."""
    if check_of(record) != ORACLE_CHECK or record.get("quantity", FORWARD) != shape.quantity:
        return False
    return shape.quantity != BACKWARD or record["backend"] in shape.differentiable


@dataclass
class Account:
    """One backend at the end of a run."""

    backend: str
    tests: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    coverage: Coverage | None = None
    fails: bool = False
    message: str = ""  # empty when there is nothing to say
    plan: dict[str, Any] = field(default_factory=dict)
    space: list[str] | None = None

    @property
    def checked(self) -> int:
        return sum(self.counts[v.value] for v in CHECKED)

    def as_record(self, shape: RunShape) -> dict[str, Any]:
        return {
            "kind": COVERAGE,
            "backend": self.backend,
            "tier": shape.tier,
            "quantity": shape.quantity,
            "shard": shape.shard,
            "strength": shape.strength,
            "dimensions": list(shape.dimensions),
            "space": self.space,
            "plan": self.plan,
            "tests": self.tests,
            "checked": self.checked,
            "covered": None if self.coverage is None else len(self.coverage.covered),
            "fails": self.fails,
            "message": self.message,
        }


def slim(record: dict[str, Any], cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What an account needs of a result record (a full tier's records don't all fit in memory whole);
    `cases` shares one case dict per case id between backends."""
    reason = (record.get("reason") or "").strip()
    return {
        "backend": record["backend"],
        "case_id": record["case_id"],
        "case": cases.setdefault(record["case_id"], record["case"]),
        "verdict": record["verdict"],
        "reason": reason.splitlines()[0] if reason else "",
    }


def _top(results: list[dict[str, Any]], verdict: Verdict) -> str:
    reasons = Counter(
        (r.get("reason") or "").strip().splitlines()[0]
        for r in results
        if r["verdict"] == verdict.value and (r.get("reason") or "").strip()
    )
    return reasons.most_common(1)[0][0] if reasons else ""


def account(
    backend: str,
    results: list[dict[str, Any]],
    shape: RunShape,
    space: list[str] | None = None,
    plan: dict[str, Any] | None = None,
    example: str | None = None,
    admitted: int | None = None,
) -> Account:
    """Judge one backend from its result records.

    `space`: its value pairs (None when the run didn't compute them); `example`: a case id
    from its space, for the hint; `admitted`: how many of its results its `supports` admitted.
    """
    found = Account(backend, len(results), Counter(r["verdict"] for r in results), plan=plan or {}, space=space)
    if space is not None:
        checked = [r["case"] for r in results if Verdict(r["verdict"]) in CHECKED]
        found.coverage = coverage(space, shape.dimensions, checked, shape.strength)
    if found.checked:
        if shape.covering and not shape.shard and found.coverage is not None and not found.coverage.complete:
            lost = [
                f"{found.counts[v.value]} {v.value}"
                for v in (Verdict.UNSUPPORTED, Verdict.ERROR)
                if found.counts[v.value]
            ]
            found.message = f"{backend}: {found.coverage.describe()} (not checked: {', '.join(lost)})"
        return found
    n = found.tests
    skipped, refused = found.counts[Verdict.SKIPPED.value], found.counts[Verdict.UNSUPPORTED.value]
    if skipped == n:
        why = _top(results, Verdict.SKIPPED)
        found.fails = backend in shape.named
        consequence = (
            "it was named in --backends, so the run fails: install it, or leave it out of --backends"
            if found.fails
            else "not named in --backends, so the run doesn't fail over it"
        )
        found.message = f"{backend}: checked nothing: not available here ({why}); {consequence}"
        return found
    what = f"{backend}: checked nothing: {n} case{'s' if n != 1 else ''}"
    parts = []
    if refused:
        parts.append(f"{refused} unsupported (mostly: {_top(results, Verdict.UNSUPPORTED)})")
    if found.counts[Verdict.ERROR.value]:
        parts.append(f"{found.counts[Verdict.ERROR.value]} error")
    what += ", " + ", ".join(parts) if parts else ""
    pick = f"--case {example}" if example else "--case with a case it supports"
    widen = (
        f"a filter (-k, --case) that keeps cases of its space, e.g. {pick}"
        if shape.covering
        else f"--tier pairwise (which adds cases from its own space), or {pick}"
    )
    if space is not None and not space:
        hint = (
            "it supports no case of the matrix (its `supports` refuses every combination), so no tier can give it "
            "coverage: widen `supports`, or give a matrix (--matrix) with values it can run"
        )
    elif shape.shard and not admitted:
        found.message = f"{what}; this shard ({shape.shard}) holds none of the cases it supports, the other shards do"
        return found
    elif admitted:
        hint = (
            f"its `supports` admitted {admitted} of them but the library refused them when run: declare those "
            "refusals statically (in `supports`, or `StaticCapabilities.refusals`) so a covering tier plans cases it "
            f"can run; to check something now, give it {widen}"
        )
    else:
        hint = f"none of the cases given is in its space: give it coverage with {widen}"
    found.fails = True
    found.message = f"{what}; {hint}"
    return found


def accounts(
    results: Iterable[dict[str, Any]],
    shape: RunShape,
    spaces: dict[str, list[str] | None],
    plans: dict[str, dict[str, Any]],
    examples: dict[str, str | None],
    supported: dict[str, set[str]],
) -> list[Account]:
    """One account per backend with results, in first-seen order.

    `supported`: per backend, the ids of the cases its `supports` admits among those it was given.
    """
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for record in results:
        by_backend.setdefault(record["backend"], []).append(record)
    return [
        account(
            name,
            records,
            shape,
            spaces.get(name),
            plans.get(name),
            examples.get(name),
            sum(1 for r in records if r["case_id"] in supported.get(name, set())),
        )
        for name, records in by_backend.items()
    ]
