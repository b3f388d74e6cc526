"""The known-divergence registry (`conformance/declared/divergences.toml`, shipped in the package).

An entry names backends (globs: only * and ? are wildcards), the case values it applies to, and the
reason; optionally the quantity (forward or backward; without it, both). A failing result that
matches becomes `known_divergence`; a matching result that passes becomes `unexpected_pass`, so a
fixed upstream bug is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from conformance import schema
from conformance.case import DTYPES, EXPORT_SHAPES, LENGTHS, Case
from conformance.names import matches
from conformance.records import (
    CHECK_NAMES,
    FORWARD,
    GRADIENT_CHECK_NAMES,
    GRADIENT_LAYERS,
    INVARIANT_PREFIX,
    ORACLE_CHECK,
    QUANTITIES,
    Result,
)
from conformance.verdict import Verdict

# Package data, so an installed (non-editable) copy has it; `--divergences` overrides it.
# (A file-system path: the package is installed as files, and the schema reader checks the file itself.)
DEFAULT_REGISTRY = Path(str(resources.files("conformance") / "declared" / "divergences.toml"))
CASE_FIELDS = {f.name for f in fields(Case)}
# How large a difference an entry explains: every entry names exactly one, so an old entry can't
# hide a new, larger bug in the same cases (a gate-order bug in keras-jax's float64 path is not
# "tanh in float32").
SIZE_KEYS = ("max_headroom", "error_level", "variant", "error_contains")
ENTRY_KEYS = {
    "id",
    "backends",
    "when",
    "unless",
    "checks",
    "reason",
    "upstream",
    "quantity",
    "check",
    "variant_level",
    *SIZE_KEYS,
}
# Significand bits (with the implicit one) of the formats `error_level` can name: u = 2**-bits.
FORMAT_BITS = {"float64": 53, "float32": 24, "tf32": 11, "float16": 11, "bfloat16": 8}

# (variant id, tolerance scale) -> whether that variant reproduces the backend's output within scale * atol
Reproduces = Callable[[str, float], bool]


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
    max_headroom: float | None = None  # the worst arithmetic headroom (error / tolerance) it explains
    error_level: str | None = None  # as large as computing in this format: headroom <= u(format) / u(case dtype)
    variant: str | None = None  # only failures this semantic variant (conformance.variants) reproduces
    # with `variant`: reproduced within the error of computing in this coarser format (a backend
    # with two registered divergences at once: lengths ignored, and float64 run in float32)
    variant_level: str | None = None
    error_contains: str | None = None  # only `error` results (crashes) whose reason contains this text
    quantity: str | None = None  # "forward" or "backward" results only; None: both
    check: str = ORACLE_CHECK  # which check it explains: "oracle" or "invariant:<name>" (globs allowed)
    # Case values where the entry does not apply (all must match): cases that can't tell the divergence
    # from the truth within the tolerance, where expecting it to reproduce would only make noise.
    unless: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def applies(self, backend: str, case: Case, quantity: str = FORWARD, check: str = ORACLE_CHECK) -> bool:
        if not matches(check, self.check):
            return False
        if self.unless and all(getattr(case, name) in values for name, values in self.unless.items()):
            return False
        if self.quantity is not None and quantity != self.quantity:
            return False
        if not any(matches(backend, pattern) for pattern in self.backends):
            return False
        if self.unless and all(getattr(case, name) in values for name, values in self.unless.items()):
            return False
        return all(getattr(case, name) in values for name, values in self.when.items())

    def explains(self, failed_checks: list[str]) -> bool:
        """Without `checks`, any failure; with them, every failing check must be listed."""
        return not self.checks or all(any(matches(name, pattern) for pattern in self.checks) for name in failed_checks)

    def size(self) -> str:
        """The bound in words, for messages and the report."""
        if self.max_headroom is not None:
            return f"max_headroom = {self.max_headroom:g}"
        if self.error_level is not None:
            return f"error_level = {self.error_level!r}"
        if self.variant is not None and self.variant_level is not None:
            return f"variant = {self.variant!r} at {self.variant_level}-level error"
        if self.variant is not None:
            return f"variant = {self.variant!r}"
        if self.error_contains is not None:
            return f"error_contains = {self.error_contains!r}"
        return "no bound"

    def misfit(self, result: Result, reproduces: Reproduces | None = None) -> str | None:
        """None if the failure is no larger than this entry explains, else why it isn't (for the message)."""
        if result.verdict == Verdict.ERROR:
            if self.error_contains is not None and self.error_contains in result.reason:
                return None
            return (
                f"it explains {self.size()}, and this is an error result (the backend raised), not a numerical failure"
            )
        if self.error_contains is not None:
            return f"it explains only error results whose reason contains {self.error_contains!r}"
        structural = [c.name for c in result.failing_checks if c.kind in ("shape", "dtype")]
        if structural and (self.max_headroom is not None or self.error_level is not None):
            return f"it explains a size of numerical error ({self.size()}), and {', '.join(structural)} failed"
        worst = result.worst_headroom
        if self.max_headroom is not None and worst is not None and not worst <= self.max_headroom:
            return f"it explains headroom up to {self.max_headroom:g}, and the worst headroom here is {worst:.3g}"
        if self.error_level is not None and worst is not None:
            bound = 2.0 ** (FORMAT_BITS[result.case.dtype] - FORMAT_BITS[self.error_level])
            if not worst <= bound:
                return (
                    f"it explains {self.error_level}-level error (headroom up to u({self.error_level}) / "
                    f"u({result.case.dtype}) = {bound:.3g}), and the worst headroom here is {worst:.3g}"
                )
        if self.variant is not None and (reproduces is None or not reproduces(self.variant, self._level_scale(result))):
            return f"it explains outputs the variant {self.variant!r} reproduces, and that variant doesn't reproduce this one"
        return None

    def _level_scale(self, result: Result) -> float:
        """How many case tolerances `variant_level`'s error is: u(level) / the u its tolerance was derived for
        (the case dtype's, or a stated narrower compute format's), at least 1."""
        if self.variant_level is None:
            return 1.0
        derived_for = (result.tolerance or {}).get("unit_roundoff") or 2.0 ** -FORMAT_BITS[result.case.dtype]
        return max(1.0, 2.0 ** -FORMAT_BITS[self.variant_level] / derived_for)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "backends": list(self.backends),
            "when": {k: list(v) for k, v in self.when.items()},
            "checks": list(self.checks),
            "reason": self.reason,
            "upstream": self.upstream,
            "size": self.size(),
            "quantity": self.quantity or "forward and backward",
            "check": self.check,
            "unless": {k: list(v) for k, v in self.unless.items()},
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
    if not any(matches(name, pattern) for name in (*CHECK_NAMES, *GRADIENT_CHECK_NAMES)):
        raise where.fail(
            f"{pattern!r} matches no check; the checks are {', '.join(CHECK_NAMES)}, and for gradients "
            "grad <tensor> with its .shape and .dtype, for x, h0 and every state_dict parameter (layers 0 to "
            f"{GRADIENT_LAYERS - 1}), and grad x.padding",
            field,
        )
    return pattern


