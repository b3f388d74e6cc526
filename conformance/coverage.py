"""Each backend's own space of value pairs, and the fewest cases that cover what a tier leaves out.

Why per backend: the shared covering array promises every pair of values of any two
dimensions, but a backend only checks the cases it supports. A narrow backend (one layer,
no packing, float32 only) meets few of the shared cases, and the pairs *inside* its space
go unchecked. The space is the matrix's valid cross product (a few tens of thousands of
cases, enumerated once) filtered by the backend's static `supports`; the pairs of the space
are encoded as integers, so coverage and the greedy cover are array operations. `strength`
generalises pairs to t-way combinations (3 for a strength-3 tier); "pair" below means one.

The greedy cover is the classic one (each step takes the case covering the most pairs still
missing), then drops picks that later ones made redundant. A backend first reuses what the
other columns of its family already run (onnx-dynamo/ort and onnx-dynamo/reference share
one export per case, and comparing the two on the same case tells exporter from runtime);
ties go to cases any other backend runs, then to the cheaper case (fewer sequential steps:
seq_len × layers × directions), then to the first in the matrix's product order:
deterministic for a given selection of backends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.pairs import pair_key

CASE_FIELDS = tuple(f.name for f in fields(Case))


def _unchecked_case(values: dict[str, Any]) -> Case:
    """A Case without `__post_init__`'s check: the caller asks `impossibility()` itself.

    Building tens of thousands of frozen dataclasses through `__init__` costs seconds; this
    costs a fraction. `tests/test_coverage.py` checks the result equals the full tier.
    """
    case = object.__new__(Case)
    case.__dict__.update(values)
    return case


@dataclass
class Space:
    """The valid cases of a matrix and the value pairs each of them has."""

    dimensions: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    cases: list[Case]  # every valid case, in product order
    index: np.ndarray  # (cases, dimensions): each case's value index per dimension
    strength: int = 2  # 2: value pairs; 3: value triples
    slots: np.ndarray | None = None  # position in the full product -> row (-1: an impossible case)

    @classmethod
    def of(cls, dims: dict[str, list[Any]], seed: int = 0, strength: int = 2) -> Space:
        names = tuple(dims)
        values = tuple(tuple(v) for v in dims.values())
        defaults = {f.name: f.default for f in fields(Case)} | {"seed": seed}
        cases: list[Case] = []
        rows: list[tuple[int, ...]] = []
        slots = np.full(int(np.prod([len(v) for v in values])), -1, dtype=np.int64)
        for slot, row in enumerate(itertools.product(*(range(len(v)) for v in values))):
            case = _unchecked_case(
                defaults | {n: values[d][i] for d, (n, i) in enumerate(zip(names, row, strict=True))}
            )
            if case.impossibility() is None:
                slots[slot] = len(cases)
                cases.append(case)
                rows.append(row)
        index = np.array(rows, dtype=np.int32).reshape(len(rows), len(names))
        return cls(names, values, cases, index, strength, slots)

    @cached_property
    def _layout(self) -> tuple[list[tuple[int, ...]], np.ndarray]:
        """The dimension combinations (pairs, or t-tuples), and where each one's value ids start."""
        combos = list(itertools.combinations(range(len(self.dimensions)), self.strength))
        sizes = [int(np.prod([len(self.values[d]) for d in combo])) for combo in combos]
        return combos, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @cached_property
    def codes(self) -> np.ndarray:
        """(cases, dimension combinations): the integer id of each case's value pair for each pair of dimensions."""
        combos, offsets = self._layout
        columns = []
        for k, combo in enumerate(combos):
            code = np.full(len(self.cases), offsets[k], dtype=np.int64)
            stride = 1
            for d in reversed(combo):
                code += self.index[:, d] * stride
                stride *= len(self.values[d])
            columns.append(code)
        dtype = np.int16 if offsets[-1] < np.iinfo(np.int16).max else np.int32
        return np.stack(columns, axis=1).astype(dtype) if columns else np.zeros((len(self.cases), 0), dtype)

    @property
    def n_pairs(self) -> int:
        return int(self._layout[1][-1])

    @cached_property
    def labels(self) -> list[str]:
        """Pair id -> its key (`conformance.pairs.pair_key`)."""
        combos, _ = self._layout
        out = []
        for combo in combos:
            for values in itertools.product(*(self.values[d] for d in combo)):
                out.append(pair_key(*((self.dimensions[d], v) for d, v in zip(combo, values, strict=True))))
        return out

    @cached_property
    def _value_index(self) -> list[dict[Any, int]]:
        # Keyed by (type, value): True == 1 in a dict, and a bool dimension must not match an int value.
        return [{(type(v), v): i for i, v in enumerate(values)} for values in self.values]

    def row_of(self, case: Case) -> int | None:
        """The row of a case with these dimension values (its seed and fields outside the matrix don't count)."""
        slot = 0
        for d, name in enumerate(self.dimensions):
            value = getattr(case, name)
            i = self._value_index[d].get((type(value), value))
            if i is None:
                return None
            slot = slot * len(self.values[d]) + i
        row = int(self.slots[slot]) if self.slots is not None else -1
        return row if row >= 0 else None

    @cached_property
    def cost(self) -> np.ndarray:
        """A case's sequential steps (seq_len × layers × directions): the tie-break toward cheap cases."""
        return np.array([steps(c) for c in self.cases], dtype=np.int64)

    def supported(self, supports: Callable[[Case], Any]) -> np.ndarray:
        """Which cases a backend admits: `supports(case)` is None (the contract's `supports`)."""
        return np.fromiter((supports(c) is None for c in self.cases), dtype=bool, count=len(self.cases))

    def pairs(self, rows: np.ndarray) -> np.ndarray:
        """A mask over pair ids: the pairs some of these cases (a row mask or row indices) have."""
        mask = np.zeros(self.n_pairs, dtype=bool)
        mask[self.codes[rows].ravel()] = True
        return mask

    def positions(self, cases: Iterable[Case]) -> np.ndarray:
        """Each case's row, -1 for a case outside this space."""
        return np.array([-1 if (r := self.row_of(c)) is None else r for c in cases], dtype=np.int64)

    def rows(self, cases: Iterable[Case]) -> np.ndarray:
        """Row indices of the cases that lie in this space (others are ignored)."""
        found = [r for r in (self.row_of(c) for c in cases) if r is not None]
        return np.array(found, dtype=np.int64)

    def keys(self, mask: np.ndarray) -> list[str]:
        labels = self.labels
        return [labels[i] for i in np.flatnonzero(mask)]

    def cover(
        self,
        allowed: np.ndarray,
        already: np.ndarray,
        prefer: np.ndarray | None = None,
        reuse: np.ndarray | None = None,
    ) -> list[Case]:
        """Few cases among `allowed` rows that cover the pairs of `allowed` not in `already`.

        First the `reuse` rows (cases a backend of the same family runs already: its model is built, and the
        two compare on the same case) as long as they cover anything new, then the fewest others, greedily.
        Ties go to `prefer`red rows (cases any other backend runs), then to the cheaper case, then to the
        first in product order. Picks that later ones made redundant are dropped."""
        target = self.pairs(allowed) & ~already
        need = target.copy()
        picks: list[int] = []
        if reuse is not None:
            picks += self._greedy(allowed & reuse, need, prefer)
        picks += self._greedy(allowed, need, prefer)
        for pick in reversed(list(picks)):  # last first: the early picks are the likeliest to be redundant
            rest = [p for p in picks if p != pick]
            if not (target & ~self.pairs(np.array(rest, dtype=np.int64))).any():
                picks = rest
        return [self.cases[p] for p in picks]

    def _greedy(self, allowed: np.ndarray, need: np.ndarray, prefer: np.ndarray | None) -> list[int]:
        """Rows among `allowed`, each the one covering most of `need` (updated in place) until none covers any."""
        candidates = np.flatnonzero(allowed)
        codes = self.codes[candidates]
        preferred = prefer[candidates] if prefer is not None else np.zeros(len(candidates), dtype=bool)
        # Smaller is better among equal gains: not preferred, then cost, then product order.
        rank = np.argsort(np.lexsort((candidates, self.cost[candidates], ~preferred)))
        picks: list[int] = []
        while len(candidates) and need.any():
            gain = need[codes].sum(axis=1)
            if gain.max() == 0:
                break
            ties = np.flatnonzero(gain == gain.max())
            choice = ties[np.argmin(rank[ties])]
            picks.append(int(candidates[choice]))
            need[codes[choice]] = False
            keep = gain > 0  # a case that covered nothing new never will: drop it
            keep[choice] = False
            candidates, codes, rank = candidates[keep], codes[keep], rank[keep]
        return picks


def steps(case: Case) -> int:
    """Sequential GRU steps a case costs: seq_len × layers × directions."""
    return case.seq_len * case.num_layers * case.num_directions


def space_keys(space: Space, supported: np.ndarray) -> list[str]:
    """The keys of a backend's space, given its supported-row mask."""
    return space.keys(space.pairs(supported))


def covered_keys(space: Space, cases: Sequence[Case]) -> list[str]:
    return space.keys(space.pairs(space.rows(cases)))
