"""`pytest conformance` end to end: plug-in paths, failure messages, reruns, bad options, results file."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conformance import matrix
from conformance.records import read_records

# A smoke run: the smoke cases plus the declared zero-length cases every tier adds (smoke runs no invariant).
SMOKE_RUN = len(matrix.cases("smoke")) + len(matrix.zero_length())


@pytest.mark.e2e
def test_example_adapter_loads_through_backend_module(suite, tmp_path: Path) -> None:
    run = suite(
        "--backend-module", "example_gru_backend.adapter:backends", "--backends", "numpy-example", "--tier", "smoke"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{SMOKE_RUN} passed" in run.stdout
    records = list(read_records(tmp_path / "results.jsonl"))
    assert records[0]["kind"] == "environment" and records[-1]["kind"] == "end"
    results = [r for r in records if r["kind"] == "result"]
    assert len(results) == SMOKE_RUN and {r["backend"] for r in results} == {"numpy-example[cpu]"}
    assert all(r["verdict"] == "pass" and r["tolerance"]["atol"] > 0 for r in results)


@pytest.mark.e2e
def test_example_adapter_loads_through_an_entry_point(suite, tmp_path: Path) -> None:
    """A real distribution's entry point (a dist-info on the path), as `pip install` would create."""
    site = tmp_path / "site"
    dist = site / "example_gru_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: example-gru-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[gru_conformance.backends]\nnumpy-example = example_gru_backend.adapter:backends\n"
    )
    run = suite("--backends", "numpy-example", "--tier", "smoke", pythonpath=[site])
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{SMOKE_RUN} passed" in run.stdout
    # without the distribution the family is unknown, and the error lists what is known
    missing = suite("--backends", "numpy-example", "--tier", "smoke")
    assert missing.returncode == 4 and "unknown backend(s): numpy-example" in missing.stderr


@pytest.mark.e2e
def test_a_failure_explains_itself_and_its_rerun_command_reruns_exactly_it(suite, tmp_path: Path) -> None:
    run = suite("--backend-module", "planted_backends:swapped_rz", "--backends", "planted-swap-rz", "--tier", "smoke")
    assert run.returncode == 1
    assert f"{SMOKE_RUN} failed" in run.stdout
    assert "output: worst element at [step=" in run.stdout and "abs err" in run.stdout and "ULP" in run.stdout
    assert "h_n: worst element at [layer=0, direction=forward, batch=" in run.stdout
    rerun = next(line.split("rerun: ", 1)[1] for line in run.stdout.splitlines() if "rerun: pytest conformance" in line)
    args = shlex.split(rerun)
    assert args[:2] == ["pytest", "conformance"]
    again = suite(*args[2:], "--backend-module", "planted_backends:swapped_rz")
    assert again.returncode == 1 and "1 failed" in again.stdout
    case_id = args[args.index("--case") + 1]
    assert case_id in again.stdout


@pytest.mark.e2e
def test_k_selects_by_readable_id(suite) -> None:
    run = suite("--backends", "torch", "--tier", "smoke", "-k", "bi and unsorted", "--collect-only", "-q")
    assert run.returncode == 0, run.stderr
    ids = [line for line in run.stdout.splitlines() if "::test_gru[" in line]
    assert ids and all("-bi-" in i and "-unsorted-" in i for i in ids)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "tensorflow"], "unknown backend(s): tensorflow. Valid families: "),
        (["--tier", "huge"], "unknown tier 'huge'; valid tiers: smoke, pairwise, triples, full"),
        (["--device", "tpu"], "unknown device 'tpu'; valid devices: cpu, cuda, all"),
        (["--precision", "fast"], "unknown mode 'fast'; valid: strict, default"),
        (["--case", "I4H8-nonsense"], "not a case id: 'I4H8-nonsense'"),
        (["--backend-module", "nowhere"], "expected the form 'pkg.module:factory'"),
        (["--backend-module", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["--backend-module", "example_gru_backend.adapter:nope"], "has no attribute 'nope'"),
        (["--quantity", "gradients"], "argument --quantity: invalid choice: 'gradients'"),  # quoting varies
    ],
)
def test_bad_options_exit_4_with_the_valid_choices(suite, args: list[str], message: str) -> None:
    run = suite(*args)
    assert run.returncode == 4, run.stdout + run.stderr
    assert message in run.stderr


