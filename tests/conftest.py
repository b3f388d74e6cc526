"""Shared test set-up: the example adapter and planted backends import from examples/ and tests/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "examples", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def run_suite(
    *args: str, tmp_path: Path, pythonpath: list[Path] | None = None, quantity: str | None = "forward"
) -> subprocess.CompletedProcess[str]:
    """`python -m pytest conformance ARGS` from the repo root, results kept under tmp_path.

    `--quantity forward` unless ARGS say `--quantity` or `quantity` is None (the suite's default, both):
    most end-to-end tests are about the suite's machinery (reruns, workers, hostile adapters), which the
    forward check exercises in half the time; tests of the backward check ask for it."""
    env = dict(os.environ)
    paths = [str(p) for p in (pythonpath or [])] + [str(ROOT / "examples"), str(ROOT / "tests")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "conformance", "-p", "no:cacheprovider"]
    if not any(a.startswith("--results") for a in args):
        command += ["--results", str(tmp_path / "results.jsonl")]
    if quantity is not None and not any(a.startswith("--quantity") for a in args) and _has_quantity_option():
        command += ["--quantity", quantity]
    if not any(a.startswith("--report") or a == "--no-report" for a in args):
        command += ["--no-report"] if _has_report_option() else []
    return subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _has_quantity_option() -> bool:
    from conformance import plugin

    return "--quantity" in Path(plugin.__file__).read_text(encoding="utf-8")


def _has_report_option() -> bool:
    from conformance import plugin

    return "--no-report" in Path(plugin.__file__).read_text(encoding="utf-8")


def require_mark(node: pytest.Item, mark: str, why: str) -> None:
    """Keeps the fast loop (`pytest tests -m "not e2e and not tooling"`) fast: a slow test must say it is one."""
    if node.get_closest_marker(mark) is None:
        pytest.fail(f"{node.nodeid} {why}: mark it @pytest.mark.{mark} so the fast loop leaves it out", pytrace=False)


@pytest.fixture
def suite(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    require_mark(request.node, "e2e", "runs `pytest conformance` in a subprocess (the suite fixture)")

    def run(
        *args: str, pythonpath: list[Path] | None = None, quantity: str | None = "forward"
    ) -> subprocess.CompletedProcess[str]:
        return run_suite(*args, tmp_path=tmp_path, pythonpath=pythonpath, quantity=quantity)

    return run
