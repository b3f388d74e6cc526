"""Tiers of cases from the declared matrix file (`conformance/declared/matrix.toml`, shipped in the package).

pairwise uses covertable (a maintained covering-array generator with declarative
constraints; allpairspy was tried and left valid pairs uncovered once a filter was
applied). Impossible combinations are excluded through `Case.impossibility`, the one
place that knows them, so pairwise covers every pair of values that can coexist.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import covertable

from conformance.case import Case, CaseError

TIERS = ("smoke", "pairwise", "full")
# Package data, so an installed (non-editable) copy builds every tier; `--matrix` overrides it.
DEFAULT_MATRIX: Traversable = resources.files("conformance") / "declared" / "matrix.toml"
DIMENSIONS = tuple(f.name for f in fields(Case) if f.name != "seed")


class MatrixError(ValueError):
    """A matrix file that can't be used: says which file, which entry, and what is valid."""


def load(path: Traversable = DEFAULT_MATRIX) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"matrix file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise MatrixError(f"{path}: not valid TOML: {error}") from None
    dims = data.get("dimensions")
    if not isinstance(dims, dict):
        raise MatrixError(f"{path}: missing [dimensions] table")
    unknown = sorted(set(dims) - set(DIMENSIONS))
    missing = [d for d in DIMENSIONS if d not in dims]
    if unknown or missing:
        problems = [f"unknown: {', '.join(unknown)}"] if unknown else []
        problems += [f"missing: {', '.join(missing)}"] if missing else []
        raise MatrixError(f"{path}: [dimensions] {'; '.join(problems)}. Valid dimensions: {', '.join(DIMENSIONS)}")
    for name, values in dims.items():
        if not isinstance(values, list) or not values:
            raise MatrixError(f"{path}: dimension {name!r} must be a non-empty list of values")
        kinds = {type(v) for v in values}
        expected = type(getattr(Case(1, 1), name))
        if kinds != {expected}:
            raise MatrixError(f"{path}: dimension {name!r} must hold {expected.__name__} values, got {values!r}")
        if len(set(values)) != len(values):
            raise MatrixError(f"{path}: dimension {name!r} repeats a value: {values!r}")
    smoke = data.get("smoke", {})
    if not isinstance(smoke.get("cases", []), list):
        raise MatrixError(f"{path}: [[smoke.cases]] must be an array of tables")
    data["_path"] = str(path)
    # Building every smoke case and one case per value validates the values themselves.
    list(smoke_cases(data, seed=0))
    if not isinstance(data.get("zero_length", {}).get("cases", []), list):
        raise MatrixError(f"{path}: [[zero_length.cases]] must be an array of tables")
    list(zero_length_cases(data, seed=0))
    _check_invariants(data.get("invariants", {}), path)
    for name, values in dims.items():
        for value in values:
            # A roomy base (batch 3, seq_len 5) so only a bad value itself can fail.
            _case({**_first(dims), "lengths": "dense", "batch": 3, "seq_len": 5, name: value}, 0, path)
    return data


def _check_invariants(table: Any, path: Traversable) -> None:
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


def _case(values: dict[str, Any], seed: int, where: Traversable | str) -> Case:
    try:
        return Case.from_dict({**values, "seed": seed})
    except (CaseError, TypeError) as error:
        raise MatrixError(f"{where}: {error}") from None


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


def cases(tier: str, seed: int = 0, path: Traversable = DEFAULT_MATRIX) -> list[Case]:
    """The cases of a tier, in a stable order (the same on every machine)."""
    if tier not in TIERS:
        raise MatrixError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
    data = load(path)
    generate = {"smoke": smoke_cases, "pairwise": pairwise_cases, "full": full_cases}[tier]
    return list(generate(data, seed))


def zero_length(seed: int = 0, path: Traversable = DEFAULT_MATRIX) -> list[Case]:
    """The declared zero-length cases (`[[zero_length.cases]]`), which a run of any tier adds to the tier's own."""
    return list(zero_length_cases(load(path), seed))


def invariants(tier: str, path: Traversable = DEFAULT_MATRIX) -> list[str]:
    """The invariant checks a tier runs (`[invariants]` in the matrix file; none when it has no such table)."""
    if tier not in TIERS:
        raise MatrixError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
    data = load(path)
    return list(data.get("invariants", {}).get(tier, []))
