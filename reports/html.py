"""The page: a Jinja2 template with autoescaping, inline CSS/JS, and the case data as JSON.

Everything a library wrote (messages, versions, notes) reaches the page either
through an autoescaped `{{ }}` or inside the JSON block, which `tojson` makes
HTML-safe and the script only ever inserts with `textContent`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from conformance.case import Case
from conformance.records import QUANTITIES, rerun_command
from reports.load import SEVERITY, Column, Entry, Merged
from reports.summary import Cell, Feature, round_sig

DIMENSIONS = tuple(f.name for f in fields(Case))


# Beside this module (installed as package data): a plain path works for editable and
# regular installs alike, where importlib.resources trips over the editable namespace finder.
TEMPLATES = Path(__file__).resolve().parent / "templates"


def _template_text(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested notes as (dotted key, text) pairs: readable without a JSON viewer."""
    if isinstance(value, dict):
        pairs: list[tuple[str, str]] = []
        for key, item in value.items():
            pairs += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in value):
            return [(prefix, ", ".join(map(str, value)) if value else "(none)")]
        return [pair for i, item in enumerate(value) for pair in flatten(item, f"{prefix}[{i}]")]
    return [(prefix, "-" if value is None else str(value))]


def key_pieces(key: str) -> list[str]:
    """A notes key cut after each dot and underscore, where a narrow card may wrap it (the page puts <wbr> there).

    Keys are long dotted names (precision.torch.backends.cudnn.allow_tf32) that would otherwise break mid-word.
    """
    pieces, start = [], 0
    for end, char in enumerate(key, start=1):
        if char in "._" and end < len(key):
            pieces.append(key[start:end])
            start = end
    return [*pieces, key[start:]]


def _check_detail(check: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "name",
        "kind",
        "passed",
        "message",
        "max_abs",
        "max_rel",
        "max_ulp",
        "tolerance",
        "headroom",
        "worst_index",
        "expected",
        "actual",
    )
    return {k: check[k] for k in keep if k in check}


