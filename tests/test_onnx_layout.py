"""The layout of `backends/onnx/` holds: no import cycle, and the runtime layer imports no source.

A module's layer comes from its name: `source_*` and `export_*` are the source side
(each model source, and the torch exporters' shared store); `columns` is the registry
that puts sources and runtimes together; everything else (`model_source`, `runtime`,
`column`, one module per runtime) is the runtime layer. So a new runtime is checked
as one without being listed here, and a new source must be named `source_<name>.py`.

Imports are read with `ast` from the source text (function-level imports included:
the adapters import lazily), so nothing is imported to check them. Each check also
runs on a planted package with the mistake it must catch.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "backends" / "onnx"
PACKAGE = "backends.onnx"
SOURCE_PREFIXES = ("source_", "export_")
REGISTRY = frozenset({"columns", "__init__"})


def layer(module: str) -> str:
    if module in REGISTRY:
        return "registry"
    return "source" if module.startswith(SOURCE_PREFIXES) else "runtime"


def imported_modules(path: Path, package: str, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, absolute or relative, at any depth of the file."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        if dotted == package:
            found.add("__init__")
        elif dotted.startswith(package + "."):
            found.add(dotted[len(package) + 1 :].split(".")[0])

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package (modules here sit at its top level)
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == package:  # `from backends.onnx import x`: x is a module or a name of __init__
                for alias in node.names:
                    found.add(alias.name if alias.name in modules else "__init__")
            else:
                add(target)
    return found


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    modules = {p.stem for p in package_dir.glob("*.py")}
    return {m: imported_modules(package_dir / f"{m}.py", package, modules) - {m} for m in sorted(modules)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path `[a, b, ..., a]`, or None."""
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])) is not None:
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])) is not None:
            return cycle
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Runtime-layer modules importing a source or the registry, and an `__init__` importing anything."""
    found = [
        f"{module} (runtime layer) imports {dep} ({layer(dep)})"
        for module, deps in graph.items()
        if layer(module) == "runtime"
        for dep in sorted(deps)
        if layer(dep) != "runtime"
    ]
    found += [f"__init__ imports {dep}" for dep in sorted(graph.get("__init__", ()))]
    return found


def write_package(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / "planted"
    package_dir.mkdir()
    for name, text in files.items():
        (package_dir / f"{name}.py").write_text(text, encoding="utf-8")
    return package_dir


def test_onnx_package_has_the_expected_layers() -> None:
    """Guards the other checks against reading nothing (a wrong path, a renamed package)."""
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    runtime_layer = {m for m in graph if layer(m) == "runtime"}
    sources = {m for m in graph if layer(m) == "source"}
    assert {"model_source", "runtime", "column", "ort", "reference"} <= runtime_layer, runtime_layer
    assert {"source_spec", "source_torchscript", "source_dynamo", "export_store"} <= sources, sources
    assert "column" in graph["columns"] and "source_spec" in graph["columns"]  # the registry joins both
    assert "model_source" in graph["source_spec"]  # sources import the runtime layer


def test_onnx_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph(PACKAGE_DIR, PACKAGE)) is None


def test_onnx_runtime_layer_imports_no_source() -> None:
    assert layering_violations(import_graph(PACKAGE_DIR, PACKAGE)) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    package_dir = write_package(
        tmp_path,
        {
            "__init__": "",
            "column": "from planted.runtime import Runtime\n",
            "runtime": "def lazy():\n    from . import column\n",
        },
    )
    assert find_cycle(import_graph(package_dir, "planted")) == ["column", "runtime", "column"]


def test_a_runtime_importing_a_source_is_found(tmp_path: Path) -> None:
    package_dir = write_package(
        tmp_path,
        {
            "__init__": "import planted.columns\n",
            "ort": "def run():\n    from .source_spec import SpecSource\n",
            "reference": "import planted.export_store as store\n",
            "columns": "",
            "source_spec": "from planted import ort\n",
            "export_store": "",
        },
    )
    assert layering_violations(import_graph(package_dir, "planted")) == [
        "ort (runtime layer) imports source_spec (source)",
        "reference (runtime layer) imports export_store (source)",
        "__init__ imports columns",
    ]


def test_registered_columns_keep_their_names() -> None:
    """Every source in every runtime, named `<family>/<runtime>[<device>]` as results files and reports know them."""
    from backends.onnx.columns import dynamo_backends, spec_backends, torchscript_backends

    cpu = {
        family: [f"{family}/{runtime}[cpu]" for runtime in ("ort", "reference", "openvino")]
        for family in ("onnx-spec", "onnx-torchscript", "onnx-dynamo")
    }
    for family, factory in [
        ("onnx-spec", spec_backends),
        ("onnx-torchscript", torchscript_backends),
        ("onnx-dynamo", dynamo_backends),
    ]:
        columns = list(factory())
        assert [c.name for c in columns][:3] == cpu[family]
        assert {c.family for c in columns} == {family}
        assert [c.name for c in columns[3:]] in ([], [f"{family}/ort[cuda]"])
