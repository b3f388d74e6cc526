"""The verdict of a check, defined once: its name, how bad it is, and what pytest makes of it.

Every place that names a verdict (the pipeline, both test functions, the vectors
verifier, the report) uses this enum, so the lists can't disagree. It is a `str`
enum: records hold the plain name (`"known_divergence"`), and `Verdict(name)`
refuses a name that isn't one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Outcome = Literal["passed", "failed", "xfailed", "skipped"]


class Verdict(StrEnum):
    """Worst first: the declaration order is the severity order (report tables, cell colours)."""

    ERROR = "error"  # the backend broke: raised, crashed, or broke the adapter contract
    FAIL = "fail"  # shape, dtype or arithmetic disagreement
    UNEXPECTED_PASS = "unexpected_pass"  # a registry entry no longer reproduces
    UNEXPECTED_SUPPORT = "unexpected_support"  # a case declared unsupported ran and agreed: the declaration is stale
    KNOWN_DIVERGENCE = "known_divergence"  # fails as a registry entry says it does
    CONVENTION = "convention"  # only padded positions differ (documented behaviour, not arithmetic)
    UNSUPPORTED = "unsupported"  # the backend can't express the case; the reason quotes the library
    PASS = "pass"  # agrees within the derived tolerance
    SKIPPED = "skipped"  # the backend isn't available here

    @property
    def severity(self) -> int:
        """0 for the worst (`error`); larger is milder."""
        return _ORDER.index(self)

    @property
    def failing(self) -> bool:
        """Whether this verdict makes a run fail (pytest exit 1)."""
        return self in (Verdict.ERROR, Verdict.FAIL, Verdict.UNEXPECTED_PASS, Verdict.UNEXPECTED_SUPPORT)

    @property
    def outcome(self) -> Outcome:
        """The pytest outcome a test reports for this verdict."""
        if self.failing:
            return "failed"
        if self in (Verdict.KNOWN_DIVERGENCE, Verdict.CONVENTION):
            return "xfailed"
        if self in (Verdict.UNSUPPORTED, Verdict.SKIPPED):
            return "skipped"
        return "passed"

    @classmethod
    def parse(cls, name: str, where: str = "") -> Verdict:
        """`Verdict(name)` with an error that lists the valid names (and says where the bad one came from)."""
        try:
            return cls(name)
        except ValueError:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}unknown verdict {name!r}; valid: {', '.join(v.value for v in cls)}") from None


_ORDER = list(Verdict)
NAMES: tuple[str, ...] = tuple(v.value for v in Verdict)
FAILING: tuple[Verdict, ...] = tuple(v for v in Verdict if v.failing)
