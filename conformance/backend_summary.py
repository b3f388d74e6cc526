"""Per backend (and quantity: its forward and its backward check apart), in one line: what agrees, what
doesn't, and why.

Built from result records alone (no numerical imports), so the terminal summary and the
report say the same thing: the verdict counts, the simplest condition on the case fields
that separates the failures from the passes (`conformance.patterns`), and the mistake the
diagnosis names most often among the failures (`conformance.diagnosis`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conformance.case import Case
from conformance.patterns import Pattern, find_pattern
from conformance.records import FORWARD, INVARIANT_PREFIX, ORACLE_CHECK, QUANTITIES, RESULT, check_of
from conformance.verdict import Verdict

NOT_RUN = (Verdict.UNSUPPORTED, Verdict.SKIPPED)


@dataclass
class BackendSummary:
    backend: str
    counts: Counter[str] = field(default_factory=Counter)
    pattern: Pattern | None = None  # over the cases that ran, when something failed
    likely: str | None = None  # the most frequent diagnosis among failures, "id (k of n failures)"
    top_reason: dict[str, str] = field(default_factory=dict)  # verdict -> its most frequent first reason line
    quantity: str = FORWARD  # which check the counts are of: forward (outputs) or backward (gradients)
    invariants: Counter[tuple[str, str]] = field(default_factory=Counter)  # (check, verdict) -> invariant results

    @property
    def label(self) -> str:
        """How a row names itself: `torch[cpu]` for the forward check, `torch[cpu] (backward)` for gradients."""
        return self.backend if self.quantity == FORWARD else f"{self.backend} ({self.quantity})"

    def invariant_line(self) -> str:
        """e.g. `invariants: 4 hold (batch-independence, ...); broken: determinism (2 of 6, informative)`."""
        checks = sorted({check for check, _ in self.invariants})
        if not checks:
            return ""
        held, broken = [], []
        for check in checks:
            name = check.removeprefix(INVARIANT_PREFIX)
            counts = {v: n for (c, v), n in self.invariants.items() if c == check}
            ran = sum(n for v, n in counts.items() if Verdict(v) not in NOT_RUN)
            bad = sum(n for v, n in counts.items() if Verdict(v) in (Verdict.FAIL, Verdict.ERROR, Verdict.CONVENTION))
            if bad:
                informative = "" if any(Verdict(v).failing for v in counts) else ", informative"
                broken.append(f"{name} ({bad} of {ran}{informative})")
            elif ran:
                held.append(name)
        parts = [f"{len(held)} hold" + (f" ({', '.join(held)})" if held else "")]
        if broken:
            parts.append("broken: " + ", ".join(broken))
        return "invariants: " + "; ".join(parts)

    @property
    def ran(self) -> int:
        return sum(n for v, n in self.counts.items() if Verdict(v) not in NOT_RUN)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failing(self) -> int:
        return sum(n for v, n in self.counts.items() if Verdict(v).failing)

    def line(self) -> str:
        """e.g. `agrees in 10 of 19 cases; 9 convention; fails 2: fails exactly when ...; likely mistake: ...`."""
        n = self.counts
        if self.ran == 0:
            why = self.top_reason.get(Verdict.UNSUPPORTED.value) or self.top_reason.get(Verdict.SKIPPED.value, "")
            return f"checked nothing: {self.total} of {self.total} cases not run" + (f" ({why})" if why else "")
        parts = [f"agrees in {n[Verdict.PASS.value]} of {self.ran} cases run"]
        if n[Verdict.CONVENTION.value]:
            parts.append(f"{n[Verdict.CONVENTION.value]} convention (valid positions agree; padded positions differ)")
        if n[Verdict.KNOWN_DIVERGENCE.value]:
            parts.append(f"{n[Verdict.KNOWN_DIVERGENCE.value]} known divergence")
        not_run = sum(n[v.value] for v in NOT_RUN)
        if not_run:
            why = self.top_reason.get(Verdict.UNSUPPORTED.value) or self.top_reason.get(Verdict.SKIPPED.value, "")
            parts.append(f"{not_run} not run" + (f" (mostly: {_clip(why)})" if why else ""))
        if self.failing:
            parts.append(f"{self.failing} failing")
            if self.pattern is not None:
                parts.append(self.pattern.describe())
            if self.likely:
                parts.append(f"likely mistake: {self.likely}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "quantity": self.quantity,
            "counts": dict(self.counts),
            "pattern": None if self.pattern is None else self.pattern.as_dict(),
            "likely": self.likely,
            "line": self.line(),
        }


def _clip(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def summarize(records: Iterable[dict[str, Any]]) -> list[BackendSummary]:
    """One summary per backend and quantity, backends in first-seen order, each backend's forward summary
    before its backward one, from `result` records (other kinds are ignored; no quantity means forward).
    Invariant results (`check` other than oracle) are counted on the backend's forward summary."""
    by_backend: dict[str, dict[str, list[dict[str, Any]]]] = {}
    invariants: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("kind") == RESULT:
            if check_of(record) != ORACLE_CHECK:
                invariants.setdefault(record["backend"], []).append(record)
                continue
            quantity = record.get("quantity", FORWARD)
            by_backend.setdefault(record["backend"], {}).setdefault(quantity, []).append(record)
    order = {q: i for i, q in enumerate(QUANTITIES)}
    summaries = [
        _summary(backend, results, quantity)
        for backend, by_quantity in by_backend.items()
        for quantity, results in sorted(by_quantity.items(), key=lambda item: order.get(item[0], len(order)))
    ]
    for summary in summaries:
        if summary.quantity == FORWARD:
            summary.invariants = Counter((check_of(r), r["verdict"]) for r in invariants.get(summary.backend, []))
    return summaries


def _summary(backend: str, results: list[dict[str, Any]], quantity: str = FORWARD) -> BackendSummary:
    summary = BackendSummary(backend, Counter(r["verdict"] for r in results), quantity=quantity)
    reasons: dict[str, Counter[str]] = {}
    for r in results:
        first = (r.get("reason") or "").strip().splitlines()
        if first:
            reasons.setdefault(r["verdict"], Counter())[first[0]] += 1
    summary.top_reason = {v: c.most_common(1)[0][0] for v, c in reasons.items()}
    if not summary.failing:
        return summary
    ran = [r for r in results if Verdict(r["verdict"]) not in NOT_RUN]
    summary.pattern = find_pattern((Case.from_dict(r["case"]), Verdict(r["verdict"]).failing) for r in ran)
    named = Counter(
        r["diagnosis"]["variants"][0]["id"]
        if r["diagnosis"].get("variants")
        else f"computes in {r['diagnosis']['precision']['format']}"
        for r in ran
        if r.get("diagnosis") and (r["diagnosis"].get("variants") or r["diagnosis"].get("precision"))
    )
    if named:
        name, count = named.most_common(1)[0]
        summary.likely = f"{name} ({count} of {summary.failing} failures)"
    return summary
