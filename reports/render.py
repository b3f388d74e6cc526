"""Results files in, one self-contained HTML page and its JSON summary out.

Called by the pytest plugin at the end of `pytest conformance` and by
`python -m reports render`. Heavy imports (jinja2, matplotlib) happen here, on
demand, so a run with `--no-report` never loads them.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import divergences
from conformance.backend_summary import summarize
from conformance.records import BACKWARD, FORWARD, PYTORCH_FORM, RESULT
from conformance.schema import clobbers, regular_file
from reports import html, plots, semantics
from reports.load import HEADLINE_PACKAGES, SEVERITY, Merged, Run, load
from reports.summary import (
    STATUSES,
    Change,
    cells,
    compare,
    cross_device_cells,
    features,
    read_summary,
    summary,
    write_summary,
)


@dataclass
class Rendered:
    """What a render produced, for the CLI and the plugin to report."""

    report: Path
    summary: Path
    partial: bool
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return self.report.stat().st_size


def default_summary_path(report: Path) -> Path:
    """reports/out/report.html -> reports/out/report.summary.json (next to the page)."""
    return report.with_name(report.stem + ".summary.json")


def _run_row(run: Run) -> dict[str, Any]:
    env = run.environment or {}
    precision: list[tuple[str, str]] = []
    for backend, notes in sorted(run.backend_notes.items()):
        for key, value in html.flatten(notes.get("precision", {})):
            precision.append((f"{backend}: {key}", value))
    packages = env.get("packages") or {}
    return {
        "run_id": run.run_id,
        "source": run.source,
        "env": run.env_label,
        "started": env.get("started", "?"),
        "finished": (run.end or {}).get("finished"),
        "exitstatus": (run.end or {}).get("exitstatus"),
        "partial": run.partial_reasons,
        "tier": run.options.get("tier", "?"),
        "seed": run.options.get("seed", "?"),
        "precision_mode": run.options.get("precision", "?"),
        "device": run.options.get("device", "?"),
        "os": env.get("os", "?"),
        "cpu": f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores)",
        "gpus": ", ".join(env.get("gpus") or []) or "none",
        "python": env.get("python", "?"),
        "packages": [
            (name, packages.get(name)) for name in HEADLINE_PACKAGES if name != "onnxruntime-gpu" or packages.get(name)
        ],
        "precision": precision,
        "results": run.results,
    }


def _divergence_rows(merged: Merged, registry_path: Path | None) -> list[dict[str, Any]]:
    """Each registry entry and whether this run still saw it; ids only the results know are kept too."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    where: dict[str, set[str]] = defaultdict(set)
    for entry in merged.entries:
        for record in entry.seen:
            if record.get("divergence"):
                seen[record["divergence"]][record["verdict"]] += 1
                where[record["divergence"]].add(entry.column)
    try:
        registry = [d.as_dict() for d in divergences.load(registry_path or divergences.DEFAULT_REGISTRY)]
    except divergences.RegistryError as error:
        registry = [{"id": "(registry unreadable)", "reason": str(error), "backends": [], "when": {}, "upstream": ""}]
    known = {d["id"] for d in registry}
    registry += [
        {"id": i, "reason": "(not in the loaded registry)", "backends": [], "when": {}, "upstream": ""}
        for i in sorted(seen)
        if i not in known
    ]
    rows = []
    for item in registry:
        counts = seen.get(item["id"], Counter())
        reproduced, stale = counts["known_divergence"], counts["unexpected_pass"]
        if reproduced and stale:
            state, status = f"reproduced in {reproduced} case(s); no longer in {stale}", "fail"
        elif reproduced:
            state, status = f"reproduced in {reproduced} case(s)", "known"
        elif stale:
            state, status = f"no longer reproduces ({stale} case(s) passed): narrow or remove the entry", "fail"
        else:
            state, status = "not exercised by these results", "not_run"
        upstream = item.get("upstream", "")
        rows.append(
            item
            | {
                "state": state,
                "status": status,
                "columns": sorted(where.get(item["id"], ())),
                "link": upstream if upstream.startswith(("https://", "http://")) else "",
            }
        )
    return rows


