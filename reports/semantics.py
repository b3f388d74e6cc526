"""The report's "Invariants and zero-length sequences" section: per column, what held and what came back.

Invariants are their own results (`check` = "invariant:<name>", `Merged.invariants`); zero-length
behaviour is the oracle check of the `zero` lengths cases (`Merged.entries`), summarised by what the
backend did: pass (the policy), a convention naming what came back instead, or the library's refusal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from conformance.records import INVARIANT_PREFIX, PYTORCH_FORM
from reports.load import SEVERITY, Entry, Merged

STATUS = {
    "pass": "pass",
    "fail": "fail",
    "error": "fail",
    "unexpected_pass": "fail",
    "flaky": "flaky",
    "known_divergence": "known",
    "convention": "convention",
    "unsupported": "unsupported",
    "skipped": "not_run",
}
ZERO_LENGTH = "zero-length"
NOT_RUN = ("unsupported", "skipped")


def invariant_names(merged: Merged) -> list[str]:
    """The invariants in these results, in the order they were first recorded (the matrix file's)."""
    names: list[str] = []
    for entry in merged.invariants:
        name = entry.check.removeprefix(INVARIANT_PREFIX)
        if name not in names:
            names.append(name)
    return names


def _first_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def what_came_back(entry: Entry) -> list[str]:
    """Phrases for a zero-length case: the policy held, what came back instead, or why it didn't run."""
    worst = entry.worst
    verdict = entry.verdict
    if verdict == "pass":
        return []
    if verdict in ("convention", "known_divergence"):
        phrases = []
        for check in worst.get("checks", []):
            if check.get("name") == "h_n.zero-length":
                phrases.append(str(check.get("message", "")).split(";")[0])
            elif check.get("name") == "output.padding":
                phrases.append("nonzero outputs at empty or padded steps")
            elif check.get("kind") != "convention":
                phrases.append(f"{check.get('name')} of the other items wrong")
        if verdict == "known_divergence":
            return [f"known divergence {worst.get('divergence')}"]
        return phrases or [_first_line(worst.get("reason", ""))]
    if verdict == "fail":
        return ["other items wrong: " + _first_line(worst.get("reason", ""))]
    return [_first_line(worst.get("reason", ""))]


def _broken(entry: Entry) -> list[str]:
    """An invariant's failing reason (a refusal is counted, not quoted: the oracle section quotes it)."""
    if entry.verdict in ("pass", *NOT_RUN):
        return []
    return [_first_line(entry.worst.get("reason", "")).removeprefix("invariant ")]


def _cell(entries: list[Entry], phrases_of: Any) -> dict[str, Any]:
    counts = Counter(e.verdict for e in entries)
    attempted = [e for e in entries if e.verdict not in NOT_RUN]
    ran = Counter(e.verdict for e in attempted)
    verdict = min(ran or counts, key=SEVERITY.index) if counts else "skipped"
    phrases = Counter(p for e in entries for p in dict.fromkeys(phrases_of(e)))
    text = "; ".join(p if n == len(entries) else f"{n}× {p}" for p, n in phrases.most_common(4))
    return {
        "n": len(attempted),
        "held": counts["pass"],
        "not_run": len(entries) - len(attempted),
        "counts": dict(sorted(counts.items())),
        "verdict": verdict,
        "status": STATUS.get(verdict, "not_run") if entries else "not_run",
        "text": text,
        "detail": "\n".join(f"{e.case_id}: {e.verdict}" for e in entries),
    }


def rows(merged: Merged) -> list[dict[str, Any]]:
    """One row per column that has invariant or zero-length results."""
    names = invariant_names(merged)
    zero: dict[str, list[Entry]] = {}
    for entry in merged.entries:
        if entry.case.get("lengths") == "zero":
            zero.setdefault(entry.column, []).append(entry)
    checks: dict[tuple[str, str], list[Entry]] = {}
    for entry in merged.invariants:
        checks.setdefault((entry.column, entry.check.removeprefix(INVARIANT_PREFIX)), []).append(entry)
    found = []
    for column in merged.columns:
        if column.key not in zero and not any((column.key, n) in checks for n in names):
            continue
        found.append(
            {
                "column": column.key,
                "label": column.backend + (f" ({column.env_label})" if column.env_label else ""),
                "form": column.form or PYTORCH_FORM,
                "zero": _cell(zero.get(column.key, []), what_came_back),
                "invariants": {n: _cell(checks.get((column.key, n), []), _broken) for n in names},
            }
        )
    return found


def summary(merged: Merged) -> dict[str, dict[str, Any]]:
    """The section as the JSON summary holds it: column -> {"zero-length": cell, "<invariant>": cell}."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows(merged):
        cells = {ZERO_LENGTH: row["zero"], **row["invariants"]}
        out[row["column"]] = {
            k: {f: v[f] for f in ("n", "held", "counts", "verdict", "text")} for k, v in cells.items()
        }
    return out
