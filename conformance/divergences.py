"""The known-divergence registry (`conformance/declared/divergences.toml`, shipped in the package).

An entry names backends (globs: only * and ? are wildcards), the case values it applies to, and the
reason. A failing result that matches becomes `known_divergence`; a matching result
that passes becomes `unexpected_pass`, so a fixed upstream bug is noticed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from conformance.case import Case
from conformance.names import matches

# Package data, so an installed (non-editable) copy has it; `--divergences` overrides it.
DEFAULT_REGISTRY: Traversable = resources.files("conformance") / "declared" / "divergences.toml"
CASE_FIELDS = {f.name for f in fields(Case)}
ENTRY_KEYS = {"id", "backends", "when", "unless", "checks", "reason", "upstream", "check"}
ORACLE_CHECK = "oracle"  # an entry's `check` when it names none (conformance.records.ORACLE_CHECK)


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Divergence:
    id: str
    backends: tuple[str, ...]
    reason: str
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    upstream: str = ""
    check: str = ORACLE_CHECK  # which check it explains: "oracle" or "invariant:<name>" (globs allowed)
    # Case values where the entry does not apply (all must match): cases that can't tell the divergence
    # from the truth within the tolerance, where expecting it to reproduce would only make noise.
    unless: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def applies(self, backend: str, case: Case, check: str = ORACLE_CHECK) -> bool:
        if not matches(check, self.check):
            return False
        if not any(matches(backend, pattern) for pattern in self.backends):
            return False
        if self.unless and all(getattr(case, name) in values for name, values in self.unless.items()):
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
            "check": self.check,
            "unless": {k: list(v) for k, v in self.unless.items()},
        }


def load(path: Traversable = DEFAULT_REGISTRY) -> list[Divergence]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"divergence registry not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"{path}: not valid TOML: {error}") from None
    entries, seen = [], set()
    for number, raw in enumerate(data.get("divergence", []), 1):
        where = f"{path}: [[divergence]] #{number}"
        unknown = set(raw) - ENTRY_KEYS
        if unknown:
            raise RegistryError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(ENTRY_KEYS))}"
            )
        for key in ("id", "backends", "reason"):
            if not raw.get(key):
                raise RegistryError(f"{where}: missing {key!r}")
        if raw["id"] in seen:
            raise RegistryError(f"{where}: duplicate id {raw['id']!r}")
        seen.add(raw["id"])
        when, unless = raw.get("when", {}), raw.get("unless", {})
        for key, table in (("when", when), ("unless", unless)):
            bad = set(table) - CASE_FIELDS
            if bad:
                raise RegistryError(f"{where}: '{key}' names unknown case field(s) {', '.join(sorted(bad))}")
        entries.append(
            Divergence(
                id=raw["id"],
                backends=tuple(raw["backends"]),
                reason=raw["reason"],
                when={k: tuple(v if isinstance(v, list) else [v]) for k, v in when.items()},
                checks=tuple(raw.get("checks", ())),
                upstream=raw.get("upstream", ""),
                check=raw.get("check", ORACLE_CHECK),
                unless={k: tuple(v if isinstance(v, list) else [v]) for k, v in unless.items()},
            )
        )
    return entries


def match(registry: list[Divergence], backend: str, case: Case, check: str = ORACLE_CHECK) -> Divergence | None:
    return next((d for d in registry if d.applies(backend, case, check)), None)
