"""Failure patterns across the matrix: the simplest condition on case fields that separates fails from passes.

Twenty failing cases of one backend usually have one cause, and the cause usually
shows as a condition on the case: "fails exactly when dtype = bfloat16 and packed".
`find_pattern` searches conditions from simplest up, single conditions (a field's
value, a derived predicate such as `packed`, a threshold such as `seq_len >= 5`)
then conjunctions of two, and keeps those that hold on every failing case and on no
passing one. A covering array has few cases, so two different conditions can select
the same cases; the pattern then says which others fit just as well, because the
matrix can't tell them apart. When the passing cases are the simpler set ("fails on
every case except hidden_size = 16 and num_layers = 3"), it says that instead. When
nothing fits exactly, it says so and gives the
closest condition only as a labelled partial pattern.

Input is one backend's results as (case, failed) pairs; the caller decides what counts
as failed (verdict `fail`, usually) and leaves out what didn't run (unsupported, skipped).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from conformance.case import Case

EXACT = "exact"  # a condition that holds on exactly the failing cases
PARTIAL = "partial"  # no exact condition; the closest one, with its misses
NONE = "none"  # no exact condition and none worth naming
ALL = "all"  # every case fails
NO_FAILURES = "no-failures"

FIELDS = tuple(f.name for f in fields(Case) if f.name != "seed")
MAX_ALTERNATIVES = 5


@dataclass(frozen=True)
class Atom:
    """One condition on a case.

    rank 0: `field = value` and named predicates; rank 1: `!=` and thresholds. `order` fixes a
    deterministic order among equally ranked atoms: named predicates first (they name the code
    paths GRU ports get wrong, so among conditions the matrix can't tell apart they are the
    likelier cause), then the fields' order in `Case`.
    """

    text: str
    rank: int
    dimension: str  # the case field it constrains
    order: tuple[int, ...]
    holds: Callable[[Case], bool] = field(compare=False, repr=False)


# Named predicates: concepts a bug depends on that no single field value spells.
DERIVED: tuple[tuple[str, str, Callable[[Case], bool]], ...] = (
    ("packed", "lengths", lambda case: case.lengths != "dense"),
    ("ragged", "lengths", lambda case: case.lengths in ("sorted", "unsorted", "zero")),  # items of different lengths
    ("16-bit dtype", "dtype", lambda case: case.dtype in ("float16", "bfloat16")),
)


def _field_atoms(cases: Sequence[Case]) -> list[Atom]:
    atoms = []
    for position, name in enumerate(FIELDS):
        values = sorted({getattr(case, name) for case in cases})
        if len(values) < 2:
            continue
        for index, value in enumerate(values):
            atoms.append(Atom(f"{name} = {value}", 0, name, (1, position, 0, index), _equals(name, value)))
            if isinstance(value, bool) or len(values) < 3:
                continue  # != of a two-valued field is the other value's =
            if isinstance(value, int):
                if index > 0:
                    atoms.append(Atom(f"{name} >= {value}", 1, name, (1, position, 2, index), _at_least(name, value)))
                if index < len(values) - 1:
                    atoms.append(Atom(f"{name} <= {value}", 1, name, (1, position, 3, index), _at_most(name, value)))
            elif not (name == "lengths" and value == "dense"):  # lengths != dense is `packed`
                atoms.append(Atom(f"{name} != {value}", 1, name, (1, position, 1, index), _differs(name, value)))
    for index, (text, source, holds) in enumerate(DERIVED):
        atoms.append(Atom(text, 0, source, (0, FIELDS.index(source), index), holds))
    return atoms


def _equals(name: str, value: Any) -> Callable[[Case], bool]:
    return lambda case: getattr(case, name) == value


def _differs(name: str, value: Any) -> Callable[[Case], bool]:
    return lambda case: getattr(case, name) != value


def _at_least(name: str, value: int) -> Callable[[Case], bool]:
    return lambda case: getattr(case, name) >= value


def _at_most(name: str, value: int) -> Callable[[Case], bool]:
    return lambda case: getattr(case, name) <= value


@dataclass(frozen=True)
class Pattern:
    """What one backend's failures have in common.

    kind: EXACT, PARTIAL, NONE, ALL or NO_FAILURES. `condition` is the conjunction of
    `conditions` (empty unless EXACT or PARTIAL). An EXACT pattern says either "fails exactly
    when C" (`fails_when`) or, when the passing cases are the simpler set to describe, "fails
    except when C". Counts: `matched` cases satisfy C and `failing_matched` of them fail; of
    the `others`, `failing_others` fail. `alternatives` are other conditions, just as simple,
    that select the same cases here (EXACT only): the matrix can't tell them apart.
    """

    kind: str
    conditions: tuple[str, ...] = ()
    fails_when: bool = True
    matched: int = 0
    failing_matched: int = 0
    others: int = 0
    failing_others: int = 0
    alternatives: tuple[str, ...] = ()
    more_alternatives: int = 0  # how many more alternatives exist beyond those listed

    @property
    def condition(self) -> str:
        return " and ".join(self.conditions)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(conditions=list(self.conditions), alternatives=list(self.alternatives))
        data["description"] = self.describe()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pattern:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.update(conditions=tuple(data.get("conditions", ())), alternatives=tuple(data.get("alternatives", ())))
        return cls(**values)

    def describe(self) -> str:
        total = self.matched + self.others
        failing = self.failing_matched + self.failing_others
        if self.kind == NO_FAILURES:
            return f"no failures ({total} cases)"
        if self.kind == ALL:
            return f"fails on every case ({total} of {total})"
        if self.kind == NONE:
            return f"no clean pattern in {failing} failing of {total}"
        counts = (
            f"{self.failing_matched} of {self.matched} such cases fail, {self.failing_others} of {self.others} others"
        )
        if self.kind == PARTIAL:
            return f"no clean pattern in {failing} failing of {total}; partial pattern: {self.condition} ({counts})"
        if self.fails_when:
            line = f"fails exactly when {self.condition} ({counts})"
        else:
            such = "1 such case passes" if self.matched == 1 else f"{self.matched} such cases pass"
            line = f"fails except when {self.condition} ({such}, {self.failing_others} of {self.others} others fail)"
        if self.alternatives:
            more = f" and {self.more_alternatives} more" if self.more_alternatives else ""
            line += f"; equally consistent on these cases: {'; '.join(self.alternatives)}{more}"
        return line


Selected = list[tuple[Atom, frozenset[int]]]


def _conjunctions(atoms: Selected, size: int) -> Iterator[tuple[tuple[Atom, ...], frozenset[int]]]:
    """Every conjunction of `size` atoms on different fields, with the cases it selects."""
    for combination in itertools.combinations(atoms, size):
        if len({atom.dimension for atom, _ in combination}) < size:
            continue  # two conditions on one field: one condition already says it, or nothing holds
        yield tuple(atom for atom, _ in combination), frozenset.intersection(*(s for _, s in combination))


def _simplicity(conjunction: tuple[Atom, ...]) -> tuple[int, list[tuple[int, ...]]]:
    return sum(a.rank for a in conjunction), sorted(a.order for a in conjunction)


def _text(conjunction: tuple[Atom, ...]) -> tuple[str, ...]:
    """Conditions in the fields' order, whatever order the search found them in."""
    return tuple(a.text for a in sorted(conjunction, key=lambda a: FIELDS.index(a.dimension)))


