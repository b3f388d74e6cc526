"""The repository lints clean (ruff) and type-checks clean (mypy on the library packages).

Each tool runs as a subprocess of this interpreter, with the repository's own
configuration (pyproject.toml). Each also gets a planted mistake in a module written
to a temporary directory, checked the same way, so a check that silently inspects
nothing (wrong path, wrong config, a swallowed exit status) fails here instead of
passing. Nothing is written into the repository except the tools' gitignored caches.

Both tools come with the `dev` extra (`pip install -e '.[dev]'`); without them the
tests skip, saying so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
MYPY_TARGETS = ("conformance", "backends", "reports")

pytestmark = pytest.mark.tooling

PLANTED_TYPE_ERROR = """\
def double(x: int) -> int:
    return x * 2


label: str = double(3)
"""

PLANTED_LINT_ERROR = """\
import os


def double(x: int) -> int:
    return x * 2
"""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{module} is not installed in {sys.executable} (it comes with the dev extra: pip install -e '.[dev]')"
        )


def _ruff(*targets: str | Path) -> subprocess.CompletedProcess[str]:
    _require("ruff")
    command = [
        sys.executable,
        "-m",
        "ruff",
        "check",
        "--no-cache",
        "--output-format",
        "concise",
        "--config",
        str(CONFIG),
        *map(str, targets),
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _mypy(*targets: str | Path, cache_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    _require("mypy")
    command = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    return subprocess.run([*command, *map(str, targets)], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_check_passes() -> None:
    result = _ruff(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_a_planted_error(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED_LINT_ERROR)
    result = _ruff(planted)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "planted.py:1:8: F401" in result.stdout, result.stdout + result.stderr


def test_mypy_passes() -> None:
    # The default cache (.mypy_cache in the repository root, gitignored) keeps repeat runs fast.
    result = _mypy(*MYPY_TARGETS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found"), result.stdout + result.stderr


def test_mypy_reports_a_planted_error(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED_TYPE_ERROR)
    result = _mypy(planted, cache_dir=tmp_path / "mypy_cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "planted.py:5: error: Incompatible types in assignment" in result.stdout, result.stdout + result.stderr
    assert "[assignment]" in result.stdout
