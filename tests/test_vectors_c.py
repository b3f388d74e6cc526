"""The C example reader: compiled here, run on the committed vectors, and shown to catch a wrong expected value.

It recomputes every case in double precision, so beyond "within atol" it must agree
with the float64 oracle to rounding; that proves it read every tensor (a misread
weight would still pass a loose bfloat16 atol, never 1e-12).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conformance.vectors import load_manifest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "fixtures" / "reader_c" / "gru_vectors.c"
VECTORS = ROOT / "fixtures" / "vectors"
FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
LINE = re.compile(r"^(PASS|FAIL) (\S+) (\S+) max_abs_err=(\S+) atol=(\S+)$")

pytestmark = pytest.mark.tooling


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler on PATH")
    binary = tmp_path_factory.mktemp("reader_c") / "gru_vectors"
    build = subprocess.run(
        [compiler, *FLAGS, "-o", str(binary), str(SOURCE), "-lm"],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    return binary


@pytest.mark.parametrize("tier", ["smoke", "pairwise"])
def test_c_reader_agrees_with_every_case(reader: Path, tier: str) -> None:
    run = subprocess.run([str(reader), str(VECTORS / tier)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    checked = {}
    for line in run.stdout.splitlines()[:-1]:
        verdict, case_id, _, err, _ = LINE.match(line).groups()  # type: ignore[union-attr]
        assert verdict == "PASS"
        checked[case_id] = float(err)
    manifest = load_manifest(VECTORS / tier)
    assert sorted(checked) == sorted(manifest.cases)
    assert max(checked.values()) < 1e-12


def test_c_reader_catches_a_wrong_expected_value(reader: Path, tmp_path: Path) -> None:
    vectors = Path(shutil.copytree(VECTORS / "smoke", tmp_path / "smoke"))
    case_id = next(iter(load_manifest(vectors).cases))
    path = vectors / case_id / "expected_output.npy"
    blob = bytearray(path.read_bytes())
    blob[-8:] = (np.frombuffer(bytes(blob[-8:]), "<f8") + 1e-3).tobytes()
    path.write_bytes(bytes(blob))
    run = subprocess.run([str(reader), str(vectors), case_id], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.startswith(f"FAIL {case_id} ") and "1 cases, 1 failed" in run.stdout


def test_c_reader_names_a_truncated_file(reader: Path, tmp_path: Path) -> None:
    vectors = Path(shutil.copytree(VECTORS / "smoke", tmp_path / "smoke"))
    case_id = next(iter(load_manifest(vectors).cases))
    path = vectors / case_id / "x.npy"
    path.write_bytes(path.read_bytes()[:-4])
    run = subprocess.run([str(reader), str(vectors), case_id], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and f"{path}: truncated data" in run.stderr
