"""Tiers of cases from the declared matrix file (`conformance/declared/matrix.toml`, shipped in the package).

pairwise uses covertable (a maintained covering-array generator with declarative
constraints; allpairspy was tried and left valid pairs uncovered once a filter was
applied). Impossible combinations are excluded through `Case.impossibility`, the one
place that knows them, so pairwise covers every pair of values that can coexist.
triples is the strength-3 covering array from the same generator: every triple of values
that can coexist, the rung between pairwise (tens of cases) and full (tens of thousands).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterator
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import covertable

from conformance import schema
from conformance.case import Case, CaseError
from conformance.schema import SchemaError

TIERS = ("smoke", "pairwise", "triples", "full")
# Package data, so an installed (non-editable) copy builds every tier; `--matrix` overrides it.
# (A file-system path: the package is installed as files, and the schema reader checks the file itself.)
DEFAULT_MATRIX = Path(str(resources.files("conformance") / "declared" / "matrix.toml"))
DIMENSIONS = tuple(f.name for f in fields(Case) if f.name != "seed")


class MatrixError(SchemaError):
    """A matrix file that can't be used: says which file, which entry, and what is valid."""


TOP_KEYS = ("dimensions", "smoke", "zero_length", "invariants")
SMOKE_KEYS = ("defaults", "cases")


def load(path: Path = DEFAULT_MATRIX) -> dict[str, Any]:
    """Read and validate a matrix file: every structural problem is a MatrixError naming the file and the entry."""
    data = schema.read_toml(path, "matrix file", MatrixError)
    where = schema.Where(str(path), error=MatrixError)
    if "dimensions" not in data:
        raise where.fail("missing [dimensions] table")
    schema.check_keys(where, data, TOP_KEYS)
    dims = schema.table(where, data["dimensions"], "[dimensions]")
    unknown = sorted(set(dims) - set(DIMENSIONS))
    missing = [d for d in DIMENSIONS if d not in dims]
    if unknown or missing:
        problems = [f"unknown: {', '.join(unknown)}"] if unknown else []
        problems += [f"missing: {', '.join(missing)}"] if missing else []
        raise MatrixError(f"{path}: [dimensions] {'; '.join(problems)}. Valid dimensions: {', '.join(DIMENSIONS)}")
    for name, values in dims.items():
        if not isinstance(values, list) or not values:
            raise where.expected(f"[dimensions] {name}", "a non-empty list of values", values)
        kinds = {type(v) for v in values}
        expected = type(getattr(Case(1, 1), name))
        if kinds != {expected}:
            raise MatrixError(f"{path}: dimension {name!r} must hold {expected.__name__} values, got {values!r}")
        if len(set(values)) != len(values):
            raise MatrixError(f"{path}: dimension {name!r} repeats a value: {values!r}")
    smoke = schema.table(where, data.get("smoke", {}), "smoke", "a [smoke] table with defaults and [[smoke.cases]]")
    schema.check_keys(where.at("[smoke]"), smoke, SMOKE_KEYS)
    defaults = schema.table(where, smoke.get("defaults", {}), "[smoke.defaults]")
    cases = smoke.get("cases", [])
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise where.expected("[[smoke.cases]]", "an array of tables", cases)
    for field in defaults:
        if field not in DIMENSIONS:
            raise where.fail(f"unknown case field {field!r}; valid: {', '.join(DIMENSIONS)}", "[smoke.defaults]")
    data["_path"] = str(path)
    # Building every smoke case and one case per value validates the values themselves.
    list(smoke_cases(data, seed=0))
    zero = schema.table(
        where,
        data.get("zero_length", {}),
        "zero_length",
        "a [zero_length] table with defaults and [[zero_length.cases]]",
    )
    schema.check_keys(where.at("[zero_length]"), zero, SMOKE_KEYS)
    zero_defaults = schema.table(where, zero.get("defaults", {}), "[zero_length.defaults]")
    zero_cases = zero.get("cases", [])
    if not isinstance(zero_cases, list) or not all(isinstance(c, dict) for c in zero_cases):
        raise where.expected("[[zero_length.cases]]", "an array of tables", zero_cases)
    for field in [*zero_defaults, *(f for c in zero_cases for f in c)]:
        if field not in DIMENSIONS:
            raise where.fail(f"unknown case field {field!r}; valid: {', '.join(DIMENSIONS)}", "[zero_length]")
    list(zero_length_cases(data, seed=0))
    _check_invariants(data.get("invariants", {}), path)
    for name, values in dims.items():
        for value in values:
            # A roomy base (batch 3, seq_len 5) so only a bad value itself can fail.
            _case({**_first(dims), "lengths": "dense", "batch": 3, "seq_len": 5, name: value}, 0, path)
    return data


