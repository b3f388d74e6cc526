"""The suite as an installed pytest plugin: the wheel, its data, its registration, and who it leaves alone.

The wheel test is what a new user does: build the wheel, install it into a fresh virtualenv, and from
an empty directory run the smoke tier with the example adapter, verify stored vectors, render a report.
The fresh virtualenv reuses this one's heavy libraries (numpy, pytest, matplotlib, ...) through a
`.pth` line added after the wheel is installed, so the test needs no network and takes seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import site
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from conformance.records import read_records

ROOT = Path(__file__).resolve().parent.parent
OUR_IMPORT_NAMES = ("conformance", "backends", "reports")
DISTRIBUTION = "gru-conformance"
SMOKE_CASES = 10  # the smoke vectors
SMOKE_RUN = SMOKE_CASES + 5  # a smoke run: its cases and the 5 declared zero-length cases every tier adds

# A Python implementation checked through the vectors verifier: the example adapter computes each case's outputs.
WRITE_OUTPUTS = """
import sys
from pathlib import Path
from conformance.vectors import load_case, load_manifest, write_outputs
from example_gru_backend.adapter import NumpyGru

manifest, gru = load_manifest(Path(sys.argv[1])), NumpyGru()
for case_id, entry in manifest.cases.items():
    weights, inputs, _ = load_case(manifest, case_id)
    write_outputs(Path(sys.argv[2]), entry.case, gru.run(entry.case, weights, inputs))
"""

# A user's own suite that happens to use the names the conformance tests are parametrized by.
UNRELATED_SUITE = """
import pytest

@pytest.mark.parametrize(("case", "backend"), [(1, 2)])
def test_their_own(case, backend):
    assert case + 1 == backend
