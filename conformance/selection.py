"""Finding backends: built-in and third-party families through one entry-point group,
plus `--backend-module pkg.module:factory` for adapters that aren't installed packages.

A family is only instantiated when selected, so asking for `torch` never imports jax.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib import metadata

from conformance.contract import PRECISIONS, Backend, configure
from conformance.names import matches
from conformance.out_of_process import in_worker

ENTRY_POINT_GROUP = "gru_conformance.backends"
DEVICES = ("cpu", "cuda", "all")


class SelectionError(ValueError):
    """Unknown backend, bad module spec, or a factory that returned something else."""


def entry_point_families() -> dict[str, Callable[[], Iterable[Backend]]]:
    families: dict[str, Callable[[], Iterable[Backend]]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        families[ep.name] = _deferred(ep)
    return families


def _deferred(ep: metadata.EntryPoint) -> Callable[[], Iterable[Backend]]:
    """Import the family's module only when the family is selected."""

    def factory() -> Iterable[Backend]:
        return ep.load()()  # type: ignore[no-any-return]

    return factory


def load_factory(spec: str) -> Callable[[], Iterable[Backend]]:
    """`pkg.module:factory` -> the factory; errors say which part is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SelectionError(f"--backend-module {spec!r}: expected the form 'pkg.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SelectionError(f"--backend-module {spec!r}: cannot import {module_name!r}: {error}") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise SelectionError(f"--backend-module {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise SelectionError(f"--backend-module {spec!r}: {attr!r} is not callable")
    return factory


def _instantiate(family: str, factory: Callable[[], Iterable[Backend]], precision: str = "strict") -> list[Backend]:
    """The family's backends, each put into the precision mode before anything reads its name."""
    try:
        backends = list(factory())
    except SelectionError:
        raise
    except Exception as error:
        raise SelectionError(f"backend family {family!r} failed to load: {type(error).__name__}: {error}") from error
    for backend in backends:
        if not isinstance(backend, Backend):
            raise SelectionError(f"backend family {family!r} produced {backend!r}, which lacks the Backend protocol")
        configure(backend, precision)
    return [in_worker(backend) for backend in backends]  # what declares OutOfProcess runs in a worker


def _family_wanted(family: str, token: str) -> bool:
    return matches(family, token) or token.startswith((family + "[", family + "/"))


def select(
    requested: list[str] | None, device: str = "all", modules: Iterable[str] = (), precision: str = "strict"
) -> list[Backend]:
    """The backends to run, in a stable order. `requested` holds family or backend names (globs allowed).

    Names depend on `precision` (`torch[cuda]` vs `torch[cuda+default]`), so the rerun
    command a result prints selects the very column it came from.
    """
    if device not in DEVICES:
        raise SelectionError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise SelectionError(f"unknown precision mode {precision!r}; valid: {', '.join(PRECISIONS)}")
    families = entry_point_families()
    module_backends: list[Backend] = []
    for spec in modules:
        module_backends += _instantiate(spec, load_factory(spec), precision)
    tokens = requested or ["*"]
    chosen: dict[str, Backend] = {}
    unknown = []
    for token in tokens:
        hits = [b for b in module_backends if matches(b.name, token) or matches(b.family, token)]
        for family, loader in sorted(families.items()):
            if _family_wanted(family, token):
                members = _instantiate(family, loader, precision)
                exact = [b for b in members if matches(b.name, token)]
                hits += members if matches(family, token) else exact
        if not hits:
            unknown.append(token)
        for backend in hits:
            chosen.setdefault(backend.name, backend)
    if unknown:
        names = sorted(set(families) | {b.family for b in module_backends})
        example = "torch[cpu]" if precision == "strict" else f"torch[cpu+{precision}]"
        raise SelectionError(
            f"unknown backend(s): {', '.join(unknown)}. Valid families: {', '.join(names)} "
            f"(or a backend name such as {example!r}; globs allowed)"
        )
    return [b for b in chosen.values() if device == "all" or b.device == device]
