"""The report's invariants and zero-length section, and columns grouped by declared form, from real results."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

from example_gru_backend.adapter import NumpyGru
from planted_backends import INVARIANT_BREAKERS, EmptyItemStateZeroed
from test_report_records import BASE_ENV

from conformance import engine
from conformance.case import Case
from conformance.contract import Backend, declared_form
from conformance.forms import Form
from conformance.invariants import INVARIANTS, check
from reports.load import load
from reports.render import render

ZERO = Case(3, 4, batch=3, seq_len=5, lengths="zero", initial_state=True)
UNSORTED = Case(3, 4, batch=3, seq_len=5, lengths="unsorted")


class OtherForm(NumpyGru):
    """Stands for a reset-before-matmul backend in the report (its numbers don't matter here)."""

    form = Form(linear_before_reset=False)


def _write(path: Path, backends: list[Backend]) -> Path:
    records: list[dict] = [json.loads(json.dumps(BASE_ENV))]
    for backend in backends:
        form = declared_form(backend).describe()
        records.append({"kind": "backend", "backend": backend.name, "family": backend.family, "device": "cpu"} | {
            "available": True, "availability": "", "notes": {}, "form": form
        })  # fmt: skip
        records += [engine.check(backend, case).as_record() for case in (ZERO, UNSORTED)]
        records += [check(backend, UNSORTED, invariant).as_record() for invariant in INVARIANTS.values()]
    records.append({"kind": "end", "exitstatus": 1, "counts": {}, "finished": "2026-01-02T03:05:00+0000"})
    path.write_text("\n".join(json.dumps({**r, "run_id": "r", "worker": "main"}) for r in records) + "\n")
    return path


def _text(page: str, section: str) -> str:
    start = page.index(f'<section id="{section}">')
    body = page[start : page.index("</section>", start)]
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def test_the_section_names_what_each_backend_did(tmp_path: Path) -> None:
    backends: list[Backend] = [NumpyGru(), EmptyItemStateZeroed(), INVARIANT_BREAKERS["batch-independence"]()]
    results = _write(tmp_path / "results.jsonl", backends)
    merged = load([results])
    assert len(merged.entries) == 2 * len(backends)  # the oracle checks only: the matrix is unchanged
    assert len(merged.invariants) == len(INVARIANTS) * len(backends)
    done = render([results], tmp_path / "report.html")
    text = _text(done.report.read_text(encoding="utf-8"), "semantics")
    assert "numpy-example[cpu] linear_before_reset=1 (PyTorch's form) pass h_n = h0, outputs 0 (the policy)" in text
    assert (
        "planted-empty-zeroed[cpu] linear_before_reset=1 (PyTorch's form) convention h_n of a length-0 item is 0"
        in text
    )
    assert "0/1 hold batch-independence broken: each item run alone gives its row of the batched result" in text
    summary = json.loads(done.summary.read_text())["invariants"]
    assert summary["planted-batch-of-one[cpu]"]["batch-independence"]["verdict"] == "fail"
    assert summary["planted-empty-zeroed[cpu]"]["zero-length"]["text"] == "h_n of a length-0 item is 0, not h0"


def test_columns_are_grouped_by_declared_form_and_the_page_says_so(tmp_path: Path) -> None:
    other = OtherForm(family="zz-other-first-by-name")
    results = _write(tmp_path / "results.jsonl", [other, NumpyGru()])
    merged = load([results])
    assert [c.backend for c in merged.columns] == ["numpy-example[cpu]", "zz-other-first-by-name[cpu]"]
    page = render([results], tmp_path / "report.html").report.read_text(encoding="utf-8")
    heads = re.findall(r'<th colspan="(\d+)" class="family form">([^<]+)</th>', page)
    assert [(n, unescape(form)) for n, form in heads] == [
        ("1", "linear_before_reset=1 (PyTorch's form)"),
        ("1", "linear_before_reset=0 (reset gate before the recurrent matmul)"),
    ]
    assert "grouped by the GRU form each backend declares" in page
