"""The report of a real run, opened in headless Chromium (Debian's package) through Playwright.

One suite run (torch, the example NumPy adapter, a planted r/z gate swap and a planted
backward bug, smoke tier, both quantities) renders the page at the end of `pytest
conformance`; the browser then checks what a user relies on: matrix counts, a failing
cell's cases, the backward matrix beside the forward one, filters, no network request, no
console error. Screenshots go to reports/out/screenshots/ for CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report_records import CASES, result, write_run

from conformance.records import read_records
from reports.render import render

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "reports" / "out" / "screenshots"
PLANTED = '''
"""A GRU that reads the gates in (z, r, n) order: every numeric check must fail."""
from dataclasses import dataclass

import numpy as np
from example_gru_backend.adapter import NumpyGru


def _swap(a):
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


@dataclass
class SwappedGates(NumpyGru):
    family: str = "planted-rz"

    def cell(self, x, h, w_ih, w_hh, b_ih, b_hh):
        return super().cell(x, h, _swap(w_ih), _swap(w_hh), _swap(b_ih), _swap(b_hh))


def backends():
    yield SwappedGates()
'''
PLANTED_BACKWARD = '''
"""torch autograd with h0 detached: every output right, dL/dh0 read as zero (tests/planted_backward.py)."""
from planted_backward import DetachedH0


def backends():
    yield DetachedH0()
'''

# Text laid out one character per line: a text node of at least MIN_CHARS characters spread over 3 lines or
# more, fewer than 3 characters a line on average. Ordinary wrapping at a line's end gives at most 2 lines
# for a short text, so only a column a couple of characters wide meets both.
MIN_CHARS = 4
CRAMPED_TEXT = """(minChars) => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const chars = node.textContent.replace(/\\s/g, "").length;
    if (chars < minChars) continue;
    range.selectNodeContents(node);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0 && r.height > 0);
    const lines = new Set(rects.map((r) => Math.round(r.bottom))).size;
    if (lines >= 3 && chars / lines < 3) {
      const parent = node.parentElement;
      const section = parent.closest("section, header, footer");
      const where = (section ? "#" + section.id + " " : "") + parent.tagName.toLowerCase();
      found.push(`${where} "${node.textContent.trim().slice(0, 40)}": ${chars} characters on ${lines} lines`);
    }
  }
  return found;
}"""
# The notes-card bug this rule was written for: a max-content key column beside a value that may break
# anywhere leaves the value a zero-width track. And the same column narrowed by hand.
CRAMPING_CSS = {
    "max-content-key": ".card dl { grid-template-columns: max-content 1fr; } .card dd { word-break: break-word; }",
    "narrow-value": ".card dl { grid-template-columns: max-content 4px; } .card dd { overflow-wrap: anywhere; }",
}

pytestmark = [
    pytest.mark.tooling,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does this)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A page with every request recorded (and anything but the report itself refused) and console errors kept."""

    def __init__(self, browser: Any, report: Path, width: int = 1400) -> None:
        self.report_url = report.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": 1000})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(self.report_url)

    def _route(self, route: Any) -> None:
        if route.request.url == self.report_url:
            route.continue_()
        else:
            route.abort()

    def offsite(self) -> list[str]:
        return [url for url in self.requests if url != self.report_url and not url.startswith("data:")]

    def cramped_text(self) -> list[str]:
        """Every text laid out one character per line (see MIN_CHARS), named by section, element and text."""
        found: list[str] = self.page.evaluate(CRAMPED_TEXT, MIN_CHARS)
        return found


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`pytest conformance` with torch, the example adapter and a planted bug; the plugin renders the page."""
    tmp = tmp_path_factory.mktemp("real-run")
    (tmp / "planted_rz.py").write_text(PLANTED, encoding="utf-8")
    (tmp / "planted_h0.py").write_text(PLANTED_BACKWARD, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp), str(ROOT / "examples"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    )
    report, results, junit = tmp / "out" / "report.html", tmp / "results.jsonl", tmp / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider", "-q",
        "--backend-module", "example_gru_backend.adapter:backends",
        "--backend-module", "planted_rz:backends",
        "--backend-module", "planted_h0:backends",
        "--backends", "numpy-example,torch,planted-rz,planted-grad-detached-h0",
        "--tier", "smoke",
        "--results", str(results), "--report", str(report), f"--junitxml={junit}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # the planted column fails
    assert f"report: {report}" in done.stdout
    records = [r for r in read_records(results) if r["kind"] == "result"]
    return {"report": report, "results": records, "junit": junit, "stdout": done.stdout}


@pytest.mark.e2e
def test_plugin_writes_page_summary_and_readable_junit_ids(real_run: dict[str, Any]) -> None:
    report: Path = real_run["report"]
    assert report.is_file() and (report.parent / "report.summary.json").is_file()
    names = {case.get("name") for case in ET.parse(real_run["junit"]).iter("testcase")}
    tests = {"forward": "test_gru", "backward": "test_gru_backward"}
    for record in real_run["results"]:
        assert f"{tests[record['quantity']]}[{record['backend']}-{record['case_id']}]" in names


def _expected(
    records: list[dict[str, Any]], backend: str, keep: Any = lambda case: True, quantity: str = "forward"
) -> str:
    """passed/attempted for one column and quantity, counted straight from the results file."""
    mine = [
        r
        for r in records
        if r["backend"] == backend and r["quantity"] == quantity and keep(r["case"]) and r["verdict"] != "skipped"
    ]
    return f"{sum(r['verdict'] == 'pass' for r in mine)}/{len(mine)}"


@pytest.mark.e2e
def test_real_run_in_chromium(browser: Any, real_run: dict[str, Any]) -> None:
    records = real_run["results"]
    view = Page(browser, real_run["report"])
    page = view.page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)

    # The matrix is there, and its counts are the results file's.
    assert page.locator("#matrix").is_visible()
    heads = page.locator("#matrix th.colhead").all_inner_texts()
    backends = sorted({r["backend"] for r in records})
    assert len(heads) == len(backends) == 4
    assert page.locator("#matrix-backward").is_hidden()  # the switch shows one matrix at a time
    rows = {
        "all": lambda case: True,
        "lengths=sorted": lambda case: case["lengths"] == "sorted",
        "seq_len>=256": lambda case: case["seq_len"] >= 256,
        "dtype=float64": lambda case: case["dtype"] == "float64",
        "num_layers=2": lambda case: case["num_layers"] == 2,
    }
    for column, backend in enumerate(backends):
        for feature, keep in rows.items():
            cell = page.locator(f'#matrix td.cell[data-col="{column}"][data-feature="{feature}"] .frac')
            assert cell.inner_text() == _expected(records, backend, keep), (backend, feature)
    planted = backends.index("planted-rz[cpu]")
    failing = page.locator(f'#matrix td.cell[data-col="{planted}"][data-feature="lengths=sorted"]')
    assert failing.get_attribute("data-status") == "fail"

    # Clicking a failing cell reveals its cases.
    sorted_cases = sorted(
        r["case_id"]
        for r in records
        if r["backend"] == "planted-rz[cpu]" and r["case"]["lengths"] == "sorted" and r["quantity"] == "forward"
    )
    failing.click()
    panel = page.locator("#cell-panel")
    assert panel.is_visible()
    assert sorted(page.locator("#cell-cases a").all_inner_texts()) == sorted_cases
    page.screenshot(path=str(SCREENSHOTS / "report-cell.png"))

    # Following a listed case opens its row, with the worst element and an exact rerun command.
    page.locator("#cell-cases a").first.click()
    detail = page.locator("#case-table tr.detail")
    assert detail.count() == 1
    rerun = detail.locator(".rerun-command").first.inner_text()
    opened = next(r for r in records if r["rerun"] == rerun)
    assert opened["backend"] == "planted-rz[cpu]" and opened["case_id"] in sorted_cases
    assert "worst element" in detail.inner_text() and "tolerance" in detail.inner_text()

    # Filters: verdict, then backend on top of it.
    page.locator("#filter-reset").click()
    page.select_option("#filter-verdict", "fail")
    shown = page.locator("#case-table tbody tr[data-verdict]")
    assert shown.count() == sum(r["verdict"] == "fail" for r in records)
    # 10 smoke + 5 zero-length cases
    assert sum(r["verdict"] == "fail" and r["quantity"] == "forward" for r in records) == 15
    assert set(shown.evaluate_all("rows => rows.map(r => r.dataset.verdict)")) == {"fail"}
    page.select_option("#filter-quantity", "backward")
    assert shown.count() == sum(r["verdict"] == "fail" and r["quantity"] == "backward" for r in records) > 0
    assert set(shown.evaluate_all("rows => rows.map(r => r.dataset.quantity)")) == {"backward"}
    page.select_option("#filter-quantity", "")
    page.select_option("#filter-verdict", "")
    page.select_option("#filter-backend", label="torch[cpu]")
    page.select_option("#filter-dtype", label="float16")
    assert page.locator("#case-table tbody tr[data-verdict]").count() == sum(
        r["backend"] == "torch[cpu]" and r["case"]["dtype"] == "float16" for r in records
    )
    page.screenshot(path=str(SCREENSHOTS / "report-filtered.png"))

    # Plots are inline SVG; nothing left the page, nothing complained.
    assert page.locator("#plot-error svg").count() == 1 and page.locator("#plot-headroom svg").count() == 1
    assert view.offsite() == []
    assert view.errors == []
    view.context.close()


@pytest.mark.e2e
@pytest.mark.parametrize("width", [1400, 1000, 700, 420])
def test_no_text_is_laid_out_one_character_per_line(browser: Any, real_run: dict[str, Any], width: int) -> None:
    """At any window width, with the interactive parts open: the notes cards, the case detail, the cell panel."""
    view = Page(browser, real_run["report"], width=width)
    page = view.page
    if width == 1400:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#notes").screenshot(path=str(SCREENSHOTS / "report-notes.png"))
    cramped = view.cramped_text()
    assert cramped == [], "\n".join(cramped)
    page.locator('#matrix td.cell[data-status="fail"]').first.click()
    page.locator("#cell-cases a").first.click()
    assert page.locator("#case-table tr.detail").count() == 1
    cramped = view.cramped_text()
    assert cramped == [], "\n".join(cramped)
    view.context.close()


@pytest.mark.e2e
@pytest.mark.parametrize("css", CRAMPING_CSS.values(), ids=CRAMPING_CSS.keys())
def test_the_layout_rule_catches_a_planted_cramped_column(browser: Any, real_run: dict[str, Any], css: str) -> None:
    view = Page(browser, real_run["report"])
    assert view.cramped_text() == []
    view.page.add_style_tag(content=css)
    cramped = view.cramped_text()
    assert any(line.startswith("#notes dd") for line in cramped), cramped
    view.context.close()


def test_script_in_a_message_shows_as_text(browser: Any, tmp_path: Path) -> None:
    evil = '<script>alert("pwned")</script><img src=x onerror="alert(2)">'
    results = write_run(
        tmp_path / "results.jsonl",
        [result(CASES[0], verdict="error", reason=f"RuntimeError: {evil}"), result(CASES[1])],
        notes={"torch[cpu]": {"torch": evil}},
    )
    report = render([results], tmp_path / "report.html").report
    view = Page(browser, report)
    page = view.page
    page.locator("#case-table tr.expandable").first.click()
    assert evil in page.locator("#case-table tr.detail pre.reason").inner_text()
    assert evil in page.locator("#notes").inner_text()
    assert view.dialogs == [] and view.errors == [] and view.offsite() == []
    assert page.evaluate("document.scripts.length") == 2 and page.locator("#notes img").count() == 0
    view.context.close()


def test_partial_and_flaky_pages_render_cleanly(browser: Any, tmp_path: Path) -> None:
    first = write_run(tmp_path / "a.jsonl", [result(c) for c in CASES], run_id="a", end=False)
    second = write_run(tmp_path / "b.jsonl", [result(CASES[0], verdict="fail", headroom=3.0)], run_id="b")
    report = render([first, second], tmp_path / "report.html").report
    view = Page(browser, report)
    page = view.page
    assert page.locator("#partial-banner").is_visible()
    flaky = page.locator('#matrix td.cell[data-feature="all"]')
    assert flaky.get_attribute("data-status") == "flaky"
    flaky.click()
    assert "flaky" in page.locator("#cell-panel").inner_text()
    page.select_option("#filter-verdict", "flaky")
    page.locator("#case-table tr.expandable").first.click()
    assert page.locator("#case-table tr.detail .occurrence").count() == 2  # both verdicts, neither dropped
    assert view.errors == [] and view.offsite() == []
    json.loads(page.locator("#report-data").inner_text())  # the data block is intact JSON
    view.context.close()


CELL_COLOURS = """() => Object.fromEntries([...document.querySelectorAll('#matrix td.cell[data-feature="all"]')]
    .map(td => [td.dataset.status, getComputedStyle(td).backgroundColor]))"""


def _status_colours(view: Page) -> dict[str, str]:
    colours: dict[str, str] = view.page.evaluate(CELL_COLOURS)
    return colours


def test_top_summary_and_distinct_colours_for_conventions_and_known_divergences(browser: Any, tmp_path: Path) -> None:
    records = [result(c, backend="conv[cpu]", verdict="convention") for c in CASES]
    records += [result(c, backend="known[cpu]", verdict="known_divergence") for c in CASES]
    records += [result(c, backend="good[cpu]") for c in CASES]
    report = render([write_run(tmp_path / "results.jsonl", records)], tmp_path / "report.html").report
    view = Page(browser, report)
    colours = _status_colours(view)
    assert set(colours) == {"convention", "known", "pass"}
    assert len(set(colours.values())) == 3, colours  # a convention never looks like a known divergence
    lines = dict(zip(view.page.locator("#backend-lines .name").all_inner_texts(),
                     view.page.locator("#backend-lines li").all_inner_texts(), strict=True))  # fmt: skip
    n = len(CASES)
    assert f"agrees in 0 of {n} cases run; {n} convention" in lines["conv[cpu]"]
    assert f"{n} known divergence" in lines["known[cpu]"] and f"agrees in {n} of {n}" in lines["good[cpu]"]
    # The summary comes before the environment, which folds away.
    assert view.page.locator("#environment").get_attribute("open") is None
    # Planted: the old stylesheet, where conventions and known divergences shared one colour.
    view.page.add_style_tag(content=".s-convention { background: var(--known); color: #222; }")
    planted = _status_colours(view)
    assert planted["convention"] == planted["known"]
    view.context.close()


@pytest.mark.e2e
def test_the_top_summary_names_the_planted_mistake(browser: Any, real_run: dict[str, Any]) -> None:
    view = Page(browser, real_run["report"])
    line = view.page.locator('#backend-lines li[data-column*="planted-rz"][data-quantity="forward"]').inner_text()
    assert "failing" in line and "likely mistake: gate-order-zrn" in line, line
    backward = view.page.locator('#backend-lines li[data-column*="planted-rz"][data-quantity="backward"]').inner_text()
    assert backward.startswith("planted-rz[cpu] (backward)") and "does not differentiate" in backward, backward
    view.context.close()


@pytest.mark.e2e
def test_the_backward_matrix_shows_the_planted_gradient_bug(browser: Any, real_run: dict[str, Any]) -> None:
    """The switch shows the gradients' matrix, with the same drill-down: cell, its cases, worst element, rerun."""
    records = real_run["results"]
    view = Page(browser, real_run["report"])
    page = view.page
    page.locator('#quantity-switch button[data-quantity="backward"]').click()
    assert page.locator("#matrix-backward").is_visible() and page.locator("#matrix").is_hidden()
    backends = sorted({r["backend"] for r in records})
    planted = backends.index("planted-grad-detached-h0[cpu]")
    h0 = lambda case: case["initial_state"]  # noqa: E731
    for column, backend in enumerate(backends):
        for feature, keep in {"all": lambda case: True, "h0": h0}.items():
            cell = page.locator(f'#matrix-backward td.cell[data-col="{column}"][data-feature="{feature}"] .frac')
            assert cell.inner_text() == _expected(records, backend, keep, "backward"), (backend, feature)
    failing = page.locator(f'#matrix-backward td.cell[data-col="{planted}"][data-feature="h0"]')
    assert failing.get_attribute("data-status") == "fail"
    # The forward matrix's cell of the same column and row doesn't fail: only the gradients are wrong (its
    # zero-length cases are torch's refusal, unsupported, so the cell may be "mixed").
    forward_cell = page.locator(f'#matrix td.cell[data-col="{planted}"][data-feature="h0"]')
    assert forward_cell.get_attribute("data-status") in ("pass", "mixed")
    forward = [r for r in records if r["backend"] == "planted-grad-detached-h0[cpu]" and r["quantity"] == "forward"]
    assert {r["verdict"] for r in forward if r["case"]["lengths"] != "zero"} == {"pass"}
    assert {r["verdict"] for r in forward if r["case"]["lengths"] == "zero"} == {"unsupported"}
    failing.click()
    expected_cases = sorted(
        r["case_id"]
        for r in records
        if r["backend"] == "planted-grad-detached-h0[cpu]" and r["quantity"] == "backward" and h0(r["case"])
    )
    assert "planted-grad-detached-h0[cpu] (backward) × initial state h0" in page.locator("#cell-panel").inner_text()
    assert sorted(page.locator("#cell-cases a").all_inner_texts()) == expected_cases
    page.screenshot(path=str(SCREENSHOTS / "report-backward-cell.png"))
    page.locator("#cell-cases a").first.click()
    detail = page.locator("#case-table tr.detail")
    assert detail.count() == 1
    rerun = detail.locator(".rerun-command").first.inner_text()
    opened = next(r for r in records if r["rerun"] == rerun)
    assert opened["quantity"] == "backward" and opened["case_id"] in expected_cases
    assert "--quantity backward" in rerun
    assert "grad h0: worst element at [layer=" in detail.inner_text() and "atol per tensor" in detail.inner_text()
    page.locator('#quantity-switch button[data-quantity="forward"]').click()
    assert page.locator("#matrix").is_visible() and page.locator("#matrix-backward").is_hidden()
    assert page.locator("#cell-panel").is_hidden()
    assert view.offsite() == [] and view.errors == []
    view.context.close()
