"""The known-divergence registry (`conformance/declared/divergences.toml`, shipped in the package).

An entry names backends (globs: only * and ? are wildcards), the case values it applies to, and the
reason. A failing result that matches becomes `known_divergence`; a matching result
that passes becomes `unexpected_pass`, so a fixed upstream bug is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from conformance import schema
from conformance.case import DTYPES, EXPORT_SHAPES, LENGTHS, Case
from conformance.names import matches
from conformance.records import CHECK_NAMES

# Package data, so an installed (non-editable) copy has it; `--divergences` overrides it.
# (A file-system path: the package is installed as files, and the schema reader checks the file itself.)
DEFAULT_REGISTRY = Path(str(resources.files("conformance") / "declared" / "divergences.toml"))
CASE_FIELDS = {f.name for f in fields(Case)}
ENTRY_KEYS = {"id", "backends", "when", "checks", "reason", "upstream"}


class RegistryError(schema.SchemaError):
    """A registry file that can't be used: names the file, the entry (by number and id) and the field."""


@dataclass(frozen=True)
class Divergence:
    id: str
    backends: tuple[str, ...]
    reason: str
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    upstream: str = ""

    def applies(self, backend: str, case: Case) -> bool:
        if not any(matches(backend, pattern) for pattern in self.backends):
            return False
        return all(getattr(case, name) in values for name, values in self.when.items())

    def explains(self, failed_checks: list[str]) -> bool:
        """Without `checks`, any failure; with them, every failing check must be listed."""
        return not self.checks or all(any(matches(name, pattern) for pattern in self.checks) for name in failed_checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "backends": list(self.backends),
            "when": {k: list(v) for k, v in self.when.items()},
            "checks": list(self.checks),
            "reason": self.reason,
            "upstream": self.upstream,
        }


def _field_value(name: str) -> Callable[[schema.Where, Any, str], Any]:
    """A checker for one `when` value: the case field's type, and for named fields one of their names."""
    kind = type(getattr(Case(1, 1), name))
    domain = {"lengths": LENGTHS, "dtype": DTYPES, "export_shape": EXPORT_SHAPES}.get(name)

    def check(where: schema.Where, value: Any, field: str) -> Any:
        if domain is not None:
            return schema.one_of(where, value, field, domain)
        if kind is bool:
            return schema.one_of(where, value, field, (True, False))
        return schema.integer(where, value, field, minimum=0 if name == "seed" else 1)

    return check


def _pattern(where: schema.Where, value: Any, field: str) -> str:
    return schema.text(where, value, field, "a non-empty name pattern (string)")


def _check_name(where: schema.Where, value: Any, field: str) -> str:
    pattern = _pattern(where, value, field)
    if not any(matches(name, pattern) for name in CHECK_NAMES):
        raise where.fail(f"{pattern!r} matches no check; the checks are {', '.join(CHECK_NAMES)}", field)
    return pattern


def _entry(where: schema.Where, raw: dict[str, Any]) -> Divergence:
    schema.check_keys(where, raw, ENTRY_KEYS, required=("id", "backends", "reason"))
    backends = schema.list_of(
        where, raw["backends"], "backends", _pattern, 'a non-empty list of backend-name patterns, e.g. ["onnx-*"]'
    )
    when_table = schema.table(where, raw.get("when", {}), "when", "a table of case field = [values]")
    when = {}
    for name, values in when_table.items():
        if name not in CASE_FIELDS:
            raise where.fail(f"'when' names unknown case field(s) {name}; valid: {', '.join(sorted(CASE_FIELDS))}")
        when[name] = tuple(
            schema.list_of(where, values, f"when.{name}", _field_value(name), f"a non-empty list of {name} values")
        )
    checks = schema.list_of(
        where, raw.get("checks", []), "checks", _check_name, 'a list of check names, e.g. ["output", "h_n"]', False
    )
    return Divergence(
        id=raw["id"],
        backends=tuple(backends),
        reason=schema.text(where, raw["reason"], "reason"),
        when=when,
        checks=tuple(checks),
        upstream=schema.text(where, raw["upstream"], "upstream", "a link (string)") if "upstream" in raw else "",
    )


def load(path: Path = DEFAULT_REGISTRY) -> list[Divergence]:
    """Read and validate the registry: a malformed entry is refused, never half-applied.

    Strict on purpose: `backends = "onnx-*"` (a string, not a list) once read as the patterns
    o, n, x, -, * and matched every backend, turning every failure into a known divergence.
    """
    data = schema.read_toml(path, "divergence registry", RegistryError)
    where = schema.Where(str(path), error=RegistryError)
    schema.check_keys(where, data, ("divergence",))
    raw_entries = data.get("divergence", [])
    if not isinstance(raw_entries, list) or not all(isinstance(e, dict) for e in raw_entries):
        raise where.expected("divergence", "an array of tables ([[divergence]] entries)", raw_entries)
    entries, seen = [], set()
    for number, raw in enumerate(raw_entries, 1):
        label = f"[[divergence]] #{number}"
        if isinstance(raw.get("id"), str):
            label += f" (id {raw['id']!r})"
        entry_where = where.at(label)
        schema.text(entry_where, raw.get("id"), "id")
        if raw["id"] in seen:
            raise entry_where.fail(f"duplicate id {raw['id']!r}")
        seen.add(raw["id"])
        entries.append(_entry(entry_where, raw))
    return entries


def unmatchable(registry: list[Divergence], domain: Mapping[str, Iterable[Any]], families: Iterable[str]) -> list[str]:
    """Parts of entries that can never match in this run, one message each, by entry id.

    `domain` holds each case field's values in the selected matrix (plus any `--case`), `families`
    every backend family known here. A backend pattern whose family part (before `/` or `[`)
    matches no family, or a `when` value the matrix doesn't have, is dead weight at best and a
    typo at worst: warned about, since the entry may be right for another matrix or machine.
    """
    known = sorted(set(families))
    messages = []
    for entry in registry:
        for pattern in entry.backends:
            family = re.split(r"[\[/]", pattern, maxsplit=1)[0]
            if not any(matches(name, family or "*") for name in known):
                messages.append(
                    f"divergence entry {entry.id!r}: backend pattern {pattern!r} matches no backend family "
                    f"(known: {', '.join(known)})"
                )
        for name, values in entry.when.items():
            have = sorted(domain.get(name, ()))  # one field's values share a type
            for value in values:
                if value not in have:
                    listed = ", ".join(repr(v) for v in have)
                    messages.append(
                        f"divergence entry {entry.id!r}: when.{name} = {value!r} is not a value of the matrix "
                        f"or of any selected case ({name} values: {listed})"
                    )
    return messages


def match(registry: list[Divergence], backend: str, case: Case) -> Divergence | None:
    return next((d for d in registry if d.applies(backend, case)), None)