def backend_lines(merged: Merged) -> list[dict[str, str]]:
    """Per column and quantity, one line that says what agrees, what doesn't and why
    (`conformance.backend_summary`), computed from each case's most severe occurrence; a column's
    backward line (gradients) follows its forward one, labelled `torch[cpu] (backward)`."""
    labels = {c.key: c.backend + (f" ({c.env_label})" if c.env_label else "") for c in merged.columns}
    records = [
        {
            **entry.worst,
            "kind": RESULT,
            "backend": entry.column,
            "case": entry.case,
            "verdict": _single(entry),
            "quantity": entry.quantity,
        }
        for entry in merged.entries
    ]
    lines = []
    for found in summarize(records):
        status = "fail" if found.failing else "nothing" if found.ran == 0 else "pass"
        label = labels.get(found.backend, found.backend)
        lines.append(
            {
                "column": found.backend,
                "quantity": found.quantity,
                "label": label if found.quantity == FORWARD else f"{label} ({found.quantity})",
                "text": found.line(),
                "status": status,
            }
        )
    return lines


def _single(entry: Any) -> str:
    """A flaky entry counts as its most severe verdict here (the matrix shows it as flaky)."""
    return str(entry.verdicts[0])


def render(
    results: Sequence[Path],
    output: Path,
    *,
    summary_json: Path | None = None,
    compare_to: Path | None = None,
    registry: Path | None = None,
) -> Rendered:
    """Render `output` (HTML) and its JSON summary from one or more results files."""
    started = time.perf_counter()
    paths = [Path(p) for p in results]
    summary_path = summary_json or default_summary_path(output)
    inputs: list[tuple[str, Path | None]] = [("a results file", p) for p in paths]
    inputs += [("the --compare summary", compare_to), ("the --divergences registry", registry)]
    clashes = clobbers([("the report", output), ("the summary", summary_path)], inputs)
    if clashes:
        raise ValueError("refusing to overwrite an input: " + "; ".join(clashes))
    for path in paths:
        regular_file(path, "results file")  # missing, a directory or a device: refused, naming it
    merged = load(paths)
    rows = features(merged.entries)
    table = cells(merged, rows)
    backward = cells(merged, rows, BACKWARD) if any(e.quantity == BACKWARD for e in merged.entries) else None
    cross = cross_device_cells(merged)
    data = summary(merged, rows, table, cross, backward)
    data["invariants"] = semantics.summary(merged)  # additive: column -> check -> cell
    changes: list[Change] = []
    if compare_to is not None:
        changes = compare(read_summary(Path(compare_to)), data)

    counts = Counter(e.verdict for e in merged.entries)
    families: dict[str, list[Any]] = {}
    form_groups: dict[str, int] = {}  # columns per declared form, in column order (load sorts by form)
    for column in merged.columns:
        families.setdefault(column.family, []).append(column)
        form = column.form or PYTORCH_FORM
        form_groups[form] = form_groups.get(form, 0) + 1
    runs = [_run_row(r) for r in merged.runs]
    cross_rows, cross_details = html.cross_device_rows(merged, cross)
    context = {
        "title": "GRU conformance report",
        "rendered": time.strftime("%Y-%m-%d %H:%M %Z"),
        "sources": merged.sources,
        "partial": merged.partial,
        "runs": runs,
        "tiers": sorted({str(r["tier"]) for r in runs}),
        "seeds": sorted({str(r["seed"]) for r in runs}),
        "dates": sorted({str(r["started"])[:10] for r in runs}),
        "counts": [(v, counts[v]) for v in SEVERITY if counts[v]],
        "backend_lines": backend_lines(merged),
        "total": sum(counts.values()),
        "statuses": STATUSES,
        "families": families,
        "form_groups": list(form_groups.items()),
        "semantics": semantics.rows(merged),
        "invariant_names": semantics.invariant_names(merged),
        "columns": merged.columns,
        "rows": rows,
        "table": table,
        "has_forward": any(e.quantity == FORWARD for e in merged.entries) or backward is None,
        "backward_table": backward,
        "cross_device": cross_rows,
        "divergences": _divergence_rows(merged, registry),
        "error_plot": plots.error_vs_length(merged),
        "headroom_plot": plots.headroom_distribution(merged),
        "changes": changes,
        "compare_to": str(compare_to) if compare_to else None,
        "data": html.page_data(merged, rows, cross_details),
    }
    page = html.render_page(context)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    write_summary(data, summary_path)
    return Rendered(output, summary_path, merged.partial, changes, time.perf_counter() - started)
