"""Value pairs as plain data: what a covering tier promises, counted from records alone.

A value pair is two dimensions of the matrix with one value each (`bias=false × dtype=float64`).
A backend's *space* is every pair some valid case it supports has (computed when the run is
planned, `conformance.coverage`, and recorded); its *coverage* is the part of that space its
checked cases have. This module only compares such sets: no numerical import, so the
terminal summary and the report (`reports/`) count coverage from the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from conformance.verdict import Verdict

# A case was *checked* when its output was compared with the reference. `error` (nothing to compare),
# `unsupported` and `skipped` leave its pairs unchecked.
CHECKED: tuple[Verdict, ...] = tuple(
    v for v in Verdict if v not in (Verdict.ERROR, Verdict.UNSUPPORTED, Verdict.SKIPPED)
)


def value_text(value: Any) -> str:
    """How a value reads in a pair: `true`/`false` as in the matrix file, everything else as itself."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pair_key(*parts: tuple[str, Any]) -> str:
    """`bias=false × dtype=float64` from (dimension, value) parts, in the matrix's dimension order."""
    return " × ".join(f"{dim}={value_text(value)}" for dim, value in parts)


def case_pairs(case: Mapping[str, Any], dimensions: Sequence[str], strength: int = 2) -> set[str]:
    """Every value pair (or t-tuple) of one case (a `Case.as_dict()` or a record's `case`), dimensions in order."""
    present = [d for d in dimensions if d in case]
    return {pair_key(*((d, case[d]) for d in combo)) for combo in combinations(present, strength)}


def unit(strength: int) -> str:
    """What one element of a space is called: `value pairs`, `value triples`, `4-way value combinations`."""
    return {2: "value pairs", 3: "value triples"}.get(strength, f"{strength}-way value combinations")


@dataclass(frozen=True)
class Coverage:
    """A backend's space and the part of it its checked cases cover."""

    space: frozenset[str]
    covered: frozenset[str] = field(default_factory=frozenset)
    strength: int = 2

    @property
    def complete(self) -> bool:
        return self.covered >= self.space

    @property
    def missing(self) -> list[str]:
        return sorted(self.space - self.covered)

    def fraction(self) -> str:
        return f"{len(self.covered & self.space)}/{len(self.space)}"

    def describe(self, examples: int = 3) -> str:
        """`covers 379/379 value pairs of its space`, or the shortfall with a few missing pairs named."""
        text = f"covers {self.fraction()} {unit(self.strength)} of its space"
        if not self.space:
            return "its space is empty: it supports no case of the matrix"
        if self.complete:
            return text
        missing = self.missing
        named = "; ".join(missing[:examples]) + ("; …" if len(missing) > examples else "")
        return f"{text}; missing {len(missing)}, e.g. {named}"


def covered_pairs(cases: Sequence[Mapping[str, Any]], dimensions: Sequence[str], strength: int = 2) -> set[str]:
    """Every value pair (or t-tuple) the cases have between them: `case_pairs` of each, united, but by
    column (one set of value tuples per combination of dimensions), so a full tier's cases take a blink."""
    columns = {d: [case.get(d, _ABSENT) for case in cases] for d in dimensions}
    found: set[str] = set()
    for combo in combinations(dimensions, strength):
        for values in set(zip(*(columns[d] for d in combo), strict=True)):
            if _ABSENT not in values:
                found.add(pair_key(*zip(combo, values, strict=True)))
    return found


_ABSENT = object()


def coverage(
    space: Iterable[str], dimensions: Sequence[str], checked: Iterable[Mapping[str, Any]], strength: int = 2
) -> Coverage:
    """The coverage of `space` by the cases in `checked` (case dicts)."""
    wanted = frozenset(space)
    return Coverage(wanted, frozenset(covered_pairs(list(checked), dimensions, strength) & wanted), strength)
