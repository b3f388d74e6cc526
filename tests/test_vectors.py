"""Stored vectors: byte-identical regeneration, the verifier's verdicts, and every integrity failure.

Corruption tests work on a copy of the committed smoke tier, so each one damages
exactly one thing and checks that the error names the file and the case.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.case import Case
from conformance.data import GruOutput
from conformance.dtypes import fmt, quantize
from conformance.records import read_records, read_results
from conformance.tolerance import derive
from conformance.tolerance_backward import derive_backward
from conformance.vectors import (
    check_integrity,
    load_case,
    load_gradients,
    load_manifest,
    write,
    write_gradients,
    write_outputs,
)
from conformance.vectors.__main__ import main
from conformance.vectors.npy import read_npy
from conformance.vectors.store import MANIFEST, float_environment, is_expected, sha256

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "fixtures" / "vectors"
TIERS = ("smoke", "pairwise")
MAX_TOTAL_BYTES = 5 * 2**20
ROUNDING_WOBBLE = 16 * 2.0**-53  # below the smallest float64 tolerance of the tiers (2.3e-15)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def comparable(blob: bytes, drop_expected_hashes: bool = False) -> dict[str, Any]:
    """A manifest minus what may legitimately differ: provenance, and optionally the expected files' hashes."""
    data = json.loads(blob)
    data.pop("produced_by")
    if drop_expected_hashes:
        for entry in data["cases"]:
            for name in [n for n in entry["files"] if is_expected(n)]:
                entry["files"][name].pop("sha256")
    return data


@pytest.fixture(scope="module", params=TIERS)
def regenerated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    """(tier, committed files, the same tier written afresh), regenerated once per module."""
    tier = request.param
    fresh = write(tier, tmp_path_factory.mktemp("regenerated") / tier)
    return tier, files_of(VECTORS / tier), files_of(fresh)


def test_regeneration_reproduces_inputs_weights_and_manifest_bytes(regenerated: tuple[str, dict, dict]) -> None:
    """Data generator, tolerance derivation and writer can't drift from the committed vectors unnoticed."""
    _, committed, fresh = regenerated
    assert sorted(fresh) == sorted(committed)
    changed = [n for n in committed if n != MANIFEST and not is_expected(Path(n).stem) and committed[n] != fresh[n]]
    assert not changed, f"regenerated files differ from the committed ones: {changed[:5]}"
    assert comparable(fresh[MANIFEST], True) == comparable(committed[MANIFEST], True)


def test_regeneration_reproduces_expected_values(regenerated: tuple[str, dict, dict]) -> None:
    """Byte-identical on the float environment that wrote them; elsewhere within a few float64 roundings.

    numpy's SIMD tanh and OpenBLAS's matmul kernel depend on the CPU, so the oracle's last
    bit is a property of the machine (see store.float_environment); the check says so
    rather than fail on every other CPU, and still fails on any drift of real size.
    """
    tier, committed, fresh = regenerated
    differing = [n for n in committed if is_expected(Path(n).stem) and committed[n] != fresh[n]]
    recorded = json.loads(committed[MANIFEST])["produced_by"]["float_environment"]
    here = float_environment()
    if recorded == here:
        assert not differing, f"expected values changed on the environment that wrote them: {differing[:5]}"
        assert comparable(fresh[MANIFEST]) == comparable(committed[MANIFEST])
        return
    # Relative to the tensor's size: a gradient sums up to T*B terms and may be far from 1.
    worst = max(
        (
            float(np.max(np.abs(read_npy(committed[n]) - read_npy(fresh[n]))))
            / max(1.0, float(np.max(np.abs(read_npy(committed[n])))))
            for n in differing
        ),
        default=0.0,
    )
    assert worst <= ROUNDING_WOBBLE, f"{tier}: expected values drifted by {worst:.3g}: {differing[:5]}"
    if differing:
        pytest.skip(
            f"{tier}: {len(differing)} expected files differ by at most {worst:.2g} (float64 rounding): this machine's "
            f"float environment {here} is not the one that wrote them, {recorded}"
        )


def test_committed_vectors_are_small_and_intact() -> None:
    total = sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file())
    assert total <= MAX_TOTAL_BYTES, f"{total} bytes of vectors"
    for tier in TIERS:
        manifest = load_manifest(VECTORS / tier)
        assert manifest.data["tier"] == tier and len(manifest.cases) > 0
        assert check_integrity(manifest) == []


