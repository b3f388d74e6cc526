"""Hostile input (issue 18): a bad adapter, file or option is refused or isolated, and never hides a
failure or corrupts another check.

Each test reproduces one input a careless or hostile stranger could give (the numbers are the
issue's items) and checks the handling: a usage error that names the file, entry and field
(pytest exits 4, the CLIs 2), or an `error` result that names the broken contract. End-to-end
runs also check that no traceback reaches the user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from hostile_backends import RETURNS, Hangs, Raises, Returns, WrongTypes, contract_breakers, corrupting

from conformance import divergences, matrix, selection
from conformance.case import Case
from conformance.data import case_data, make_inputs, make_weights
from conformance.engine import check
from conformance.records import RESULT, read_records
from conformance.time_limit import TimeLimit
from conformance.vectors import load_case, verify, write_outputs
from conformance.vectors.__main__ import main as vectors_main
from conformance.vectors.store import MANIFEST, check_integrity, load_manifest
from conformance.verdict import Verdict
from reports.__main__ import main as reports_main

ROOT = Path(__file__).resolve().parent.parent
SMOKE_VECTORS = ROOT / "fixtures" / "vectors" / "smoke"
PLANTED = ("--backend-module", "planted_backends:swapped_rz", "--backends", "planted-swap-rz", "--tier", "smoke")
CASE = Case(input_size=5, hidden_size=6, bidirectional=True, batch=3, seq_len=5, lengths="sorted")


def clean(run: subprocess.CompletedProcess[str]) -> bool:
    """No traceback and no INTERNALERROR reached the user."""
    out = run.stdout + run.stderr
    return "Traceback" not in out and "INTERNALERROR" not in out


def results_of(path: Path) -> list[dict]:
    return [r for r in read_records(path) if r["kind"] == RESULT]


# --- 1. a registry entry that would hide every failure ------------------------------------------


@pytest.mark.e2e
def test_a_backends_string_is_refused_instead_of_matching_every_backend(suite, tmp_path: Path) -> None:
    registry = tmp_path / "divergences.toml"
    registry.write_text('[[divergence]]\nid = "all-onnx"\nbackends = "onnx-*"\nreason = "r"\n')
    with pytest.raises(divergences.RegistryError) as raised:
        divergences.load(registry)
    assert str(raised.value) == (
        f"{registry}: [[divergence]] #1 (id 'all-onnx'): backends: expected a non-empty list of backend-name "
        "patterns, e.g. [\"onnx-*\"], got 'onnx-*' (a string)"
    )
    # The run that exited 0 with every failure relabelled known_divergence now stops before any check.
    run = suite(*PLANTED, "--divergences", str(registry))
    assert run.returncode == 4 and "backends: expected a non-empty list" in run.stderr and clean(run)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("divergence = [1, 2]", "divergence: expected an array of tables ([[divergence]] entries), got a list [1, 2]"),
        ('[[divergense]]\nid = "x"', "unknown key(s) divergense; valid keys: divergence"),
        ('[[divergence]]\nid = "x"\nbackends = ["a[*]"]', "[[divergence]] #1 (id 'x'): missing key(s) reason"),
        ('[[divergence]]\nbackends = ["a[*]"]\nreason = "r"', "[[divergence]] #1: id: expected a non-empty string"),
        ("checks = 'output'", "checks: expected a list of check names"),
        ("checks = ['ouptut']", "checks[0]: 'ouptut' matches no check; the checks are output.shape"),
        ("when = { lengths = 'sorted' }", "when.lengths: expected a non-empty list of lengths values"),
        ("when = { dtype = ['float65'] }", "when.dtype[0]: expected one of 'float32', 'float64'"),
        ("when = { seq_len = ['5'] }", "when.seq_len[0]: expected an integer >= 1, got '5' (a string)"),
        ("when = { colour = [1] }", "'when' names unknown case field(s) colour"),
        ("upstream = 5", "upstream: expected a link (string), got 5 (an integer)"),
        (
            "backends2 = []",
            "unknown key(s) backends2; valid keys: backends, check, checks, error_contains, error_level, id, max_headroom, quantity, "
            "reason, unless, upstream, variant, variant_level, when",
        ),
    ],
)
def test_malformed_registries_name_file_entry_and_field(tmp_path: Path, text: str, message: str) -> None:
    registry = tmp_path / "divergences.toml"
    entry = '[[divergence]]\nid = "x"\nbackends = ["torch[*]"]\nreason = "r"\nmax_headroom = 10\n'
    registry.write_text(text if text.startswith(("divergence =", "[[")) else entry + text + "\n")
    with pytest.raises(divergences.RegistryError) as raised:
        divergences.load(registry)
    assert str(raised.value).startswith(f"{registry}: ") and message in str(raised.value)


@pytest.mark.e2e
def test_registry_entries_that_can_never_match_are_warned_about_by_id(suite, tmp_path: Path) -> None:
    registry = tmp_path / "divergences.toml"
    registry.write_text(
        '[[divergence]]\nid = "typo-family"\nbackends = ["torhc[*]"]\nreason = "r"\nmax_headroom = 10\n'
        '[[divergence]]\nid = "value-not-in-matrix"\nbackends = ["planted-*"]\nwhen = { seq_len = [7] }\nreason = "r"\nmax_headroom = 10\n'
    )
    run = suite(*PLANTED, "--divergences", str(registry))
    assert run.returncode == 1 and clean(run)  # the planted failures are not hidden by either entry
    assert "divergence entry 'typo-family': backend pattern 'torhc[*]' matches no backend family" in run.stdout
    assert "divergence entry 'value-not-in-matrix': when.seq_len = 7 is not a value of the matrix" in run.stdout


# --- 2. one backend corrupting the next one's data ------------------------------------------------


def test_corrupting_backends_cannot_reach_the_honest_backend_after_them() -> None:
    pytest.importorskip("torch")
    replaces, writes_through, honest = corrupting()
    for case in matrix.cases("smoke"):
        before = [np.array(a) for a in case_data(case)[0].tensors.values()]
        results = {b.name: check(b, case) for b in (replaces, writes_through, honest)}
        assert results[honest.name].verdict == Verdict.PASS, results[honest.name].reason
        # Each corrupter computed on what it corrupted: its own result shows it, and only its own.
        assert results[replaces.name].verdict == Verdict.FAIL
        assert results[writes_through.name].verdict == Verdict.FAIL
        weights, inputs = case_data(case)
        assert all(np.array_equal(a, b) for a, b in zip(before, weights.tensors.values(), strict=True))
        assert np.array_equal(inputs.x, make_inputs(case).x)
        assert all(np.array_equal(a, b) for a, b in zip(make_weights(case).tensors.values(), before, strict=True))


@pytest.mark.e2e
def test_corrupting_backends_in_a_real_run(suite, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = suite("--backend-module", "hostile_backends:corrupting", "--backends", "hostile-*,honest", "--tier", "smoke")
    assert run.returncode == 1 and clean(run)
    verdicts = {(r["backend"], r["case_id"]): r["verdict"] for r in results_of(tmp_path / "results.jsonl")}
    honest = [v for (backend, _), v in verdicts.items() if backend == "honest[cpu]"]
    assert honest == ["pass"] * (len(matrix.cases("smoke")) + len(matrix.zero_length()))


# --- 3. a broken adapter leaves exactly one record, with the contract it broke ------------------

CONTRACT = {
    "none": "run returned None; expected GruOutput(output=..., h_n=...)",
    "tuple": "run returned tuple; expected GruOutput(output=..., h_n=...)",
    "list": "run returned list; expected GruOutput(output=..., h_n=...)",
    "nested-list": "run returned output as list; expected a numpy array (or an array that converts to one "
    "without loss: anything with __array__)",
    "torch-bfloat16": "run returned output as torch.Tensor, which numpy can't convert without loss (TypeError: "
    "Got unsupported ScalarType BFloat16); return a numpy array in the case dtype",
    "torch-requires-grad": "run returned output as torch.Tensor, which numpy can't convert without loss "
    "(RuntimeError: Can't call numpy() on Tensor that requires grad.",
    "object-array": "run returned output as an array of object; expected real numbers",
}


@pytest.mark.parametrize("what", RETURNS)
def test_what_run_returns_is_converted_without_loss_or_refused_by_name(what: str) -> None:
    if what.startswith("torch"):
        pytest.importorskip("torch")
    result = check(Returns(what=what), CASE)
    if what == "torch-float":  # a CPU float tensor converts exactly: accepted as the array it is
        assert result.verdict == Verdict.PASS, result.reason
        return
    assert result.verdict == Verdict.ERROR
    assert result.reason.startswith(CONTRACT[what]), result.reason


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (Raises(where="availability"), "RuntimeError: planted RuntimeError in availability (at "),
        (Raises(where="supports"), "RuntimeError: planted RuntimeError in supports (at "),
        (Raises(where="run"), "RuntimeError: planted RuntimeError in run (at "),
        (Raises(where="run", error=SystemExit), "SystemExit: planted SystemExit in run (at "),
        (WrongTypes(where="supports"), "supports returned bool; expected None or a reason (str)"),
        (WrongTypes(where="availability"), "availability returned bool; expected Availability"),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_a_contract_method_that_raises_or_answers_the_wrong_type_is_an_error(backend, reason: str) -> None:
    result = check(backend, CASE)
    assert result.verdict == Verdict.ERROR and result.reason.startswith(reason), result.reason
    if isinstance(backend, Raises):
        assert "hostile_backends.py:" in result.reason and f"in {backend.where})" in result.reason


@pytest.mark.e2e
def test_every_backend_and_case_leaves_exactly_one_record_whatever_the_adapter_does(suite, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = suite(
        "--backend-module", "hostile_backends:contract_breakers", "--backends", "hostile-*,honest", "--tier", "smoke"
    )
    assert run.returncode == 1 and clean(run)
    records = list(read_records(tmp_path / "results.jsonl"))
    names = [b.name for b in contract_breakers()]
    pairs = [(r["backend"], r["case_id"]) for r in records if r["kind"] == RESULT]
    tier = matrix.cases("smoke") + matrix.zero_length()  # every tier adds the declared zero-length cases
    assert sorted(pairs) == sorted((n, c.id) for n in names for c in tier)
    backend_records = {r["backend"]: r for r in records if r["kind"] == "backend"}
    assert sorted(backend_records) == sorted(names)
    assert backend_records["hostile-raises-describe-RuntimeError[cpu]"]["notes"] == {
        "describe_error": "RuntimeError: planted RuntimeError in describe"
    }
    assert (
        "availability() raised RuntimeError"
        in backend_records["hostile-raises-availability-RuntimeError[cpu]"]["availability"]
    )
    verdicts: dict[str, set[str]] = {}
    for r in records:
        if r["kind"] == RESULT:
            verdicts.setdefault(r["backend"], set()).add(r["verdict"])
    passing = {"honest[cpu]", "hostile-returns-torch-float[cpu]", "hostile-raises-describe-RuntimeError[cpu]"}
    assert all(verdicts[n] == ({"pass"} if n in passing else {"error"}) for n in names), verdicts


# --- 4. backend names --------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_backends_with_one_name_are_refused_naming_both_factories(suite) -> None:
    modules = ["example_gru_backend.adapter:backends", "hostile_backends:duplicates"]
    with pytest.raises(selection.SelectionError) as raised:
        selection.select(["numpy-example"], modules=modules)
    assert str(raised.value) == (
        "backend name 'numpy-example[cpu]' is produced twice: by --backend-module "
        "example_gru_backend.adapter:backends and by --backend-module hostile_backends:duplicates; "
        "names must be unique (give one of them another family)"
    )
    run = suite("--backend-module", modules[0], "--backend-module", modules[1], "--backends", "numpy-example")
    assert run.returncode == 4 and "is produced twice" in run.stderr and clean(run)


def test_asking_for_one_backend_twice_is_not_a_duplicate() -> None:
    chosen = selection.select(["numpy-example", "numpy-example[cpu]"], modules=["example_gru_backend.adapter:backends"])
    assert [b.name for b in chosen] == ["numpy-example[cpu]"]


def test_a_backend_name_without_a_device_is_refused() -> None:
    with pytest.raises(selection.SelectionError) as raised:
        selection.select(["*"], modules=["hostile_backends:no_device"])
    assert (
        "backend family 'hostile_backends:no_device' (--backend-module hostile_backends:no_device) produced a "
        "backend named 'hostile-no-device': expected the form family[device], e.g. 'mylib[cpu]'"
    ) in str(raised.value)


# --- 5. outputs that would destroy inputs --------------------------------------------------------


@pytest.mark.e2e
def test_results_and_report_on_one_path_are_refused(suite, tmp_path: Path) -> None:
    target = tmp_path / "precious.jsonl"
    target.write_text("precious\n")
    run = suite(*PLANTED, "--results", str(target), "--report", str(target))
    assert run.returncode == 4 and clean(run)
    assert f"--report {target} is also --results: writing it would destroy it" in run.stderr
    assert target.read_text() == "precious\n"
    registry = tmp_path / "divergences.toml"
    shutil.copy(divergences.DEFAULT_REGISTRY, registry)
    run = suite(*PLANTED, "--divergences", str(registry), "--results", str(registry))
    assert run.returncode == 4 and f"--results {registry} is also --divergences" in run.stderr
    assert registry.read_bytes() == divergences.DEFAULT_REGISTRY.read_bytes()


def test_render_refuses_to_write_over_its_own_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"kind": "end", "run_id": "r"}) + "\n")
    before = results.read_bytes()
    assert reports_main(["render", str(results), "-o", str(results)]) == 2
    assert f"the report {results} is also a results file: writing it would destroy it" in capsys.readouterr().err
    assert reports_main(["render", str(results), "-o", str(tmp_path / "r.html"), "--summary-json", str(results)]) == 2
    assert f"the summary {results} is also a results file" in capsys.readouterr().err
    assert results.read_bytes() == before


def test_vectors_are_written_only_into_an_empty_directory_or_over_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    keep = mine / CASE.id
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("mine")
    assert vectors_main(["write", "--tier", "smoke", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"{mine}: refusing to write vectors here: the directory is not empty and holds no" in err
    assert (keep / "notes.txt").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert vectors_main(["write", "--tier", "smoke", str(afile)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_verify_refuses_results_over_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vectors = Path(shutil.copytree(SMOKE_VECTORS, tmp_path / "smoke"))
    before = (vectors / MANIFEST).read_bytes()
    code = vectors_main(["verify", str(vectors), str(tmp_path), "--results", str(vectors / MANIFEST)])
    assert code == 2 and "is also the vectors manifest" in capsys.readouterr().err
    assert (vectors / MANIFEST).read_bytes() == before


# --- 6. options ------------------------------------------------------------------------------------

HUGE = "I5H6-L1-uni-tm-bias-noh0-B3T10000000-dense-float32-xsame-s0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed: expected a non-negative integer, got -1"),
        (
            ["--seed", "3", "--case", CASE.id],
            f"--seed 3 with --case: a case id carries its own seed (its '-sN' suffix), so --seed would be ignored; "
            f"drop --seed, or put the seed in the id: {CASE.id[:-1]}3",
        ),
        (
            ["--seed", "3", "--vectors", str(SMOKE_VECTORS)],
            "--seed 3 with --vectors: stored vectors fix their own seed",
        ),
        (["--case-timeout", "-1"], "--case-timeout: expected seconds >= 0 (0: no limit), got -1.0"),
        (
            ["--case", HUGE],
            f"case {HUGE}: refused up front, too large: seq_len 10000000 x 1 layer(s) x 1 direction(s) = "
            "10000000 sequential steps, over the bound of 20000 (conformance.case.MAX_SEQUENTIAL_STEPS)",
        ),
        (["--results", "/proc/no-such-dir/results.jsonl"], "--results /proc/no-such-dir/results.jsonl: can't write"),
        (["--results", "/"], "--results /: is a directory; expected a file path"),
        (["--report", "/tmp"], "--report /tmp: is a directory; expected a file path"),
    ],
)
@pytest.mark.e2e
def test_bad_options_are_usage_errors(suite, args: list[str], message: str) -> None:
    run = suite("--backend-module", "example_gru_backend.adapter:backends", "--backends", "numpy-example", *args)
    assert run.returncode == 4 and message in run.stderr, run.stdout + run.stderr
    assert clean(run)


def test_vectors_seed_must_be_non_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        vectors_main(["write", "--tier", "smoke", "--seed", "-1", str(tmp_path / "v")])
    assert exited.value.code == 2 and "expected a non-negative integer, got -1" in capsys.readouterr().err


def test_matrix_values_beyond_the_bounds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(matrix.DEFAULT_MATRIX.read_text().replace("seq_len = [1, 5, 260]", "seq_len = [1, 5, 9000000]"))
    with pytest.raises(matrix.MatrixError, match=r"too large: seq_len 9000000 x .* over the bound of 20000"):
        matrix.cases("smoke", path=path)


# --- 7. vectors that point outside their directory -----------------------------------------------


def _tamper(vectors: Path, change) -> str:  # type: ignore[no-untyped-def]
    manifest = json.loads((vectors / MANIFEST).read_text())
    entry = manifest["cases"][0]
    change(entry["files"]["x"])
    (vectors / MANIFEST).write_text(json.dumps(manifest))
    return str(entry["id"])


@pytest.mark.parametrize("path", ["../x.npy", "/etc/passwd", "..\\x.npy", "a/../../x.npy"])
def test_manifest_paths_must_stay_inside_the_vectors_directory(tmp_path: Path, path: str) -> None:
    vectors = Path(shutil.copytree(SMOKE_VECTORS, tmp_path / "smoke"))
    case_id = _tamper(vectors, lambda spec: spec.update(path=path))
    with pytest.raises(ValueError) as raised:
        load_manifest(vectors)
    assert str(raised.value).startswith(f"{vectors / MANIFEST}: case {case_id}: files.x: path: expected a relative ")


def test_a_symlink_out_and_a_huge_declared_size_are_refused_before_reading(tmp_path: Path) -> None:
    vectors = Path(shutil.copytree(SMOKE_VECTORS, tmp_path / "smoke"))
    case_id = _tamper(vectors, lambda spec: spec.update(bytes=10**12))
    x = vectors / case_id / "x.npy"
    problems = check_integrity(load_manifest(vectors), [case_id])
    assert problems == [f"{x}: case {case_id}: truncated: {x.stat().st_size} bytes, manifest says {10**12}"]
    x.unlink()
    x.symlink_to("/dev/zero")
    problems = check_integrity(load_manifest(vectors), [case_id])
    assert problems == [f"{x}: case {case_id}: resolves to /dev/zero, outside the vectors directory {vectors}"]


def test_an_output_file_that_is_a_device_or_too_large_is_an_error_not_a_hang(tmp_path: Path) -> None:
    manifest = load_manifest(SMOKE_VECTORS)
    case_id = next(iter(manifest.cases))
    folder = tmp_path / "outputs" / case_id
    folder.mkdir(parents=True)
    (folder / "output.npy").symlink_to("/dev/zero")
    (folder / "h_n.npy").write_bytes(bytes(10**7))
    first = verify(manifest, tmp_path / "outputs", [case_id])[0]
    assert (
        first.verdict == Verdict.ERROR
        and first.reason == f"{folder / 'output.npy'}: case {case_id}: not a regular file"
    )
    (folder / "output.npy").unlink()
    write_outputs(tmp_path / "outputs", manifest.cases[case_id].case, load_case(manifest, case_id)[2])
    (folder / "h_n.npy").write_bytes(bytes(10**7))
    second = verify(manifest, tmp_path / "outputs", [case_id])[0]
    assert second.verdict == Verdict.ERROR and "10000000 bytes, more than this case's output can take" in second.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(cases=5), "cases: expected a list of case entries, got 5 (an integer)"),
        (lambda m: m["cases"].__setitem__(0, [1]), "case entry #1: expected a case entry (id, case, tolerance, files)"),
        (lambda m: m["cases"][0]["files"]["x"].update(sha256="zz"), "files.x: sha256: expected 64 lowercase hex"),
        (lambda m: m["cases"][0]["files"]["x"].update(bytes=-1), "files.x: bytes: expected an integer >= 0"),
        (lambda m: m["files"].pop("index.txt"), "files: missing the index.txt entry"),
    ],
)
def test_malformed_manifests_name_the_entry_and_field(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    vectors = Path(shutil.copytree(SMOKE_VECTORS, tmp_path / "smoke"))
    manifest = json.loads((vectors / MANIFEST).read_text())
    change(manifest)
    (vectors / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as raised:
        load_manifest(vectors)
    assert str(raised.value).startswith(f"{vectors / MANIFEST}: ") and message in str(raised.value)


# --- 8. structurally malformed files and modules ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("smoke = 5", "smoke: expected a [smoke] table with defaults and [[smoke.cases]], got 5 (an integer)"),
        ("[smoke]\ncases = 5", "[[smoke.cases]]: expected an array of tables, got 5 (an integer)"),
        ("[smoke]\ndefault = {}", "[smoke]: unknown key(s) default; valid keys: cases, defaults"),
        ("[smoke.defaults]\ncolour = 1", "[smoke.defaults]: unknown case field 'colour'"),
        ("[tiers]\nx = 1", "unknown key(s) tiers; valid keys: dimensions, invariants, smoke, zero_length"),
        (b"\x00\x9f\x92\x96", "not a text file (byte 0x9f at offset 1 is not UTF-8); expected a matrix file"),
        ("DIRECTORY", "is a directory, not a matrix file"),
        ("DEVICE", "not a regular file; expected a matrix file"),
    ],
)
def test_malformed_matrix_files_name_file_and_field(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "matrix.toml"
    dims = matrix.DEFAULT_MATRIX.read_text().split("# Smoke:")[0]
    if content == "DIRECTORY":
        path.mkdir()
    elif content == "DEVICE":  # /dev/zero would be read until memory runs out
        path.symlink_to("/dev/zero")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content + "\n" + dims if content.startswith("smoke =") else dims + content + "\n")
    with pytest.raises(matrix.MatrixError) as raised:
        matrix.cases("smoke", path=path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


@pytest.mark.e2e
def test_a_directory_as_the_matrix_is_a_usage_error(suite, tmp_path: Path) -> None:
    run = suite(*PLANTED[:4], "--matrix", str(tmp_path))
    assert run.returncode == 4 and f"{tmp_path}: is a directory, not a matrix file" in run.stderr and clean(run)


@pytest.mark.e2e
def test_an_adapter_module_with_a_syntax_error_is_a_usage_error(suite, tmp_path: Path) -> None:
    (tmp_path / "broken_adapter.py").write_text("def backends(:\n    pass\n")
    run = suite("--backend-module", "broken_adapter:backends", "--backends", "x", pythonpath=[tmp_path])
    assert run.returncode == 4 and clean(run), run.stdout + run.stderr
    assert "--backend-module 'broken_adapter:backends': importing 'broken_adapter' raised SyntaxError" in run.stderr


def _result_line(**changes: object) -> str:
    record = {"kind": "result", "case_id": CASE.id, "case": CASE.as_dict(), "backend": "b[cpu]", "verdict": "pass"}
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_result_line(verdict=None), ":2: result record: verdict: missing"),
        (_result_line(case_id=None), ":2: result record: case_id: missing"),
        (_result_line(verdict="wat"), ":2: result record: verdict: expected one of 'error', 'fail'"),
        (_result_line(checks="none"), ":2: result record: checks: expected a list of checks, got 'none' (a string)"),
        (_result_line(case=[1]), ":2: result record: case: expected a table, got a list [1]"),
        ('{"kind": "environment", "options": 5}', ":2: environment record: options: expected a table, got 5"),
        ('{"kind": "cross_device", "case_id": "c", "verdict": "pass"}', ":2: cross_device record: backends: missing"),
        ("[1, 2]", ":2: not a results record (no 'kind')"),
    ],
)
def test_malformed_results_records_name_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(_result_line() + "\n" + line + "\n")
    assert reports_main(["render", str(results), "-o", str(tmp_path / "r.html")]) == 2
    assert f"{results}{message}" in capsys.readouterr().err
    assert reports_main(["verdicts", str(results), str(results)]) == 2
    assert f"{results}{message}" in capsys.readouterr().err


def test_a_binary_or_directory_results_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "results.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert reports_main(["verdicts", str(binary), str(binary)]) == 2
    assert f"{binary}:1: not a text line (not UTF-8)" in capsys.readouterr().err
    assert reports_main(["verdicts", str(tmp_path), str(binary)]) == 2
    assert f"{tmp_path}: is a directory, not a results file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ([], "expected a JSON object (a report's .summary.json), got an empty list"),
        ({"schema": 7}, "summary schema 7; this renderer reads schema 1"),
        ({"schema": 1, "cells": []}, "cells: expected a table, got an empty list"),
        ({"schema": 1, "cells": {"c": {"f": {"n": "x", "passed": 0}}}}, "cells['c']['f'].n: expected an integer >= 0"),
        ({"schema": 1, "cells": {"c": {"f": {"n": 1}}}}, "cells['c']['f']: missing key(s) passed"),
        ({"schema": 1, "cross_device": {"p": {"n": 1, "passed": 1, "status": "odd"}}}, "cross_device['p'].status"),
        ("DIRECTORY", "is a directory, not a JSON summary"),
    ],
)
def test_a_compare_summary_of_the_wrong_shape_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], summary: object, message: str
) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(_result_line() + "\n")
    old = tmp_path / "old.summary.json"
    if summary == "DIRECTORY":
        old.mkdir()
    else:
        old.write_text(json.dumps(summary))
    assert reports_main(["render", str(results), "-o", str(tmp_path / "r.html"), "--compare", str(old)]) == 2
    err = capsys.readouterr().err
    assert f"{old}: " in err and message in err, err


# --- 9. time limits ------------------------------------------------------------------------------


def test_a_hung_backend_is_an_error_and_is_not_called_again() -> None:
    hung, honest = Hangs(), NumpyGru(family="honest")
    limit = TimeLimit(0.5)
    cases = matrix.cases("smoke")[:3]
    try:
        first, *later = [check(hung, case, limit=limit) for case in cases]
        assert first.verdict == Verdict.ERROR and first.reason.startswith(
            "run exceeded the per-case time limit of 0.5 s (--case-timeout); an in-process call can't be stopped, "
            "so it goes on in a background thread and this backend's later cases are not run"
        )
        assert all(r.verdict == Verdict.ERROR for r in later)
        assert later[0].reason == (
            f"not run: this backend's run on case {cases[0].id} exceeded the per-case time limit of 0.5 s "
            "(--case-timeout) and is still running in the background"
        )
        assert hung.calls == 1
        assert all(check(honest, case, limit=limit).verdict == Verdict.PASS for case in cases)
    finally:
        hung.release.set()


@pytest.mark.e2e
def test_a_hung_backend_does_not_stall_a_real_run(suite, tmp_path: Path) -> None:
    run = suite(
        "--backend-module", "hostile_backends:hangs", "--backends", "hostile-hangs,honest", "--tier", "smoke",
        "--case-timeout", "1",
    )  # fmt: skip
    assert run.returncode == 1 and clean(run)
    records = list(read_records(tmp_path / "results.jsonl"))
    assert records[0]["options"]["case_timeout_s"] == 1.0
    results = [r for r in records if r["kind"] == RESULT]
    hung = [r for r in results if r["backend"] == "hostile-hangs[cpu]"]
    smoke = len(matrix.cases("smoke")) + len(matrix.zero_length())  # the tier and the declared zero-length cases
    assert len(hung) == smoke and {r["verdict"] for r in hung} == {"error"}
    assert sum("exceeded the per-case time limit of 1 s" in r["reason"] for r in hung) == smoke
    assert all("--case-timeout 1" in r["rerun"] for r in hung)
    assert {r["verdict"] for r in results if r["backend"] == "honest[cpu]"} == {"pass"}


def test_the_time_limit_off_runs_inline() -> None:
    limit = TimeLimit(0)
    seen: list[threading.Thread] = []
    outcome = limit.call("b", "c", lambda: seen.append(threading.current_thread()) or 5)
    assert outcome.value == 5 and seen == [threading.main_thread()]


# --- the issue's inputs, tried again from a shell ------------------------------------------------


@pytest.mark.e2e
def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    """The CLIs, as a user runs them, on inputs that used to raise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    for args in (
        ["-m", "reports", "render", str(binary), "-o", str(binary)],
        ["-m", "reports", "render", str(binary), "-o", str(tmp_path / "r.html")],
        ["-m", "conformance.vectors", "verify", str(binary), str(tmp_path)],
        ["-m", "conformance.vectors", "write", "--tier", "smoke", str(binary)],
    ):
        run = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and run.stderr.startswith("error: ") and clean(run), (args, run.stderr)


def test_the_registry_knows_every_check_name_the_comparison_makes() -> None:
    """`checks` patterns are validated against CHECK_NAMES; a name compare makes but the list lacks would be refused."""
    from conformance.compare import compare
    from conformance.engine import oracle_reference
    from conformance.records import CHECK_NAMES
    from conformance.tolerance import derive

    names = set()
    for case in (CASE, replace(CASE, lengths="zero", batch=3, initial_state=True)):  # zero: h_n.zero-length
        _, inputs, expected = oracle_reference(case)
        names |= {c.name for c in compare(case, expected, expected, derive(case), inputs.lengths)}
    assert names == set(CHECK_NAMES)
