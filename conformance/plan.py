"""The run's plan: which (case, backend) tests run, and why each one is there.

Three reasons a test exists:
- shared: a case of the tier, run on every backend (so backends stay comparable; a backend
  that can't express it records `unsupported`);
- extra: a case added for one backend only, because the shared cases it supports leave
  value pairs of its own space unchecked (`conformance.coverage`); only on covering tiers;
- probe: a case the backend declares unsupported (`StaticCapabilities.refusals`), attempted
  anyway, once per refusal class, so the declaration can't rot. The representative is a
  case refused for that class alone, so the library's answer is about that class: a shared
  one when the tier has one, else (covering tiers only) the cheapest in the matrix, added;
  failing both, a shared case refused for that class among others.

Representatives and extras are chosen from the case *set* (Case order, product order), never
from a list's order, so every xdist worker and every shard machine plans the same tests; the
plan is made for the whole tier and then sharded by case id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conformance import accounting, sharding
from conformance.case import Case
from conformance.contract import Backend, Refusal, StaticCapabilities
from conformance.coverage import Space, steps
from conformance.out_of_process.proxy import WorkerBackend

# The tiers that promise coverage, and of what strength (2: every value pair). Each backend gets
# its own cover on these; a strength-3 tier adds itself here with 3.
STRENGTH: dict[str, int] = {"pairwise": 2, "triples": 3, "full": 2}


def space(data: dict[str, Any], seed: int, strength: int = 2) -> Space:
    """The valid cases of a loaded matrix (`conformance.matrix.load`) and their value pairs."""
    return Space.of(data["dimensions"], seed, strength)


def cheaper(a: Case, b: Case) -> bool:
    """The order representatives are chosen in: fewer sequential steps, then Case order (a set's order, not a list's)."""
    return (steps(a), a) < (steps(b), b)


@dataclass(frozen=True)
class Planned:
    """One test: a case on a backend; `extra` when not in the shared tier, `probe` when attempted despite a refusal."""

    case: Case
    backend: Backend
    extra: bool = False
    probe: Refusal | None = None

    @property
    def id(self) -> str:
        """The test id inside `test_gru[...]`."""
        return f"{self.backend.name}-{self.case.id}"


@dataclass
class BackendPlan:
    """What one backend gets: counts for the terminal and the records, and its space for coverage."""

    backend: str
    shared: int = 0  # shared cases it runs (every one: those it can't express record `unsupported`)
    in_space: int = 0  # shared cases its `supports` admits
    extra: int = 0
    probes: dict[str, str] = field(default_factory=dict)  # refusal key -> its representative's case id
    added_probes: int = 0  # representatives added because no shared case was of their class
    space: list[str] | None = None  # its value pairs (`conformance.pairs` keys); None when not computed
    planned_pairs: int | None = None  # pairs its supported planned cases cover
    example: str | None = None  # the cheapest case of its space, for hints

    @property
    def tests(self) -> int:
        return self.shared + self.extra + self.added_probes

    def line(self) -> str:
        """e.g. `19 shared (6 in its space) + 14 extra; 1 probe` and the planned coverage."""
        parts = [f"{self.shared} shared" + (f" ({self.in_space} in its space)" if self.in_space != self.shared else "")]
        if self.extra:
            parts.append(f"+ {self.extra} extra")
        text = " ".join(parts)
        if self.probes:
            text += f"; {len(self.probes)} probe{'s' if len(self.probes) != 1 else ''} of declared refusals"
        if self.space is not None and self.planned_pairs is not None:
            text += f"; plans {self.planned_pairs}/{len(self.space)} value pairs of its space"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "shared": self.shared,
            "in_space": self.in_space,
            "extra": self.extra,
            "probes": dict(self.probes),
            "added_probes": self.added_probes,
        }


@dataclass
class Plan:
    items: list[Planned]
    backends: dict[str, BackendPlan]
    cases: list[Case]  # the shared cases (what cross-device checks and the environment record count)
    dimensions: tuple[str, ...] = ()
    covering: bool = False  # whether extras were added (a covering tier)
    _probes: dict[tuple[str, str], Refusal] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._probes = {(p.backend.name, p.case.id): p.probe for p in self.items if p.probe is not None}

    def probe(self, backend: str, case_id: str) -> Refusal | None:
        """The refusal this (backend, case) is the representative of, or None for an ordinary test."""
        return self._probes.get((backend, case_id))

    def shard(self, shard: sharding.Shard | None) -> Plan:
        """The tests of one shard: every test of a case goes where the case goes (`conformance.sharding`)."""
        if shard is None or shard.count == 1:
            return self
        # build groups (structure and sorting variant) kept whole: no two shards build the same export or program
        owner = sharding.owners({p.case.id: p.case for p in self.items}.values(), shard.count)
        mine = {case_id for case_id, index in owner.items() if index == shard.index}
        cases = [c for c in self.cases if c.id in mine]
        items = [p for p in self.items if p.case.id in mine]
        return Plan(items, self.backends, cases, self.dimensions, self.covering)

    def extras(self, backend: str) -> list[Case]:
        return [p.case for p in self.items if p.extra and p.backend.name == backend and p.probe is None]


def supports_of(backend: Backend) -> Callable[[Case], Any]:
    """`backend.supports` as the plan asks it: one that raises admits the case, so the check attempts it and
    records the contract violation as an `error` (`conformance.pipeline.refusal`) instead of the plan crashing."""

    def supports(case: Case) -> Any:
        try:
            return backend.supports(case)
        except Exception:
            return None

    return supports


def refusals_of(backend: Backend) -> Callable[[Case], tuple[Refusal, ...]] | None:
    if not isinstance(backend, StaticCapabilities):
        return None
    declared = backend.refusals

    def refusals(case: Case) -> tuple[Refusal, ...]:
        try:
            return tuple(declared(case))
        except Exception:  # a broken declaration plans no probe; its `supports` still speaks for it
            return ()

    return refusals


def representatives(
    cases: list[Case], refuse: Callable[[Case], tuple[Refusal, ...]]
) -> dict[str, tuple[Case, Refusal, bool]]:
    """Refusal key -> its cheapest case, the refusal, and whether that case is refused for this key alone.

    A case refused for the key alone wins over a cheaper one refused for several reasons."""
    found: dict[str, tuple[Case, Refusal, bool]] = {}
    for case in cases:
        refused = refuse(case)
        for refusal in refused:
            pure = len(refused) == 1
            best = found.get(refusal.key)
            if best is None or (pure, best[2]) == (True, False) or (pure == best[2] and cheaper(case, best[0])):
                found[refusal.key] = (case, refusal, pure)
    return found


def build(
    cases: list[Case],
    backends: list[Backend],
    space: Space | None = None,
) -> Plan:
    """Shared cases on every backend, then (with a `space`: a covering tier) each backend's extras and the
    probes the tier lacks. Without a space (`--case`, `--vectors`, smoke) the plan is exactly the given cases."""
    per_backend: dict[str, BackendPlan] = {}
    probes_at: dict[tuple[str, str], Refusal] = {}
    added: list[Planned] = []
    order = list(backends)
    supports: dict[str, np.ndarray] = {}
    rows = np.full(len(cases), -1, dtype=np.int64)
    if space is not None:
        for backend in backends:
            if isinstance(backend, WorkerBackend):  # asked in batches, not one round trip per case of the space
                backend.supports_many(space.cases)
        supports = {b.name: space.supported(supports_of(b)) for b in backends}
        rows = space.positions(cases)
        # Narrowest space first: its extras tend to lie in the wider spaces too, which then reuse them.
        order.sort(key=lambda b: (int(space.pairs(supports[b.name]).sum()), b.name))
    whole = space is not None and len(set(rows[rows >= 0].tolist())) == len(space.cases)  # the tier is the space
    pool = np.zeros(len(space.cases) if space is not None else 0, dtype=bool)  # every backend's extras so far
    family_pool: dict[str, np.ndarray] = {}  # per family: its columns' extras so far
    for backend in order:
        summary = BackendPlan(backend.name, shared=len(cases))
        mask = supports.get(backend.name)
        admits = np.array(
            [
                bool(mask[r]) if mask is not None and r >= 0 else supports_of(backend)(c) is None
                for c, r in zip(cases, rows.tolist(), strict=True)
            ],
            dtype=bool,
        ).reshape(len(cases))
        in_space = [c for c, ok in zip(cases, admits.tolist(), strict=True) if ok]
        summary.in_space = len(in_space)
        refuse = refusals_of(backend)
        refused_shared = [c for c, ok in zip(cases, admits.tolist(), strict=True) if not ok]
        chosen = representatives(refused_shared, refuse) if refuse is not None else {}
        if space is not None and mask is not None:
            already = space.pairs(rows[admits & (rows >= 0)])
            family = family_pool.setdefault(backend.family, np.zeros(len(space.cases), dtype=bool))
            extras = space.cover(mask, already, prefer=pool, reuse=family)
            pool[space.rows(extras)] = family[space.rows(extras)] = True
            added += [Planned(case, backend, extra=True) for case in extras]
            summary.extra = len(extras)
            summary.space = space.keys(space.pairs(mask))
            summary.planned_pairs = int((space.pairs(mask) & (already | space.pairs(space.rows(extras)))).sum())
            summary.example = example(space, mask)
            if refuse is not None and not whole:
                refused = [space.cases[row] for row in np.flatnonzero(~mask)]
                for key, (case, refusal, pure) in sorted(representatives(refused, refuse).items()):
                    if key not in chosen or (pure and not chosen[key][2]):
                        chosen[key] = (case, refusal, pure)
                        added.append(Planned(case, backend, extra=True, probe=refusal))
                        summary.added_probes += 1
        for key, (case, refusal, _) in sorted(chosen.items()):
            probes_at.setdefault((backend.name, case.id), refusal)  # one case for two keys: only if none is pure
            summary.probes[key] = case.id
        per_backend[backend.name] = summary
    per_backend = {b.name: per_backend[b.name] for b in backends}  # back in selection order
    position = {b.name: i for i, b in enumerate(backends)}
    added.sort(key=lambda p: position[p.backend.name])  # stable: each backend's extras keep their order
    named = [(b, b.name) for b in backends]
    items = [
        Planned(case, backend, probe=probes_at.get((name, case_id)) if probes_at else None)
        for case, case_id in ((c, c.id) for c in cases)
        for backend, name in named
    ]
    return Plan(items + added, per_backend, list(cases), space.dimensions if space else (), space is not None)


def example(space: Space, supported: np.ndarray) -> str | None:
    """The id of the cheapest case a backend supports (None when it supports none)."""
    rows = np.flatnonzero(supported)
    if not len(rows):
        return None
    return space.cases[int(rows[np.argmin(space.cost[rows])])].id


def account(
    plan: Plan,
    backends: list[Backend],
    results: list[dict[str, Any]],
    shape: accounting.RunShape,
    space_of: Callable[[], Space] | None = None,
) -> list[accounting.Account]:
    """Each backend's account of a finished run (`conformance.accounting`) from its result records.

    A tier without a space (smoke, `--case`) gets one from `space_of` only when a backend checked
    nothing: its message then says whether it supports anything and names a case it does."""
    checked = {v.value for v in accounting.CHECKED}
    nothing = {r["backend"] for r in results} - {r["backend"] for r in results if r["verdict"] in checked}
    if nothing and not plan.covering and space_of is not None:
        space = space_of()
        for backend in backends:
            if backend.name in nothing and backend.name in plan.backends:
                supported = space.supported(supports_of(backend))
                plan.backends[backend.name].space = space.keys(space.pairs(supported))
                plan.backends[backend.name].example = example(space, supported)
    by_name = {b.name: b for b in backends}
    admitted: dict[str, set[str]] = {}  # only where it matters: a backend that checked nothing
    for record in results:
        mine = by_name.get(record["backend"]) if record["backend"] in nothing else None
        if mine is not None and supports_of(mine)(Case.from_dict(record["case"])) is None:
            admitted.setdefault(record["backend"], set()).add(record["case_id"])
    return accounting.accounts(
        results,
        shape,
        {name: b.space if plan.covering or name in nothing else None for name, b in plan.backends.items()},
        {name: b.as_dict() for name, b in plan.backends.items()},
        {name: b.example for name, b in plan.backends.items()},
        admitted,
    )