@pytest.mark.e2e
def test_bad_files_exit_4_naming_the_file(suite, tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text("[dimensions]\nbatch = [1, 'two']\n")
    run = suite("--matrix", str(matrix))
    assert run.returncode == 4 and str(matrix) in run.stderr
    registry = tmp_path / "divergences.toml"
    registry.write_text('[[divergence]]\nid = "x"\nbackends = ["torch*"]\nreason = "r"\nwhen = { colour = [1] }\n')
    run = suite("--divergences", str(registry), "--tier", "smoke")
    assert run.returncode == 4 and "unknown case field(s) colour" in run.stderr


def test_results_are_appended_as_they_finish_and_a_torn_line_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    good = {"kind": "result", "case_id": "c", "backend": "b[cpu]", "verdict": "pass"}
    path.write_text(json.dumps(good) + "\n" + '{"kind": "result", "verd')  # a crash mid-write
    assert list(read_records(path)) == [good]
    path.write_text("garbage\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1: not a JSON line"):
        list(read_records(path))


@pytest.mark.e2e
def test_one_run_checks_both_quantities_and_each_rerun_reproduces_exactly_one(suite, tmp_path: Path) -> None:
    """By default a run checks outputs and gradients; each result says which, and its rerun runs that alone."""
    planted = ("--backend-module", "planted_backward:detached_h0")
    run = suite(*planted, "--backends", "planted-grad-detached-h0", "--tier", "smoke", "-rA", quantity=None)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    records = list(read_records(tmp_path / "results.jsonl"))
    assert records[0]["options"]["quantity"] == "both"
    results = [r for r in records if r["kind"] == "result"]
    forward = [r for r in results if r["quantity"] == "forward"]
    backward = [r for r in results if r["quantity"] == "backward"]
    assert len(forward) == len(backward) == len(matrix.cases("smoke")) + len(matrix.zero_length())
    # torch (under the planted adapter) refuses an item of length 0: the zero-length cases are unsupported
    zero = [r for r in forward if r["case"]["lengths"] == "zero"]
    assert {r["verdict"] for r in zero} == {"unsupported"} and {r["verdict"] for r in forward if r not in zero} == {
        "pass"
    }
    failing = [r for r in backward if r["verdict"] == "fail"]
    assert failing and all(r["case"]["initial_state"] for r in failing)  # only h0's gradient is wrong
    assert all("grad h0: worst element at [layer=" in r["reason"] for r in failing)
    assert (
        f"FAILED conformance/test_gru.py::test_gru_backward[planted-grad-detached-h0[cpu]-{failing[0]['case_id']}]"
        in (run.stdout)
    )
    assert f"PASSED conformance/test_gru.py::test_gru[planted-grad-detached-h0[cpu]-{failing[0]['case_id']}]" in (
        run.stdout
    )
    rows = [line.split()[:2] for line in run.stdout.splitlines() if line.startswith("planted-grad-detached-h0[cpu]")]
    tests = str(len(matrix.cases("smoke")) + len(matrix.zero_length()))
    assert rows == [["planted-grad-detached-h0[cpu]", tests], ["planted-grad-detached-h0[cpu]", "(backward)"]]
    for record, verdict in ((failing[0], "fail"), (forward[0], "pass")):
        args = shlex.split(record["rerun"])
        assert args[:2] == ["pytest", "conformance"] and args[args.index("--quantity") + 1] == record["quantity"]
        again_path = tmp_path / f"again-{record['quantity']}.jsonl"
        again = suite(*args[2:], "--results", str(again_path), pythonpath=None)
        (rerun,) = [r for r in read_records(again_path) if r["kind"] == "result"]
        assert (rerun["case_id"], rerun["quantity"], rerun["verdict"]) == (
            record["case_id"],
            record["quantity"],
            verdict,
        )
        assert again.returncode == (1 if verdict == "fail" else 0)
