"""Confirming a failure pattern by probing: which single change to a failing case makes it pass?

A pattern found across the matrix (`conformance.patterns`) is a correlation over the cases
a tier happened to hold. Probing tests it: each failing case is run again with one field
changed at a time, to every other value the matrix declares for that field, on the same
backend. A change after which the case passes is part of the failure's trigger: the
failure needs the original value of that field. The changes that leave it failing don't
matter to it. This is `--explain`; it costs extra backend calls, bounded by a budget per
backend that is printed with the results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from conformance.case import Case, CaseError
from conformance.records import Result
from conformance.verdict import Verdict

Check = Callable[[Case], Result]


@dataclass(frozen=True)
class Neighbour:
    """A failing case with one field changed, and what the backend did with it."""

    field: str
    original: Any
    value: Any
    verdict: Verdict

    @property
    def cures(self) -> bool:
        return self.verdict == Verdict.PASS


@dataclass
class Probe:
    """The neighbours of one backend's failing cases, and what they say about the trigger."""

    backend: str
    budget: int
    neighbours: list[Neighbour] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)  # the failing case ids probed
    exhausted: bool = False  # the budget ran out before every neighbour was run

    def triggers(self) -> list[tuple[str, Any, int, int]]:
        """(field, original value, changes that pass, changes tried), for fields whose change cured something."""
        tried: Counter[tuple[str, Any]] = Counter()
        cured: Counter[tuple[str, Any]] = Counter()
        for n in self.neighbours:
            if n.verdict in (Verdict.UNSUPPORTED, Verdict.SKIPPED):
                continue
            tried[(n.field, n.original)] += 1
            cured[(n.field, n.original)] += n.cures
        return sorted(
            ((f, v, cured[(f, v)], tried[(f, v)]) for f, v in tried if cured[(f, v)]),
            key=lambda t: (-t[2] / t[3], t[0], str(t[1])),
        )

    def describe(self) -> str:
        ran = sum(n.verdict not in (Verdict.UNSUPPORTED, Verdict.SKIPPED) for n in self.neighbours)
        head = f"probed {len(self.neighbours)} one-field neighbours of {len(self.cases)} failing case(s) ({ran} ran"
        head += f", budget {self.budget}{' reached' if self.exhausted else ''})"
        found = self.triggers()
        if not found:
            return f"{head}: no single change makes a failure pass"
        parts = [f"{name} = {value!r} (changing it passes {cured} of {tried})" for name, value, cured, tried in found]
        return f"{head}: the failure needs {'; '.join(parts)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "budget": self.budget,
            "cases": self.cases,
            "exhausted": self.exhausted,
            "neighbours": [
                {"field": n.field, "original": n.original, "value": n.value, "verdict": n.verdict.value}
                for n in self.neighbours
            ],
            "summary": self.describe(),
        }


def neighbours(case: Case, dimensions: dict[str, Sequence[Any]]) -> list[tuple[str, Any, Case]]:
    """Every valid case that differs from `case` in exactly one declared field, in declaration order."""
    found = []
    for name, values in dimensions.items():
        original = getattr(case, name)
        for value in values:
            if value == original:
                continue
            try:
                found.append((name, value, replace(case, **{name: value})))
            except CaseError:
                continue  # an impossible combination (e.g. sorted lengths at batch 1)
    return found


def probe(
    backend: str, failing: Iterable[Case], dimensions: dict[str, Sequence[Any]], check: Check, budget: int
) -> Probe:
    """Run the one-field neighbours of each failing case through `check`, up to `budget` calls in all."""
    result = Probe(backend, budget)
    for case in failing:
        if len(result.neighbours) >= budget:
            result.exhausted = True
            break
        result.cases.append(case.id)
        for name, value, neighbour in neighbours(case, dimensions):
            if len(result.neighbours) >= budget:
                result.exhausted = True
                break
            result.neighbours.append(Neighbour(name, getattr(case, name), value, check(neighbour).verdict))
    return result
