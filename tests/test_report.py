"""The report without a browser: partial files, merging, flaky cells, escaping, the summary and --compare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_report_records import BASE_ENV, CASES, result, write_run

from conformance.case import Case
from reports.__main__ import main
from reports.load import load
from reports.render import render
from reports.summary import cells, features


def _summary(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_partial_file_renders_and_says_why(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    write_run(results, [result(CASES[0]), result(CASES[1], verdict="fail", headroom=3.0)], end=False)
    torn = json.dumps(result(CASES[2]))
    with results.open("a", encoding="utf-8") as handle:
        handle.write(torn[: len(torn) // 2])  # killed mid-write

    done = render([results], tmp_path / "report.html")

    page = done.report.read_text(encoding="utf-8")
    assert done.partial
    assert 'id="partial-banner"' in page
    assert "no end record" in page and "cut off mid-write" in page and "2 of 3 results recorded" in page
    cell = _summary(done.summary)["cells"]["torch[cpu]"]["all"]
    assert _summary(done.summary)["partial"] is True
    assert (cell["n"], cell["passed"], cell["status"]) == (2, 1, "fail")


def test_complete_file_is_not_partial(tmp_path: Path) -> None:
    results = write_run(tmp_path / "results.jsonl", [result(c) for c in CASES])
    done = render([results], tmp_path / "report.html")
    assert not done.partial
    assert 'id="partial-banner"' not in done.report.read_text(encoding="utf-8")


def test_two_environments_become_separate_columns(tmp_path: Path) -> None:
    cpu_env = json.loads(json.dumps(BASE_ENV))
    gpu_env = json.loads(json.dumps(BASE_ENV)) | {"gpus": ["NVIDIA H100, 550.54"], "hostname": "gpu-runner"}
    gpu_env["packages"]["torch"] = "2.6.0"
    cpu = write_run(tmp_path / "cpu.jsonl", [result(c) for c in CASES], run_id="cpu-job", env=cpu_env)
    gpu = write_run(
        tmp_path / "gpu.jsonl",
        [result(c) for c in CASES] + [result(c, "torch[cuda]", "fail", 4.0) for c in CASES],
        run_id="gpu-job",
        env=gpu_env,
    )

    done = render([cpu, gpu], tmp_path / "report.html")

    columns = _summary(done.summary)["cells"]
    assert sorted(columns) == [
        "torch[cpu] @ torch 2.5.1, GPU none",
        "torch[cpu] @ torch 2.6.0, GPU NVIDIA H100, 550.54",
        "torch[cuda] @ torch 2.6.0, GPU NVIDIA H100, 550.54",
    ]
    assert columns["torch[cpu] @ torch 2.5.1, GPU none"]["all"] == {
        "n": 3,
        "passed": 3,
        "counts": {"pass": 3},
        "worst_headroom": 0.01,
        "status": "pass",
    }
    assert columns["torch[cuda] @ torch 2.6.0, GPU NVIDIA H100, 550.54"]["all"]["status"] == "fail"
    page = done.report.read_text(encoding="utf-8")
    assert "cpu-job" in page and "gpu-job" in page and "NVIDIA H100" in page


def test_same_environment_twice_merges_into_one_column(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a.jsonl", [result(c) for c in CASES], run_id="a")
    again = write_run(tmp_path / "b.jsonl", [result(c) for c in CASES], run_id="b")
    merged = load([first, again])
    assert [c.key for c in merged.columns] == ["torch[cpu]"]
    # Agreeing repeats are one case each, not counted twice.
    assert cells(merged, features(merged.entries))["torch[cpu]"]["all"].n == 3


def test_conflicting_verdicts_show_as_flaky(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a.jsonl", [result(c) for c in CASES], run_id="a")
    second = write_run(
        tmp_path / "b.jsonl",
        [result(CASES[0]), result(CASES[1], verdict="fail", headroom=2.5), result(CASES[2])],
        run_id="b",
    )

    done = render([first, second], tmp_path / "report.html")

    cells_ = _summary(done.summary)["cells"]["torch[cpu]"]
    assert cells_["all"]["status"] == "flaky"
    assert cells_["all"]["counts"] == {"flaky": 1, "pass": 2}
    assert cells_["lengths=sorted"]["status"] == "flaky"
    assert cells_["lengths=dense"]["status"] == "pass"
    page = done.report.read_text(encoding="utf-8")
    assert 'data-feature="lengths=sorted" data-status="flaky"' in page
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S)[1])
    flaky = [row for row in data["rows"] if data["verdicts"][row[2]] == "flaky"]
    assert len(flaky) == 1
    assert [s["verdict"] for s in data["details"][flaky[0][5]]] == ["fail", "pass"]  # both kept


def test_library_strings_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("pwned")</script>'
    env = json.loads(json.dumps(BASE_ENV))
    env["packages"]["torch"] = '2.5<img src=x onerror="alert(2)">'
    results = write_run(
        tmp_path / "results.jsonl",
        [result(CASES[0], verdict="error", reason=f"RuntimeError: {evil}")],
        env=env,
        notes={"torch[cpu]": {"torch": evil, "cannot_represent": [evil], 'a.<img src=x onerror="alert(3)">_b': 1}},
    )

    page = render([results], tmp_path / "report.html").report.read_text(encoding="utf-8")

    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page  # the notes, autoescaped
    assert "<dt>a.<wbr>&lt;img src=x onerror=&#34;alert(3)&#34;&gt;_<wbr>b</dt>" in page  # a key: escaped, then cut
    assert "\\u003cscript\\u003ealert" in page  # the reason, inside the HTML-safe JSON block
    assert len(re.findall(r"<script\b", page)) == 2  # the data block and the page's own script


def test_summary_is_stable(tmp_path: Path) -> None:
    results = write_run(tmp_path / "results.jsonl", [result(c, headroom=0.0123456789) for c in CASES])
    first = render([results], tmp_path / "one.html").summary.read_bytes()
    second = render([results], tmp_path / "two.html").summary.read_bytes()
    assert first == second
    assert _summary(tmp_path / "one.summary.json")["cells"]["torch[cpu]"]["all"]["worst_headroom"] == 0.0123


def test_compare_lists_worse_and_better_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write_run(
        tmp_path / "old.jsonl",
        [result(CASES[0]), result(CASES[1], verdict="fail", headroom=7.0), result(CASES[2], headroom=0.2)],
    )
    new = write_run(
        tmp_path / "new.jsonl", [result(CASES[0]), result(CASES[1]), result(CASES[2], verdict="fail", headroom=5.0)]
    )
    assert main(["render", str(old), "-o", str(tmp_path / "old.html")]) == 0
    capsys.readouterr()

    assert (
        main(["render", str(new), "-o", str(tmp_path / "new.html"), "--compare", str(tmp_path / "old.summary.json")])
        == 0
    )

    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert (
        "worse   torch[cpu] × long sequence (seq_len ≥ 256): passed 1/1 → 0/1; pass → fail; worst headroom 0.2 → 5"
        in lines
    )
    assert "better  torch[cpu] × packed, sorted: passed 0/1 → 1/1; fail → pass; worst headroom 7 → 0.01" in lines
    listed = {(line.split()[0], line.split(" × ")[1].split(":")[0]) for line in lines}
    worse = {"float64", "dense (not packed)", "1 layer", "long sequence (seq_len ≥ 256)"}
    better = {"bidirectional", "float32", "packed, sorted", "2 layers"}
    # "all cases" is absent: one fail before, one fail after, at a similar headroom.
    assert listed == {("worse", f) for f in worse} | {("better", f) for f in better}
    assert "Changes since" in (tmp_path / "new.html").read_text(encoding="utf-8")


def test_cli_reports_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "r.html")]) == 2
    assert "not found" in capsys.readouterr().err


def _result_line(backend: str, case_id: str, verdict: str) -> str:
    case = Case.from_id(case_id)
    return json.dumps(
        {"kind": "result", "backend": backend, "case_id": case_id, "case": case.as_dict(), "verdict": verdict}
    )


def test_verdicts_diff_lists_every_changed_pair_and_fails_on_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (
        "I3H4-L1-uni-tm-bias-noh0-B2T5-dense-float32-xsame-s0",
        "I3H4-L1-uni-tm-bias-noh0-B2T5-dense-float64-xsame-s0",
    )
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("\n".join([_result_line("t[cpu]", a, "pass"), _result_line("t[cpu]", b, "fail")]) + "\n")
    new.write_text(_result_line("t[cpu]", a, "pass") + "\n")
    assert main(["verdicts", str(old), str(old)]) == 0
    assert main(["verdicts", str(old), str(new)]) == 1  # a pair disappeared
    assert f"t[cpu]  {b}  forward  fail -> -" in capsys.readouterr().out
    new.write_text("\n".join([_result_line("t[cpu]", a, "known_divergence"), _result_line("t[cpu]", b, "fail")]) + "\n")
    assert main(["verdicts", str(old), str(new)]) == 1
    assert f"t[cpu]  {a}  forward  pass -> known_divergence" in capsys.readouterr().out


# --- the backward check: its own matrix, its own summary cells -----------------------------------


def test_forward_and_backward_of_one_case_are_two_entries_in_two_matrices(tmp_path: Path) -> None:
    records = [result(c) for c in CASES]
    records += [result(CASES[0], verdict="fail", headroom=4.0, quantity="backward")]
    records += [result(c, quantity="backward") for c in CASES[1:]]
    env = json.loads(json.dumps(BASE_ENV))
    env["options"]["quantity"] = "both"
    done = render([write_run(tmp_path / "results.jsonl", records, env=env)], tmp_path / "report.html")
    assert not done.partial  # 6 results of 3 cases x 1 backend x 2 quantities
    merged = load([tmp_path / "results.jsonl"])
    assert sorted((e.case_id, e.quantity, e.verdict) for e in merged.entries) == sorted(
        [(c.id, "forward", "pass") for c in CASES]
        + [(CASES[0].id, "backward", "fail")]
        + [(c.id, "backward", "pass") for c in CASES[1:]]
    )
    data = _summary(done.summary)
    assert data["cells"]["torch[cpu]"]["all"]["status"] == "pass"
    assert data["backward"]["torch[cpu]"]["all"]["status"] == "fail"
    assert data["backward"]["torch[cpu]"]["all"]["counts"] == {"fail": 1, "pass": 2}
    page = done.report.read_text(encoding="utf-8")
    assert 'id="quantity-switch"' in page and 'id="matrix-backward"' in page and 'id="matrix"' in page
    page_data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S)[1])
    assert page_data["quantities"] == ["forward", "backward"]
    assert sorted(page_data["quantities"][row[6]] for row in page_data["rows"]) == ["backward"] * 3 + ["forward"] * 3
    # The usual rerun command is rebuilt from the column's prefix for the row's quantity.
    (column,) = page_data["columns"]
    assert column["rerun"]["backward"] == "pytest conformance --backends 'torch[cpu]' --quantity backward --case "
    assert "torch[cpu] (backward)</span>agrees in 2 of 3 cases run; 1 failing" in page


def test_a_forward_only_report_has_no_backward_matrix(tmp_path: Path) -> None:
    done = render([write_run(tmp_path / "results.jsonl", [result(c) for c in CASES])], tmp_path / "report.html")
    page = done.report.read_text(encoding="utf-8")
    assert 'id="matrix"' in page and 'id="matrix-backward"' not in page and 'id="quantity-switch"' not in page
    assert _summary(done.summary)["backward"] == {}


def test_a_run_of_both_quantities_that_stopped_halfway_is_partial(tmp_path: Path) -> None:
    env = json.loads(json.dumps(BASE_ENV))
    env["options"]["quantity"] = "both"
    done = render([write_run(tmp_path / "results.jsonl", [result(c) for c in CASES], env=env)], tmp_path / "r.html")
    assert done.partial and "3 of 6 results recorded" in done.report.read_text(encoding="utf-8")


def test_compare_names_backward_cells_apart(tmp_path: Path) -> None:
    old = render([write_run(tmp_path / "old.jsonl", [result(c) for c in CASES])], tmp_path / "old.html").summary
    records = [result(c) for c in CASES] + [result(c, verdict="fail", headroom=5.0, quantity="backward") for c in CASES]
    new = write_run(tmp_path / "new.jsonl", records)
    done = render([new], tmp_path / "new.html", compare_to=old)
    lines = [change.line() for change in done.changes]
    assert any(line.startswith("added   torch[cpu] (backward) × all cases: now 0/3 passed") for line in lines), lines
    assert not any("torch[cpu] ×" in line for line in lines)  # the forward cells didn't move
    again = render([new], tmp_path / "again.html", compare_to=done.summary)
    assert again.changes == []
    fixed = [result(c) for c in CASES] + [result(c, quantity="backward") for c in CASES]
    moved = render([write_run(tmp_path / "f.jsonl", fixed)], tmp_path / "f.html", compare_to=done.summary)
    better = [c for c in moved.changes if c.direction == "better"]
    assert better and {c.column for c in moved.changes} == {"torch[cpu] (backward)"}
    assert any(c.line().startswith("better  torch[cpu] (backward) × all cases: passed 0/3 → 3/3") for c in better)
