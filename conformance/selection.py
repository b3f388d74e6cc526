"""Finding backends: built-in and third-party families through one entry-point group,
plus `--backend-module pkg.module:factory` for adapters that aren't installed packages.

A family is only instantiated when selected, so asking for `torch` never imports jax.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from importlib import metadata

from conformance.contract import PRECISIONS, Backend, configure
from conformance.names import matches
from conformance.out_of_process import in_worker

ENTRY_POINT_GROUP = "gru_conformance.backends"
DEVICES = ("cpu", "cuda", "all")


class SelectionError(ValueError):
    """Unknown backend, bad module spec, or a factory that returned something else."""


class EntryPointFactory:
    """An entry point's factory, imported only when the family is selected; `origin` says where it comes from."""

    def __init__(self, ep: metadata.EntryPoint) -> None:
        self.ep = ep
        self.origin = f"entry point {ep.name} = {ep.value}"

    def __call__(self) -> Iterable[Backend]:
        return self.ep.load()()  # type: ignore[no-any-return]


def entry_point_families() -> dict[str, Callable[[], Iterable[Backend]]]:
    return {ep.name: EntryPointFactory(ep) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_factory(spec: str) -> Callable[[], Iterable[Backend]]:
    """`pkg.module:factory` -> the factory; errors say which part is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SelectionError(f"--backend-module {spec!r}: expected the form 'pkg.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SelectionError(f"--backend-module {spec!r}: cannot import {module_name!r}: {error}") from None
    except Exception as error:  # a syntax error, or the module raising while it is imported
        raise SelectionError(
            f"--backend-module {spec!r}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise SelectionError(f"--backend-module {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise SelectionError(f"--backend-module {spec!r}: {attr!r} is not callable")
    return factory


_NAME = re.compile(r"[^\[\]\s]+\[([^\[\]\s]+)\]")


def name_problem(name: object, device: object) -> str | None:
    """Why a backend name is malformed, or None. A name is `family[column]`, the column being the device
    (`cpu`, `cuda+default`): the report, `--backends` and the cross-device pairing read it from there."""
    if not isinstance(name, str) or not isinstance(device, str) or not device:
        return f"name and device must be non-empty strings, got name {name!r}, device {device!r}"
    found = _NAME.fullmatch(name)
    if found is None:
        return (
            f"expected the form family[device], e.g. 'mylib[{device}]' (BaseBackend builds it from family and device)"
        )
    column = found.group(1)
    if column != device and not column.startswith(device + "+"):
        return (
            f"the part in brackets, {column!r}, must be the device {device!r} (then '+precision' outside strict mode)"
        )
    return None


def _instantiate(
    family: str, factory: Callable[[], Iterable[Backend]], precision: str = "strict", origin: str = ""
) -> list[Backend]:
    """The family's backends, each put into the precision mode before anything reads its name."""
    where = f"backend family {family!r}" + (f" ({origin})" if origin else "")
    try:
        backends = list(factory())
    except SelectionError:
        raise
    except Exception as error:
        raise SelectionError(f"{where} failed to load: {type(error).__name__}: {error}") from error
    for backend in backends:
        try:
            conforms = isinstance(backend, Backend)
            if conforms:
                configure(backend, precision)
                name, device = backend.name, backend.device
        except Exception as error:  # a property or configure() that raises
            raise SelectionError(f"{where}: {backend!r} raised {type(error).__name__}: {error}") from None
        if not conforms:
            raise SelectionError(f"{where} produced {backend!r}, which lacks the Backend protocol")
        problem = name_problem(name, device)
        if problem:
            raise SelectionError(f"{where} produced a backend named {name!r}: {problem}")
    return [in_worker(backend) for backend in backends]  # what declares OutOfProcess runs in a worker


def _refuse_duplicates(made: list[tuple[Backend, str]]) -> None:
    """Two backends with one name can't both be reported (results are keyed by name): refuse, naming both origins."""
    first: dict[str, str] = {}
    for backend, origin in made:
        if backend.name in first:
            raise SelectionError(
                f"backend name {backend.name!r} is produced twice: by {first[backend.name]} and by {origin}; "
                "names must be unique (give one of them another family)"
            )
        first[backend.name] = origin


def _family_wanted(family: str, token: str) -> bool:
    return matches(family, token) or token.startswith((family + "[", family + "/"))


def select(
    requested: list[str] | None, device: str = "all", modules: Iterable[str] = (), precision: str = "strict"
) -> list[Backend]:
    """The backends to run, in a stable order. `requested` holds family or backend names (globs allowed).

    Names depend on `precision` (`torch[cuda]` vs `torch[cuda+default]`), so the rerun
    command a result prints selects the very column it came from. Each family is instantiated
    at most once, and every name among the instantiated backends must be unique and well formed.
    """
    if device not in DEVICES:
        raise SelectionError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise SelectionError(f"unknown precision mode {precision!r}; valid: {', '.join(PRECISIONS)}")
    families = entry_point_families()
    made: list[tuple[Backend, str]] = []
    for spec in dict.fromkeys(modules):  # the same module given twice is one module
        origin = f"--backend-module {spec}"
        made += [(b, origin) for b in _instantiate(spec, load_factory(spec), precision, origin)]
    module_backends = [b for b, _ in made]
    loaded: dict[str, list[Backend]] = {}

    def members(family: str) -> list[Backend]:
        if family not in loaded:
            factory = families[family]
            origin = getattr(factory, "origin", f"family {family}")
            loaded[family] = _instantiate(family, factory, precision, origin)
            made.extend((b, origin) for b in loaded[family])
        return loaded[family]

    tokens = requested or ["*"]
    chosen: dict[int, Backend] = {}
    unknown = []
    for token in tokens:
        hits = [b for b in module_backends if matches(b.name, token) or matches(b.family, token)]
        for family in sorted(families):
            if _family_wanted(family, token):
                hits += (
                    members(family)
                    if matches(family, token)
                    else [b for b in members(family) if matches(b.name, token)]
                )
        if not hits:
            unknown.append(token)
        for backend in hits:
            chosen.setdefault(id(backend), backend)
    _refuse_duplicates(made)
    if unknown:
        names = sorted(set(families) | {b.family for b in module_backends})
        example = "torch[cpu]" if precision == "strict" else f"torch[cpu+{precision}]"
        raise SelectionError(
            f"unknown backend(s): {', '.join(unknown)}. Valid families: {', '.join(names)} "
            f"(or a backend name such as {example!r}; globs allowed)"
        )
    return [b for b in chosen.values() if device == "all" or b.device == device]
