"""The report's cross-device section, from `cross_device` records the suite really wrote.

The GPU is stubbed as in test_devices: `torch[cuda]` computes with the CPU torch GRU, and
its planted TF32 variant rounds operands as tensor cores do, so in strict mode the float32
cases disagree between the two "devices" and the float64 one agrees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import run_suite
from test_devices import FEW, FEW_ARGS
from test_report_records import CASES, result, write_run

from conformance.records import read_records
from reports.__main__ import main
from reports.render import render

PAIR = "torch[cpu] vs torch[cuda]"


def _suite_run(tmp_path: Path, module: str) -> Path:
    """`pytest conformance` on three short cases with torch[cpu] and the stub torch[cuda] from `module`."""
    results = tmp_path / "results.jsonl"
    run = run_suite(*FEW_ARGS, "--backends", "torch[*]", "--backend-module", module, tmp_path=tmp_path)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def tf32_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A strict run whose fake GPU uses TF32: the float32 cases disagree across devices."""
    return _suite_run(tmp_path_factory.mktemp("tf32"), "test_devices:tf32_cuda_torch")


def _cross(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(path) if r["kind"] == "cross_device"]


def _data(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found[1])


def _section(page: str) -> str:
    found = re.search(r'<section id="cross-device">(.*?)</section>', page, re.S)
    assert found is not None
    return found[1]


@pytest.mark.e2e
def test_section_counts_pairs_and_shows_the_planted_disagreement(tf32_results: Path, tmp_path: Path) -> None:
    records = _cross(tf32_results)
    assert len(records) == len(FEW) and {r["precision"] for r in records} == {"strict"}
    agreeing = [r for r in records if r["verdict"] == "pass"]
    failing = [r for r in records if r["verdict"] == "fail"]
    assert len(agreeing) == 1 and len(failing) == 2  # float64 agrees, both float32 cases do not

    done = render([tf32_results], tmp_path / "report.html")
    page = done.report.read_text(encoding="utf-8")

    # Where it sits: after the matrix, before the known divergences.
    assert page.index('id="matrix-section"') < page.index('id="cross-device"') < page.index('id="divergences"')
    section = _section(page)
    assert "not run here" not in section
    assert "<code>torch[cpu]</code> vs <code>torch[cuda]</code>" in section
    worst = max(r["worst_headroom"] for r in records)
    assert f'data-pair="{PAIR}" data-status="fail" data-passed="1" data-n="3"' in section
    assert f"{len(agreeing)} of {len(records)}" in section and f"{worst:.3g}" in section

    # Each disagreeing case is listed with its worst element: tensor, index, both values, error vs tolerance.
    for record in failing:
        assert record["case_id"] in section
        check = max((c for c in record["checks"] if not c["passed"]), key=lambda c: c["headroom"])
        message = check["message"]
        assert message.startswith(f"{check['name']}: worst element at [") and "> tolerance" in message
        assert all(f"{k}={v}" in message for k, v in check["worst_index"].items())
        assert repr(check["expected"]) in message and repr(check["actual"]) in message
        assert message.replace("<", "&lt;").replace(">", "&gt;") in section
    assert agreeing[0]["case_id"] not in section  # agreeing cases are counted, not listed

    # The page data the script renders the checks table from (the case table's own helper).
    data = _data(page)
    assert len(data["cross_device"]) == len(failing)
    shown = {c["name"]: c for seen in data["cross_device"] for c in seen[0]["checks"]}
    for record in failing:
        for check in (c for c in record["checks"] if not c["passed"]):
            got = shown[check["name"]]
            assert got["worst_index"] and got["expected"] is not None and got["actual"] is not None
            assert got["tolerance"] and got["headroom"] > 1

    summary = json.loads(done.summary.read_text(encoding="utf-8"))
    assert summary["cross_device"] == {
        PAIR: {
            "counts": {"fail": 2, "pass": 1},
            "n": 3,
            "passed": 1,
            "status": "fail",
            "worst_headroom": float(f"{worst:.3g}"),
        }
    }
    assert sorted(summary) == [
        "backward",
        "cells",
        "cross_device",
        "features",
        "invariants",
        "partial",
        "runs",
        "schema",
    ]


@pytest.mark.e2e
def test_compare_sees_cross_device_changes(
    tf32_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = _suite_run(tmp_path, "test_devices:fake_cuda_torch")
    assert {r["verdict"] for r in _cross(fixed)} == {"pass"}
    assert main(["render", str(tf32_results), "-o", str(tmp_path / "old.html")]) == 0
    old_summary = tmp_path / "old.summary.json"
    assert main(["render", str(fixed), "-o", str(tmp_path / "new.html"), "--compare", str(old_summary)]) == 0
    out = capsys.readouterr().out
    assert f"better  {PAIR} × cross-device (CPU vs GPU): passed 1/3 → 3/3; fail → pass" in out
    # And the other way round it is news.
    assert (
        main(
            [
                "render",
                str(tf32_results),
                "-o",
                str(tmp_path / "again.html"),
                "--compare",
                str(tmp_path / "new.summary.json"),
            ]
        )
        == 0
    )
    assert f"worse   {PAIR} × cross-device (CPU vs GPU): passed 3/3 → 1/3; pass → fail" in capsys.readouterr().out


def test_without_cross_device_records_the_section_is_one_line(tmp_path: Path) -> None:
    results = write_run(tmp_path / "results.jsonl", [result(c) for c in CASES])
    done = render([results], tmp_path / "report.html")
    section = _section(done.report.read_text(encoding="utf-8"))
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section)).strip() == (
        "Cross-device not run here (no backend ran on both a CPU and a GPU)"
    )
    assert json.loads(done.summary.read_text(encoding="utf-8"))["cross_device"] == {}


@pytest.mark.e2e
def test_cross_device_strings_are_escaped(tf32_results: Path, tmp_path: Path) -> None:
    evil = '<script>alert("pwned")</script>'
    lines = []
    for line in tf32_results.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["kind"] == "cross_device":
            record["backends"] = [f"torch[cpu]{evil}", "torch[cuda]"]
            record["reason"] = f"RuntimeError: {evil}" if record["verdict"] == "fail" else record["reason"]
            for check in record["checks"]:
                check["message"] = evil
        lines.append(json.dumps(record))
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("\n".join(lines) + "\n", encoding="utf-8")

    page = render([hostile], tmp_path / "report.html").report.read_text(encoding="utf-8")

    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in _section(page)
    assert len(re.findall(r"<script\b", page)) == 2


@pytest.mark.tooling
@pytest.mark.e2e
def test_script_renders_the_checks_table(tf32_results: Path, tmp_path: Path) -> None:
    """In Chromium (where installed): the case table's checks table replaces the server-written reason."""
    browser_tests = pytest.importorskip("test_report_browser")
    if not browser_tests.CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {browser_tests.CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")
    report = render([tf32_results], tmp_path / "report.html").report
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(browser_tests.CHROMIUM), args=browser_tests.CHROMIUM_ARGS
        )
        view = browser_tests.Page(browser, report)
        section = view.page.locator("#cross-device")
        assert section.locator("tr.xd-case").count() == 2
        assert section.locator("table.checks").count() == 2
        text = section.inner_text()
        assert "worst element" in text and "headroom" in text and "tolerance: " in text and "atol " in text
        assert view.errors == [] and view.offsite() == []
        view.context.close()
        browser.close()