def find_pattern(outcomes: Iterable[tuple[Case, bool]]) -> Pattern:
    """The simplest condition on case fields that holds on every failing case and on no passing one.

    Simplest means fewest conditions (one, then two joined by "and"), then lowest rank
    (`field = value` and named predicates before `!=` and thresholds), then `Atom.order`
    (named predicates, then the fields' order in `Case`). Where the passing cases are described by fewer conditions than the
    failing ones, the pattern reads "fails except when ...". Deterministic for a given set
    of outcomes, whatever their order.
    """
    pairs = sorted(outcomes, key=lambda item: item[0])
    cases = [case for case, _ in pairs]
    failing = frozenset(index for index, (_, failed) in enumerate(pairs) if failed)
    everything = frozenset(range(len(cases)))
    if not failing:
        return Pattern(NO_FAILURES, others=len(cases))
    if failing == everything:
        return Pattern(ALL, matched=len(cases), failing_matched=len(cases))

    atoms: Selected = []
    for atom in sorted(_field_atoms(cases), key=lambda a: (a.rank, a.order)):
        selected = frozenset(i for i, case in enumerate(cases) if atom.holds(case))
        if selected and selected != everything:
            atoms.append((atom, selected))

    for size in (1, 2):
        for fails_when, target in ((True, failing), (False, everything - failing)):
            exact = sorted((c for c, selected in _conjunctions(atoms, size) if selected == target), key=_simplicity)
            if not exact:
                continue
            rest = exact[1:]
            return Pattern(
                EXACT,
                _text(exact[0]),
                fails_when=fails_when,
                matched=len(target),
                failing_matched=len(target) if fails_when else 0,
                others=len(cases) - len(target),
                failing_others=0 if fails_when else len(cases) - len(target),
                alternatives=tuple(" and ".join(_text(alt)) for alt in rest[:MAX_ALTERNATIVES]),
                more_alternatives=max(0, len(rest) - MAX_ALTERNATIVES),
            )
    return _partial(cases, failing, atoms)


def _partial(cases: list[Case], failing: frozenset[int], atoms: Selected) -> Pattern:
    """The condition (one or two atoms) that misclassifies fewest cases, if it is worth naming."""
    failing_count = len(failing)
    baseline = min(len(cases) - failing_count, failing_count)  # what "all fail" or "none fail" gets wrong
    best: tuple[tuple[Any, ...], tuple[Atom, ...], frozenset[int]] | None = None
    for size in (1, 2):
        for conjunction, selected in _conjunctions(atoms, size):
            key = (len(selected ^ failing), size, *_simplicity(conjunction))
            if best is None or key < best[0]:
                best = (key, conjunction, selected)
    # Worth naming only if it gets fewer cases wrong than a constant guess and covers most failures.
    if best is None or best[0][0] >= baseline or len(best[2] & failing) * 2 <= failing_count:
        return Pattern(NONE, matched=0, others=len(cases), failing_others=failing_count)
    _, conjunction, selected = best
    return Pattern(
        PARTIAL,
        _text(conjunction),
        matched=len(selected),
        failing_matched=len(selected & failing),
        others=len(cases) - len(selected),
        failing_others=len(failing - selected),
    )