def _compact(item: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values: most of the full tier's details are one-line `unsupported` reasons."""
    return {k: v for k, v in item.items() if v not in (None, "", [], {})}


def occurrences(entry: Entry, rerun_prefix: str = "") -> list[dict[str, Any]]:
    """What a case's detail shows: one compact dict per time it was seen, most severe first."""
    return [
        _compact(
            {
                "verdict": r["verdict"],
                "reason": r["reason"],
                # The usual command is rebuilt by the page from the column's prefix and the case id.
                "rerun": 1 if rerun_prefix and r["rerun"] == rerun_prefix + entry.case_id else r["rerun"],
                "divergence": r["divergence"],
                "run": r["run_id"] if len(entry.seen) > 1 else None,
                "source": r["source"] if len(entry.seen) > 1 else None,
                "tolerance": r["tolerance"] if r["checks"] else None,
                "checks": [_check_detail(c) for c in r["checks"]],
            }
        )
        for r in sorted(entry.seen, key=lambda r: SEVERITY.index(r["verdict"]))
    ]


# Disagreeing cases listed per pair; the rest are counted, not listed (the section stays compact).
CROSS_DEVICE_LISTED = 10


def cross_device_rows(merged: Merged, cross: dict[str, Cell]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The section's rows, one per pair, and the details its disagreeing cases point into (page data)."""
    rows: list[dict[str, Any]] = []
    details: list[Any] = []
    for pair in merged.pairs:
        mine = [e for e in merged.cross_device if e.column == pair.key and e.verdict not in ("pass", "skipped")]
        mine.sort(key=lambda e: (SEVERITY.index(e.verdict), -(e.worst_headroom or 0.0), e.case_id))
        cases = []
        for entry in mine[:CROSS_DEVICE_LISTED]:
            worst = entry.worst
            cases.append(
                {
                    "case_id": entry.case_id,
                    "verdict": entry.verdict,
                    "worst_headroom": entry.worst_headroom,
                    "reason": worst["reason"],
                    "detail": len(details),
                }
            )
            details.append(occurrences(entry))
        rows.append({"pair": pair, "cell": cross[pair.key], "cases": cases, "more": len(mine) - len(cases)})
    return rows, details


def page_data(merged: Merged, rows: list[Feature], cross_details: list[Any] | None = None) -> dict[str, Any]:
    """Compact, column-indexed data for the case table and the cell panel; a row's last field is its quantity."""
    column_index = {c.key: i for i, c in enumerate(merged.columns)}
    # The usual rerun command of a (column, quantity) is this prefix plus the case id.
    probe = Case(1, 1)
    rerun_prefix = {
        c.key: {q: rerun_command(probe, c.backend, quantity=q).removesuffix(probe.id) for q in QUANTITIES}
        for c in merged.columns
    }
    values: dict[str, list[Any]] = {d: [] for d in DIMENSIONS}
    lookup: dict[str, dict[Any, int]] = {d: {} for d in DIMENSIONS}
    case_index: dict[str, int] = {}
    cases: list[list[Any]] = []
    verdicts = list(SEVERITY)
    rows_out: list[list[Any]] = []
    details: list[list[dict[str, Any]]] = []  # per detailed cell: one dict per occurrence
    for entry in merged.entries:
        if entry.case_id not in case_index:
            indices = []
            for dim in DIMENSIONS:
                value = entry.case.get(dim)
                if value not in lookup[dim]:
                    lookup[dim][value] = len(values[dim])
                    values[dim].append(value)
                indices.append(lookup[dim][value])
            case_index[entry.case_id] = len(cases)
            cases.append([entry.case_id, indices])
        verdict = entry.verdict
        detail = -1
        if verdict != "pass":
            detail = len(details)
            details.append(occurrences(entry, rerun_prefix[entry.column].get(entry.quantity, "")))
        rows_out.append(
            [
                column_index[entry.column],
                case_index[entry.case_id],
                verdicts.index(verdict),
                round_sig(entry.worst_headroom, 4),
                round_sig(entry.max_abs, 4),
                detail,
                QUANTITIES.index(entry.quantity) if entry.quantity in QUANTITIES else 0,
            ]
        )
    for dim in DIMENSIONS:  # filter menus in natural order
        order = sorted(range(len(values[dim])), key=lambda i: (str(type(values[dim][i])), values[dim][i]))
        remap = {old: new for new, old in enumerate(order)}
        values[dim] = [values[dim][i] for i in order]
        for case in cases:
            case[1][DIMENSIONS.index(dim)] = remap[case[1][DIMENSIONS.index(dim)]]
    return {
        "columns": [
            {"key": c.key, "backend": c.backend, "family": c.family, "env": c.env_label, "rerun": rerun_prefix[c.key]}
            for c in merged.columns
        ],
        "quantities": list(QUANTITIES),
        "dims": list(DIMENSIONS),
        "values": values,
        "cases": cases,
        "verdicts": verdicts,
        "rows": rows_out,
        "details": details,
        "features": [f.as_dict() for f in rows],
        "cross_device": cross_details or [],
    }


def short_name(column: Column) -> str:
    """The column head under its family: "cpu" for torch[cpu], "ort[cuda]" for onnx-spec/ort[cuda]."""
    rest = column.backend[len(column.family) :] if column.backend.startswith(column.family) else column.backend
    rest = rest.lstrip("/")
    if rest.startswith("[") and rest.endswith("]"):
        rest = rest[1:-1]
    return rest or column.backend


def column_notes(column: Column) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for notes in column.notes:
        for pair in flatten(notes):
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def render_page(context: dict[str, Any]) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sig"] = lambda v, d=2: "–" if v is None else f"{v:.{d}g}"
    env.filters["wrappable"] = lambda text: Markup("<wbr>").join(key_pieces(str(text)))  # join escapes each piece
    template = env.get_template("report.html.j2")
    return template.render(
        **context,
        css=Markup(_template_text("report.css")),
        js=Markup(_template_text("report.js")),
        flatten=flatten,
        column_notes=column_notes,
        short_name=short_name,
    )