def _check_invariants(table: Any, path: Path) -> None:
    """`[invariants]`: tier -> list of invariant names (conformance.invariants), each known."""
    from conformance.invariants import INVARIANTS

    if not isinstance(table, dict) or set(table) - set(TIERS):
        raise MatrixError(f"{path}: [invariants] maps tiers ({', '.join(TIERS)}) to lists of invariant names")
    for tier, names in table.items():
        if not isinstance(names, list) or any(n not in INVARIANTS for n in names):
            raise MatrixError(
                f"{path}: [invariants] {tier} = {names!r}: a list of invariant names; valid: {', '.join(INVARIANTS)}"
            )


def _first(dims: dict[str, list[Any]]) -> dict[str, Any]:
    return {name: values[0] for name, values in dims.items()}


def _case(values: dict[str, Any], seed: int, where: Path | str) -> Case:
    """A case of the matrix; an impossible or oversized one is a MatrixError naming where it came from."""
    try:
        case = Case.from_dict({**values, "seed": seed})
    except (CaseError, TypeError) as error:
        raise MatrixError(f"{where}: {error}") from None
    too_big = case.excess()
    if too_big:
        raise MatrixError(f"{where}: case {case.id} is too large: {too_big}")
    return case


def smoke_cases(data: dict[str, Any], seed: int) -> Iterator[Case]:
    smoke = data.get("smoke", {})
    defaults = smoke.get("defaults", {})
    for number, overrides in enumerate(smoke.get("cases", []), 1):
        yield _case({**defaults, **overrides}, seed, f"{data['_path']} smoke case #{number}")


def _possible(row: dict[str, Any], dims: dict[str, list[Any]]) -> bool:
    try:
        Case.from_dict({**_first(dims), "lengths": "dense", **row})
    except CaseError:
        return False
    return True


def pairwise_cases(data: dict[str, Any], seed: int) -> Iterator[Case]:
    dims = data["dimensions"]
    # covertable evaluates this as soon as the fields it requires are set, so pairs that
    # can't coexist are pruned instead of generated and dropped.
    constraint = {
        "operator": "fn",
        "requires": ["lengths", "batch", "seq_len"],
        "evaluate": lambda row: _possible({k: row[k] for k in ("lengths", "batch", "seq_len")}, dims),
    }
    rows = covertable.make(dims, constraints=[constraint])
    for row in rows:
        yield _case(row, seed, data["_path"])


def triples_cases(data: dict[str, Any], seed: int) -> Iterator[Case]:
    """The strength-3 covering array: every triple of values of any three dimensions, where they can coexist."""
    for row in _strength3_rows(json.dumps(data["dimensions"])):
        yield _case(dict(row), seed, data["_path"])


@functools.lru_cache(maxsize=4)
def _strength3_rows(dims_json: str) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """covertable's strength-3 array of these dimensions (seconds to build, so built once per process)."""
    dims = json.loads(dims_json)
    constraint = {
        "operator": "fn",
        "requires": ["lengths", "batch", "seq_len"],
        "evaluate": lambda row: _possible({k: row[k] for k in ("lengths", "batch", "seq_len")}, dims),
    }
    return tuple(tuple(row.items()) for row in covertable.make(dims, strength=3, constraints=[constraint]))


def full_cases(data: dict[str, Any], seed: int) -> Iterator[Case]:
    dims = data["dimensions"]
    names = list(dims)
    for values in itertools.product(*dims.values()):
        row = dict(zip(names, values, strict=True))
        if _possible(row, dims):
            yield _case(row, seed, data["_path"])


def zero_length_cases(data: dict[str, Any], seed: int) -> Iterator[Case]:
    """The declared batches with an item of length 0, which every tier adds to its own cases.

    A declared list rather than a value of the `lengths` dimension: a new value would change
    the pairwise covering array, and so every case a tier already had. Fields not given take
    `[zero_length.defaults]`, then `[smoke.defaults]`.
    """
    table = data.get("zero_length", {})
    defaults = {**data.get("smoke", {}).get("defaults", {}), **table.get("defaults", {})}
    for number, overrides in enumerate(table.get("cases", []), 1):
        yield _case({**defaults, **overrides}, seed, f"{data['_path']} zero_length case #{number}")


def cases(tier: str, seed: int = 0, path: Path = DEFAULT_MATRIX) -> list[Case]:
    """The cases of a tier, in a stable order (the same on every machine)."""
    if tier not in TIERS:
        raise MatrixError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
    data = load(path)
    generate = {"smoke": smoke_cases, "pairwise": pairwise_cases, "triples": triples_cases, "full": full_cases}[tier]
    return list(generate(data, seed))


def zero_length(seed: int = 0, path: Path = DEFAULT_MATRIX) -> list[Case]:
    """The declared zero-length cases (`[[zero_length.cases]]`), which a run of any tier adds to the tier's own."""
    return list(zero_length_cases(load(path), seed))


def invariants(tier: str, path: Path = DEFAULT_MATRIX) -> list[str]:
    """The invariant checks a tier runs (`[invariants]` in the matrix file; none when it has no such table)."""
    if tier not in TIERS:
        raise MatrixError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
    data = load(path)
    return list(data.get("invariants", {}).get(tier, []))
