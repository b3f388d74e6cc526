"""Dependencies point one way: the core owns the contract, adapters import the core, never the reverse.

Two rules, each checked by reading the code and each with a planted violation the check must see:
- no module under `conformance/` imports `backends` or `reports`, except `conformance/plugin.py`, the one
  place where the core, backend selection and report rendering meet, importing the report renderer;
- rendering a report loads no numerical core (`conformance.oracle`, `.compare`, `.tolerance`, `.data`)
  and no backend: `reports/` reads records, it doesn't recompute them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conformance.case import Case
from conformance.records import Result
from conformance.verdict import Verdict

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {("conformance/plugin.py", "reports.render")}
NUMERICAL = ("conformance.oracle", "conformance.compare", "conformance.tolerance", "conformance.data", "backends")


def imported_modules(source: str) -> set[str]:
    """Every module an import statement names, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def core_violations(files: dict[str, str]) -> list[str]:
    """`path: module` for every import of `backends` or `reports` from the core that isn't allowed."""
    bad = []
    for path, source in sorted(files.items()):
        for module in sorted(imported_modules(source)):
            top = module.split(".")[0]
            if (
                top in ("backends", "reports")
                and (path, module) not in ALLOWED
                and (path, module.rsplit(".", 1)[0]) not in ALLOWED
            ):
                bad.append(f"{path}: {module}")
    return bad


def core_files() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in (ROOT / "conformance").rglob("*.py")}


def test_the_core_imports_no_adapter_and_no_report() -> None:
    assert core_violations(core_files()) == []


def test_a_planted_core_import_of_an_adapter_is_seen() -> None:
    planted = core_files() | {
        "conformance/engine.py": "def f():\n    from backends.torch_eager import TorchGru\n",
        "conformance/summary.py": "import reports.html\n",
    }
    assert core_violations(planted) == [
        "conformance/engine.py: backends.torch_eager",
        "conformance/engine.py: backends.torch_eager.TorchGru",
        "conformance/summary.py: reports.html",
    ]


PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in sys.modules if m.startswith({numerical!r}))))
"""


def loaded_after(body: str) -> list[str]:
    """The numerical or backend modules a fresh interpreter has loaded after running `body`."""
    script = PROBE.format(body=body, numerical=NUMERICAL)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rendering_a_report_loads_no_numerical_core_and_no_backend(tmp_path: Path) -> None:
    case = Case(3, 4)
    record = Result(case, "torch[cpu]", "torch", "cpu", Verdict.PASS).as_record() | {"run_id": "r", "worker": "main"}
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(record) + "\n", encoding="utf-8")
    body = (
        "from pathlib import Path\nfrom reports.render import render\n"
        f"render([Path({str(results)!r})], Path({str(tmp_path / 'report.html')!r}))"
    )
    assert loaded_after(body) == []
    assert (tmp_path / "report.html").stat().st_size > 0


def test_the_probe_sees_a_numerical_import() -> None:
    assert "conformance.oracle" in loaded_after("import conformance.engine")


def test_adapters_written_against_backends_base_keep_working() -> None:
    """`backends/base.py` is a thin re-export: the same objects, so an old adapter is a real Backend."""
    import backends.base as old
    import conformance.contract as contract

    for name in old.__all__:
        assert getattr(old, name) is getattr(contract, name), name
    from example_gru_backend.adapter import NumpyGru  # written against backends.base, unchanged

    assert isinstance(NumpyGru(), contract.Backend)