@pytest.mark.parametrize("tier", TIERS)
def test_manifest_tolerances_follow_the_recorded_derivation(tier: str) -> None:
    """An outside reader can recompute each atol from the manifest alone, and it equals `derive`."""
    manifest = load_manifest(VECTORS / tier)
    policy = manifest.data["tolerance_policy"]
    for entry in manifest.cases.values():
        for precision, t in entry.tolerance.items():
            assert t["method"] == policy["methods"][entry.case.dtype]
            assert t["safety"] == policy["safety"][t["method"]]
            if t["method"] == "emulated":  # the emulated error and its floor are recorded with the case
                recomputed = t["safety"] * max(t["emulated_error"], t["output_rounding"])
            else:
                recomputed = (
                    t["safety"]
                    * (
                        policy["store_roundings"] * t["unit_roundoff"]
                        + math.sqrt(t["dot_length"]) * t["accumulate_roundoff"]
                    )
                    * t["gain"]
                )
            assert recomputed == pytest.approx(t["atol"], rel=1e-12)
            assert t == derive(entry.case, precision).as_dict()
            params = policy["dtypes"][entry.case.dtype][precision]
            assert params["unit_roundoff"] == t["unit_roundoff"]
            assert params["accumulate_roundoff"] == t["accumulate_roundoff"]


@pytest.mark.parametrize("tier", TIERS)
def test_manifest_backward_tolerances_follow_the_recorded_derivation(tier: str) -> None:
    """Each gradient's atol recomputed from the recorded ingredients, and equal to `derive_backward`."""
    manifest = load_manifest(VECTORS / tier)
    policy = manifest.data["backward_tolerance_policy"]
    assert policy["source"] == "conformance/tolerance_backward.py" and "cotangent_output" in policy["loss"]
    for entry in manifest.cases.values():
        assert entry.tolerance_backward is not None and set(entry.tolerance_backward) == {"strict", "default"}
        for precision, t in entry.tolerance_backward.items():
            gain = t["gain"]
            for name, atol in t["atol"].items():
                recomputed = policy["safety"] * (
                    t["sigma_forward"] * gain["state"][name]
                    + t["sigma_adjoint"] * gain["adjoint"][name]
                    + t["sum_roundoff"] * gain["accumulation"][name]
                )
                assert max(recomputed, fmt(entry.case.dtype).tiny) == pytest.approx(atol, rel=1e-12)
            assert t == derive_backward(entry.case, precision).as_dict()
        _, expected = load_gradients(manifest, entry.case.id) or (None, {})
        assert set(expected) == set(entry.tolerance_backward["strict"]["atol"])


def test_files_are_plain_npy_that_numpy_reads_without_pickle() -> None:
    manifest = load_manifest(VECTORS / "smoke")
    bf16 = next(e for e in manifest.cases.values() if e.case.dtype == "bfloat16")
    for spec in bf16.files.values():
        path = manifest.root / spec["path"]
        blob = path.read_bytes()
        header_end = 10 + int.from_bytes(blob[8:10], "little")
        assert blob[:8] == b"\x93NUMPY\x01\x00" and header_end % 64 == 0
        array = np.load(path, allow_pickle=False)
        assert array.dtype.str == spec["descr"] and list(array.shape) == spec["shape"]
        if spec["dtype"] == "bfloat16":
            assert array.dtype == np.uint16  # raw bits; the exact values the oracle saw
    _, inputs, _ = load_case(manifest, bf16.case.id)
    assert inputs.x.dtype.name == "bfloat16"


# --- the verifier -------------------------------------------------------------------------------


@pytest.fixture
def smoke(tmp_path: Path) -> Path:
    """A private copy of the committed smoke vectors, safe to damage."""
    return Path(shutil.copytree(VECTORS / "smoke", tmp_path / "smoke"))


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """A correct implementation's outputs (no gradients): the expected values rounded to each case's dtype."""
    out = tmp_path / "outputs"
    manifest = load_manifest(VECTORS / "smoke")
    for case_id, entry in manifest.cases.items():
        _, _, expected = load_case(manifest, case_id)
        write_outputs(
            out,
            entry.case,
            GruOutput(quantize(expected.output, entry.case.dtype), quantize(expected.h_n, entry.case.dtype)),
        )
    return out


