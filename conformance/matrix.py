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
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import covertable

from conformance.case import Case, CaseError

TIERS = ("smoke", "pairwise", "triples", "full")
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
    for name, values in dims.items():
        for value in values:
            # A roomy base (batch 3, seq_len 5) so only a bad value itself can fail.
            _case({**_first(dims), "lengths": "dense", "batch": 3, "seq_len": 5, name: value}, 0, path)
    return data


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


def cases(tier: str, seed: int = 0, path: Traversable = DEFAULT_MATRIX) -> list[Case]:
    """The cases of a tier, in a stable order (the same on every machine)."""
    if tier not in TIERS:
        raise MatrixError(f"unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}")
    data = load(path)
    generate = {"smoke": smoke_cases, "pairwise": pairwise_cases, "triples": triples_cases, "full": full_cases}[tier]
    return list(generate(data, seed))