def _case_values(where: schema.Where, raw: dict[str, Any], key: str) -> dict[str, tuple[Any, ...]]:
    """`when` or `unless`: case field -> the values it matches, each field and value checked."""
    table = schema.table(where, raw.get(key, {}), key, "a table of case field = [values]")
    values_of = {}
    for name, values in table.items():
        if name not in CASE_FIELDS:
            raise where.fail(f"'{key}' names unknown case field(s) {name}; valid: {', '.join(sorted(CASE_FIELDS))}")
        values_of[name] = tuple(
            schema.list_of(where, values, f"{key}.{name}", _field_value(name), f"a non-empty list of {name} values")
        )
    return values_of


def _entry(where: schema.Where, raw: dict[str, Any], variants: Collection[str] | None) -> Divergence:
    schema.check_keys(where, raw, ENTRY_KEYS, required=("id", "backends", "reason"))
    backends = schema.list_of(
        where, raw["backends"], "backends", _pattern, 'a non-empty list of backend-name patterns, e.g. ["onnx-*"]'
    )
    when = _case_values(where, raw, "when")
    unless = _case_values(where, raw, "unless")
    check = schema.text(where, raw.get("check", ORACLE_CHECK), "check", '"oracle" or "invariant:<name>"')
    if check != ORACLE_CHECK and not check.startswith(INVARIANT_PREFIX):
        raise where.expected("check", '"oracle" or "invariant:<name>" (conformance/invariants.py)', check)
    checks = schema.list_of(
        where, raw.get("checks", []), "checks", _check_name, 'a list of check names, e.g. ["output", "h_n"]', False
    )
    sizes = [key for key in SIZE_KEYS if key in raw]
    if len(sizes) != 1:
        raise where.fail(
            "an entry must say how large a difference it explains, with exactly one of "
            f"{', '.join(SIZE_KEYS)}; got {', '.join(sizes) or 'none'}"
        )
    size: dict[str, Any] = {}
    if "max_headroom" in raw:
        value = raw["max_headroom"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 1:
            raise where.expected("max_headroom", "a number > 1 (a headroom <= 1 passes anyway)", value)
        size["max_headroom"] = float(value)
    if "error_level" in raw:
        size["error_level"] = schema.one_of(where, raw["error_level"], "error_level", tuple(FORMAT_BITS))
    if "variant" in raw:
        if variants is None:  # a reader that won't apply the entry (the report) needn't know the variants
            size["variant"] = schema.text(where, raw["variant"], "variant", "a variant id (string)")
        else:
            size["variant"] = schema.one_of(where, raw["variant"], "variant", tuple(variants))
    if "variant_level" in raw:
        if "variant" not in raw:
            raise where.fail("variant_level only qualifies a variant: give variant too")
        size["variant_level"] = schema.one_of(where, raw["variant_level"], "variant_level", tuple(FORMAT_BITS))
    if "error_contains" in raw:
        size["error_contains"] = schema.text(where, raw["error_contains"], "error_contains")
    quantity = schema.one_of(where, raw["quantity"], "quantity", QUANTITIES) if "quantity" in raw else None
    return Divergence(
        id=raw["id"],
        backends=tuple(backends),
        reason=schema.text(where, raw["reason"], "reason"),
        when=when,
        checks=tuple(checks),
        upstream=schema.text(where, raw["upstream"], "upstream", "a link (string)") if "upstream" in raw else "",
        quantity=quantity,
        check=check,
        unless=unless,
        **size,
    )


def load(path: Path = DEFAULT_REGISTRY, variants: Collection[str] | None = None) -> list[Divergence]:
    """Read and validate the registry: a malformed entry is refused, never half-applied.

    `variants` are the semantic variant ids an entry's `variant` may name (the run passes
    `conformance.variants.VARIANTS`; a reader that only displays entries can leave it out).
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
        entries.append(_entry(entry_where, raw, variants))
    return entries


def unmatchable(
    registry: list[Divergence],
    domain: Mapping[str, Iterable[Any]],
    families: Iterable[str],
    quantities: Collection[str] = QUANTITIES,
) -> list[str]:
    """Parts of entries that can never match in this run, one message each, by entry id.

    `domain` holds each case field's values in the selected matrix (plus any `--case`), `families`
    every backend family known here, `quantities` what the run checks (`--quantity`). A backend pattern whose family part (before `/` or `[`)
    matches no family, or a `when` value the matrix doesn't have, is dead weight at best and a
    typo at worst: warned about, since the entry may be right for another matrix or machine.
    """
    known = sorted(set(families))
    messages = []
    for entry in registry:
        if entry.quantity is not None and entry.quantity not in quantities:
            messages.append(
                f"divergence entry {entry.id!r}: quantity = {entry.quantity!r}, and this run checks only "
                f"{' and '.join(quantities)} (--quantity)"
            )
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


def matching(
    registry: list[Divergence], backend: str, case: Case, quantity: str = FORWARD, check: str = ORACLE_CHECK
) -> list[Divergence]:
    """Every entry about this (backend, case, check), in registry order: one case can show two divergences."""
    return [d for d in registry if d.applies(backend, case, quantity, check)]


def match(
    registry: list[Divergence], backend: str, case: Case, quantity: str = FORWARD, check: str = ORACLE_CHECK
) -> Divergence | None:
    return next(iter(matching(registry, backend, case, quantity, check)), None)