"""


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def leaves_no_trace(directory: Path, stdout: str) -> bool:
    """No results, no report, no conformance section: what an unrelated suite must see of the plugin."""
    return not (directory / "reports").exists() and "GRU conformance" not in stdout


def build_wheel(out: Path) -> Path:
    """`pip wheel` of a copy of the sources, so no stale build/ directory of the checkout leaks in."""
    source = out / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in OUR_IMPORT_NAMES:
        shutil.copytree(ROOT / package, source / package, ignore=skip)
    shutil.rmtree(source / "reports" / "out", ignore_errors=True)
    # Offline when this environment can build (setuptools is here); otherwise pip fetches the build backend.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    ok(run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", out, source, cwd=out))
    (wheel,) = out.glob("gru_conformance-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new virtualenv holding the wheel; this environment's libraries come after it on sys.path."""
    ok(run(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent))
    python = where / "bin" / "python"
    ok(
        run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
            cwd=where,
        )
    )
    purelib = ok(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where)).strip()
    (Path(purelib) / "_reuse_heavy_libraries.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.e2e
def test_the_wheel_runs_the_suite_from_an_empty_directory(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    # What the wheel carries: the code, the declared matrix and registry, the report templates; not the
    # portable vectors (they stay in the repository), the checkout's outputs, or the tests.
    assert {"conformance/declared/matrix.toml", "conformance/declared/divergences.toml"} <= set(names)
    assert any(n.startswith("reports/templates/") for n in names)
    assert {n.split("/")[0] for n in names} == {*OUR_IMPORT_NAMES, wheel.name.split("-py3")[0] + ".dist-info"}
    assert not [n for n in names if "vectors/smoke" in n or "reports/out" in n or "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[pytest11]\nconformance.plugin = conformance.plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()

    python = fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env |= {"PYTHONPATH": str(ROOT / "examples"), "PYTHONNOUSERSITE": "1"}

    # The installed copy is the one that runs, with its packaged data.
    where = ok(
        run(python, "-c", "import conformance.matrix as m; print(m.__file__); print(m.DEFAULT_MATRIX)", cwd=work)
    )
    assert all(line.startswith(str(tmp_path / "venv")) for line in where.splitlines()), where

    # The user's other suites: options exist, nothing else happens (and the checks below see what does).
    (work / "their_tests").mkdir()
    (work / "their_tests" / "test_theirs.py").write_text(UNRELATED_SUITE)
    theirs = ok(run(python, "-m", "pytest", "their_tests", "-p", "no:cacheprovider", cwd=work, env=env))
    assert "1 passed" in theirs and leaves_no_trace(work, theirs)
    assert "--backend-module" in ok(run(python, "-m", "pytest", "--help", cwd=work, env=env))

    # 1. The smoke tier with the example adapter; default outputs under the current directory.
    suite = [python, "-m", "pytest", "--pyargs", "conformance", "--tier", "smoke", "-p", "no:cacheprovider"]
    adapter = ["--backend-module", "example_gru_backend.adapter:backends", "--backends", "numpy-example"]
    smoke = ok(run(*suite, *adapter, cwd=work, env=env))
    assert f"{SMOKE_RUN} passed" in smoke and "GRU conformance" in smoke
    results, report = work / "reports" / "out" / "results.jsonl", work / "reports" / "out" / "report.html"
    assert results.is_file() and report.is_file() and not leaves_no_trace(work, smoke)
    assert f"results: {results}" in smoke
    # Each result's one-line rerun command reruns it here, outside any checkout.
    rerun = shlex.split(next(r for r in read_records(results) if r["kind"] == "result")["rerun"])
    assert rerun[:2] == ["pytest", "conformance"] and "--pyargs" in rerun
    again = ok(run(python, "-m", *rerun, "--no-report", "--results", "rerun.jsonl", cwd=work, env=env))
    assert "1 passed" in again

    # 2. The vectors verifier, on the repository's smoke vectors and the example adapter's outputs.
    vectors = ROOT / "fixtures" / "vectors" / "smoke"
    ok(run(python, "-c", WRITE_OUTPUTS, vectors, work / "outputs", cwd=work, env=env))
    verify = [python, "-m", "conformance.vectors", "verify", vectors, work / "outputs", "--name", "numpy-example"]
    verified = ok(run(*verify, "--results", "verified.jsonl", cwd=work, env=env))
    assert f"verified {SMOKE_CASES} cases" in verified

    # 3. A report of both, as the README shows.
    page = ok(run(python, "-m", "reports", "render", results, "verified.jsonl", "-o", "both.html", cwd=work, env=env))
    assert "report: " in page and (work / "both.html").stat().st_size > 10_000


@pytest.mark.e2e
def test_another_suite_sees_only_the_options(tmp_path: Path) -> None:
    """The plugin is installed in this environment: a user's own tests run as if it weren't."""
    (tmp_path / "their_tests").mkdir()
    (tmp_path / "their_tests" / "test_theirs.py").write_text(UNRELATED_SUITE)
    theirs = ok(run(sys.executable, "-m", "pytest", "their_tests", "-p", "no:cacheprovider", cwd=tmp_path))
    assert "1 passed" in theirs and leaves_no_trace(tmp_path, theirs)
    # The counterpart: naming the suite does start a run, and the same check sees it.
    ours = run(
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "conformance",
        "--tier",
        "smoke",
        "--backends",
        "torch[cpu]",
        "--collect-only",
        "-q",
        "--no-report",
        "-p",
        "no:cacheprovider",
        cwd=tmp_path,
    )
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert not leaves_no_trace(tmp_path, ours.stdout)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "load",
    [
        pytest.param(["-p", "conformance.plugin"], id="explicit -p"),
        pytest.param(["-p", "no:conformance.plugin"], id="disabled: not run, not half-run"),
        pytest.param(["PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"], id="autoload off: the conftest loads it"),
    ],
)
def test_every_way_of_loading_registers_the_plugin_once(tmp_path: Path, load: list[str]) -> None:
    env = dict(os.environ)
    args = [a for a in load if "=" not in a]
    env |= dict(a.split("=", 1) for a in load if "=" in a)
    command = [sys.executable, "-m", "pytest", "conformance", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = run(
        *command,
        *args,
        "--tier",
        "smoke",
        "--backends",
        "torch[cpu]",
        "--no-report",
        "--results",
        tmp_path / "results.jsonl",
        cwd=ROOT,
        env=env,
    )
    if "no:conformance.plugin" in args:
        assert result.returncode == 4 and "unrecognized arguments: --tier" in result.stderr
        assert not (tmp_path / "results.jsonl").exists()
        return
    assert result.returncode == 0, result.stdout + result.stderr
    # Both quantities (test_gru, test_gru_backward) per case, plus one skip each: cross-device, invariants.
    assert f"{2 * SMOKE_RUN + 2} tests collected" in result.stdout


def providers(name: str) -> set[str]:
    return set(metadata.packages_distributions().get(name, []))


def test_our_top_level_import_names_belong_to_us_alone() -> None:
    """Generic names kept on purpose (README, "Installed use"): no installed distribution may share them."""
    assert {name: providers(name) for name in OUR_IMPORT_NAMES} == {name: {DISTRIBUTION} for name in OUR_IMPORT_NAMES}


def test_a_distribution_sharing_a_name_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart: another distribution shipping a top-level `reports` shows up as a second provider."""
    info = tmp_path / "reports_lib-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: reports-lib\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("reports\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert providers("reports") == {DISTRIBUTION, "reports-lib"}