@pytest.fixture
def gradients(outputs: Path) -> Path:
    """The same implementation with a backward pass: the expected gradients rounded to each case's dtype, too."""
    manifest = load_manifest(VECTORS / "smoke")
    for case_id, entry in manifest.cases.items():
        _, expected = load_gradients(manifest, case_id) or (None, {})
        write_gradients(outputs, entry.case, {k: quantize(v, entry.case.dtype) for k, v in expected.items()})
    return outputs


def first_case(root: Path, dtype: str | None = None, packed: bool | None = None) -> Case:
    for entry in load_manifest(root).cases.values():
        if (dtype is None or entry.case.dtype == dtype) and (packed is None or entry.case.packed == packed):
            return entry.case
    raise AssertionError("no such case in the vectors")


def verify(*args: str | Path) -> int:
    return main(["verify", *(str(a) for a in args)])


def test_correct_outputs_pass_and_results_follow_the_suite_schema(
    smoke: Path, outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.jsonl"
    assert verify(smoke, outputs, "--name", "my-gru[cpu]", "--device", "cpu", "--results", results) == 0
    out = capsys.readouterr().out
    assert "verdicts: 10 pass, 10 unsupported" in out  # no grad_*.npy: the backward pass isn't checked
    records = list(read_records(results))
    assert [r["kind"] for r in records][:2] == ["environment", "backend"] and records[-1]["kind"] == "end"
    assert records[-1]["counts"] == {"pass": 10, "unsupported": 10} and records[-1]["exitstatus"] == 0
    assert records[0]["options"]["cases"] == 10 and records[0]["options"]["quantity"] == "both"
    parsed = read_results([results])
    assert len(parsed) == 20 and {r.backend for r in parsed} == {"my-gru[cpu]"}
    forward = [r for r in parsed if r.quantity == "forward"]
    backward = [r for r in parsed if r.quantity == "backward"]
    assert len(forward) == len(backward) == 10
    assert all(r.reference == str(smoke) and r.tolerance and r.checks for r in forward)
    assert all(f"--case {r.case.id} --quantity forward" in r.rerun for r in forward)
    assert all(r.verdict.value == "unsupported" and "no gradients provided" in r.reason for r in backward)
    assert all(f"--case {r.case.id} --quantity backward" in r.rerun for r in backward)


def test_correct_gradients_pass(smoke: Path, gradients: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify(smoke, gradients) == 0
    out = capsys.readouterr().out
    assert "verdicts: 20 pass" in out
    assert verify(smoke, gradients, "--quantity", "backward") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("I")]
    assert len(lines) == 10 and all(" backward " in line and " pass " in line for line in lines)


def planted_gradient(root: Path, outputs: Path, factor: float, name: str = "weight_hh_l0") -> tuple[Case, Path]:
    """Add `factor` times the stored atol to one element of a float64 case's gradient `name`."""
    manifest = load_manifest(root)
    entry = next(e for e in manifest.cases.values() if e.case.dtype == "float64" and e.case.seq_len > 1)
    _, expected = load_gradients(manifest, entry.case.id) or (None, {})
    assert entry.tolerance_backward is not None
    atol = entry.tolerance_backward["strict"]["atol"][name]
    wrong = dict(expected)
    wrong[name] = np.array(expected[name])
    wrong[name][(1,) * wrong[name].ndim] += factor * atol
    write_gradients(outputs, entry.case, wrong)
    return entry.case, outputs / entry.case.id / f"grad_{name}.npy"


@pytest.mark.parametrize("factor, verdict", [(0.5, "pass"), (1.5, "fail")])
def test_the_verifier_holds_each_gradients_stored_tolerance(
    smoke: Path, gradients: Path, factor: float, verdict: str
) -> None:
    """1.5 atol at one element of one gradient fails, 0.5 passes: the stored per-tensor atol, not a looser one."""
    from conformance.vectors.verify import verify_case_backward

    case, _ = planted_gradient(smoke, gradients, factor)
    result = verify_case_backward(load_manifest(smoke), gradients, case.id)
    assert result.verdict.value == verdict, result.reason
    assert result.worst_headroom == pytest.approx(factor, rel=0.02)


def test_a_planted_wrong_gradient_fails_naming_file_case_and_element(
    smoke: Path, gradients: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case, path = planted_gradient(smoke, gradients, 3.0)
    assert verify(smoke, gradients) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(case.id) and " backward " in line)
    assert (
        " fail " in line
        and f"{path}: case {case.id}: grad weight_hh_l0: worst element at [gate=r, row=1, column=1]" in line
    )
    assert "verdicts: 1 fail, 19 pass" in out


def test_a_missing_gradient_among_others_fails_and_none_at_all_is_unsupported(
    smoke: Path, gradients: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke, "float32")
    (gradients / case.id / "grad_weight_ih_l0.npy").unlink()
    other = first_case(smoke, "float64")
    for path in (gradients / other.id).glob("grad_*.npy"):
        path.unlink()
    assert verify(smoke, gradients) == 1
    out = capsys.readouterr().out
    missing = next(line for line in out.splitlines() if line.startswith(case.id) and " backward " in line)
    assert " fail " in missing and "grad weight_ih_l0: missing" in missing
    none = next(line for line in out.splitlines() if line.startswith(other.id) and " backward " in line)
    assert " unsupported " in none and "no gradients provided" in none


def test_version_1_vectors_still_verify_their_outputs_and_skip_gradients(
    smoke: Path, gradients: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Vectors written before the backward check (schema_version 1) keep working for the forward check."""
    manifest = json.loads((smoke / MANIFEST).read_text())
    manifest["schema_version"] = 1
    manifest.pop("backward_tolerance_policy")
    for entry in manifest["cases"]:
        entry.pop("tolerance_backward")
        for name in [n for n in entry["files"] if n.startswith(("cotangent_", "expected_grad_"))]:
            (smoke / entry["files"].pop(name)["path"]).unlink()
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    assert verify(smoke, gradients) == 0
    out = capsys.readouterr().out
    assert "verdicts: 10 pass, 10 skipped" in out and "holds no expected gradients (schema_version 1)" in out
    with_backward = json.loads((VECTORS / "smoke" / MANIFEST).read_text())
    manifest["cases"][0]["tolerance_backward"] = with_backward["cases"][0]["tolerance_backward"]
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    assert verify(smoke, gradients) == 2  # a version 1 manifest can't hold version 2 keys
    assert "unknown key(s) tolerance_backward" in capsys.readouterr().err


def test_planted_wrong_output_fails_naming_file_case_and_element(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke, "float32", packed=False)
    path = outputs / case.id / "output.npy"
    array = read_npy(path.read_bytes()).copy()
    atol = load_manifest(smoke).entry(case.id).tolerance["strict"]["atol"]
    array[2, 1, 3] += 3 * atol  # just beyond tolerance: the verifier uses the stored atol, not a loose one
    write_outputs(outputs, case, GruOutput(array, read_npy((outputs / case.id / "h_n.npy").read_bytes())))
    assert verify(smoke, outputs) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(case.id))
    assert " fail " in line and str(path) in line and f"case {case.id}" in line
    assert "worst element at [step=2, batch=1, unit=3]" in line
    assert "verdicts: 1 fail, 9 pass, 10 unsupported" in out


def test_output_of_wrong_shape_fails_naming_file_and_case(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke, "float32")
    h_n = read_npy((outputs / case.id / "h_n.npy").read_bytes())
    write_outputs(outputs, case, GruOutput(read_npy((outputs / case.id / "output.npy").read_bytes()), h_n[:, :1]))
    assert verify(smoke, outputs) == 1
    out = capsys.readouterr().out
    assert f"{outputs / case.id / 'h_n.npy'}: case {case.id}: h_n shape: expected" in out


def test_output_of_wrong_dtype_fails_naming_file_and_case(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke, "bfloat16")
    folder = outputs / case.id
    as_float32 = read_npy((folder / "output.npy").read_bytes()).view(np.uint16).astype(np.uint32) << 16
    np.save(folder / "output.npy", as_float32.view(np.float32))  # right values, but float32 instead of bfloat16
    assert verify(smoke, outputs) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'output.npy'}: case {case.id}: output dtype: expected bfloat16, got float32" in out


def test_truncated_output_is_an_error_naming_file_and_case(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke)
    path = outputs / case.id / "h_n.npy"
    path.write_bytes(path.read_bytes()[:-5])
    assert verify(smoke, outputs) == 1
    out = capsys.readouterr().out
    assert f"{path}: case {case.id}: truncated" in out and " error " in out


def test_missing_output_case_is_an_error_naming_file_and_case(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke)
    shutil.rmtree(outputs / case.id)
    assert verify(smoke, outputs) == 1
    assert f"{outputs / case.id / 'output.npy'}: case {case.id}: output file is missing" in capsys.readouterr().out


def test_pickled_output_is_refused_and_never_unpickled(
    smoke: Path, outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sentinel = tmp_path / "unpickled"
    case = first_case(smoke)
    path = outputs / case.id / "output.npy"
    np.save(path, np.array([_Tripwire(str(sentinel))], dtype=object), allow_pickle=True)
    assert verify(smoke, outputs) == 1
    assert f"{path}: case {case.id}: refusing dtype '|O'" in capsys.readouterr().out
    assert not sentinel.exists()


class _Tripwire:
    """Unpickling this creates a file: proof that nothing was unpickled if the file is absent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_declared_unsupported_case_is_not_a_failure(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke, "float16")
    shutil.rmtree(outputs / case.id)
    (outputs / case.id).mkdir()
    (outputs / case.id / "unsupported.txt").write_text("no float16 kernels\n")
    assert verify(smoke, outputs) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(case.id))
    assert "unsupported" in line and "no float16 kernels" in line


def test_case_option_selects_and_rejects_unknown_ids(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = first_case(smoke)
    assert verify(smoke, outputs, "--case", case.id) == 0
    assert "verdicts: 1 pass, 1 unsupported" in capsys.readouterr().out
    other = Case.from_id(case.id.replace("-s0", "-s7"))
    assert verify(smoke, outputs, "--case", other.id) == 2
    assert f"case {other.id} is not in these vectors" in capsys.readouterr().err


# --- integrity of the vectors themselves: each corruption stops verification (exit 2) -------------


def damage(root: Path, case: Case, name: str, how: str) -> Path:
    path = root / case.id / f"{name}.npy"
    blob = bytearray(path.read_bytes())
    if how == "flip":
        blob[-1] ^= 0x01
    elif how == "truncate":
        del blob[-8:]
    path.write_bytes(bytes(blob))
    return path


def test_vector_file_with_wrong_hash(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = first_case(smoke)
    path = damage(smoke, case, "weight_hh_l0", "flip")
    assert verify(smoke, outputs) == 2
    assert f"{path}: case {case.id}: sha256 mismatch" in capsys.readouterr().err


def test_truncated_vector_file(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = first_case(smoke)
    path = damage(smoke, case, "expected_output", "truncate")
    assert verify(smoke, outputs) == 2
    assert f"{path}: case {case.id}: truncated" in capsys.readouterr().err


def test_truncated_file_with_matching_manifest_is_still_caught(
    smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone 'fixes' the manifest after truncating: the .npy header still betrays the lost data."""
    case = first_case(smoke)
    path = damage(smoke, case, "x", "truncate")
    manifest = json.loads((smoke / MANIFEST).read_text())
    spec = next(e for e in manifest["cases"] if e["id"] == case.id)["files"]["x"]
    spec["bytes"], spec["sha256"] = path.stat().st_size, sha256(path.read_bytes())
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    assert verify(smoke, outputs) == 2
    assert f"{path}: case {case.id}: truncated: shape" in capsys.readouterr().err


def test_unknown_schema_version(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((smoke / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    assert verify(smoke, outputs) == 2
    assert f"{smoke / MANIFEST}: unknown schema_version 99" in capsys.readouterr().err


def test_missing_vector_case(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = first_case(smoke, packed=True)
    shutil.rmtree(smoke / case.id)
    assert verify(smoke, outputs) == 2
    err = capsys.readouterr().err
    assert f"{smoke / case.id}/" in err and f"case {case.id}: file is missing" in err


def test_tampered_index(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = smoke / "index.txt"
    index.write_text(index.read_text().replace("atol=", "atol=1", 1))
    assert verify(smoke, outputs) == 2
    assert f"{index}: vectors index:" in capsys.readouterr().err


def test_truncated_manifest(smoke: Path, outputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = smoke / MANIFEST
    path.write_bytes(path.read_bytes()[:1000])
    assert verify(smoke, outputs) == 2
    assert f"{path}: not valid JSON" in capsys.readouterr().err


def test_manifest_reader_never_uses_pickle(monkeypatch: pytest.MonkeyPatch, smoke: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    manifest = load_manifest(smoke)
    assert check_integrity(manifest) == []


# --- pytest conformance --vectors -----------------------------------------------------------------

EXAMPLE = ("--backend-module", "example_gru_backend.adapter:backends", "--backends", "numpy-example")


@pytest.mark.e2e
def test_suite_runs_against_stored_vectors(suite, tmp_path: Path) -> None:
    vectors = str(VECTORS / "smoke")
    run = suite(*EXAMPLE, "--vectors", vectors)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "10 passed" in run.stdout
    results = [r for r in read_records(tmp_path / "results.jsonl") if r["kind"] == "result"]
    assert len(results) == 10 and {r["reference"] for r in results} == {vectors}
    assert all(r["rerun"].endswith(f"--vectors {vectors}") for r in results)


@pytest.mark.e2e
def test_suite_takes_expected_values_from_the_vectors(suite, smoke: Path, tmp_path: Path) -> None:
    """Change one stored expected value (and re-hash it): the suite must now fail that case, and only it."""
    case = first_case(smoke, "float32", packed=False)
    path = smoke / case.id / "expected_h_n.npy"
    blob = bytearray(path.read_bytes())
    blob[-8:] = np.float64(0.5).tobytes()
    path.write_bytes(bytes(blob))
    manifest = json.loads((smoke / MANIFEST).read_text())
    next(e for e in manifest["cases"] if e["id"] == case.id)["files"]["expected_h_n"]["sha256"] = sha256(bytes(blob))
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    run = suite(*EXAMPLE, "--vectors", str(smoke))
    assert run.returncode == 1 and "9 passed" in run.stdout and "1 failed" in run.stdout
    assert case.id in run.stdout and f"--vectors {smoke}" in run.stdout
    chosen = suite(*EXAMPLE, "--vectors", str(smoke), "--case", first_case(smoke, "float64").id)
    assert chosen.returncode == 0 and "1 passed" in chosen.stdout


@pytest.mark.e2e
def test_suite_refuses_damaged_vectors(suite, smoke: Path) -> None:
    case = first_case(smoke)
    path = damage(smoke, case, "x", "flip")
    run = suite(*EXAMPLE, "--vectors", str(smoke))
    assert run.returncode == 4
    assert f"{path}: case {case.id}: sha256 mismatch" in run.stderr


@pytest.mark.e2e
def test_the_backward_check_runs_from_stored_gradients(suite, smoke: Path, tmp_path: Path) -> None:
    """torch's gradients against the stored ones; one stored gradient changed (and re-hashed) fails that case only."""
    pytest.importorskip("torch")
    run = suite("--backends", "torch", "--vectors", str(smoke), "--quantity", "backward")
    assert run.returncode == 0 and "10 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    results = [r for r in read_records(tmp_path / "results.jsonl") if r["kind"] == "result"]
    assert len(results) == 10 and {(r["quantity"], r["reference"]) for r in results} == {("backward", str(smoke))}
    case = first_case(smoke, "float32", packed=True)
    path = smoke / case.id / "expected_grad_weight_hh_l0.npy"
    blob = bytearray(path.read_bytes())
    blob[-8:] = np.float64(0.5).tobytes()
    path.write_bytes(bytes(blob))
    manifest = json.loads((smoke / MANIFEST).read_text())
    spec = next(e for e in manifest["cases"] if e["id"] == case.id)["files"]["expected_grad_weight_hh_l0"]
    spec["sha256"] = sha256(bytes(blob))
    (smoke / MANIFEST).write_text(json.dumps(manifest))
    run = suite("--backends", "torch", "--vectors", str(smoke), "--quantity", "backward")
    assert run.returncode == 1 and "9 passed" in run.stdout and "1 failed" in run.stdout
    assert f"test_gru_backward[torch[cpu]-{case.id}]" in run.stdout and "grad weight_hh_l0: worst element" in run.stdout
    assert f"--quantity backward --case {case.id} --vectors {smoke}" in run.stdout
