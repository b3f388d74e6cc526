"""What the four JAX adapters share: cache setup, x64 scoping, dtypes, devices, compile counting.

Heavy imports stay inside functions so that importing an adapter module costs nothing and
a missing jax only makes the JAX backends unavailable (with the reason), never the others.

Compilation policy, the same for every JAX backend:

* Each adapter traces one program per *signature*, (`Case.structure`, batch, seq_len):
  weights, inputs, h0 and lengths are arguments, so a new seed or new lengths never
  recompile. The traced program is serialized with `jax.export` (`backends.jax_programs`),
  so a later process loads it instead of re-running the library's Python to trace it
  again; `traced(case)` is the program as traced, which tests compare bit for bit.
* JAX's persistent compilation cache is on, in `<repo>/.cache/jax` (or
  `$GRU_CONFORMANCE_CACHE/jax`), with no minimum compile time or entry size, so a second
  run of a tier compiles nothing. It must be configured before the first compile of the
  process, hence `configure_jax()` at the top of every adapter method that touches jax.
* float64 runs under `jax.enable_x64(True)` as a context manager, only for float64 cases:
  x64 never leaks into other cases or other code in the process. The jitted program is
  traced and called inside the scope, so its inputs keep their float64 dtype.

Gradients (`run_backward`, the optional `Differentiable` part of the contract) are what a
user training with the library gets: `jax.vjp` of the library's jitted program (`traced`, the
function `run`'s stored program was exported from). The vjp is a program of its own per
signature, exported and stored like the forward one (role "backward"), so a later process
loads it instead of tracing the library again, and compiled under the name `..._backward`, so
compile counting and the persistent cache see it as one more program of ours. Parameter
gradients come back in the library's own tree and go to the state_dict layout through the
converter's adjoint.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from backends.jax_programs import (
    BACKWARD,
    FORWARD,
    ProgramSignature,
    ProgramStore,
    StoredProgram,
    source_digest,
    versions,
)
from conformance import progress
from conformance.cache import IN_MEMORY, Budget, Lru, cache_root
from conformance.case import Case
from conformance.contract import Availability, BaseBackend, Build, first_line
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights, case_data, make_cotangents
from conformance.dtypes import fmt
from conformance.estimate import units

INSTALL_HINT = "pip install -e '.[jax]' -c constraints.txt"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRAM_PREFIX = "gru_conformance_"  # every jitted program we own is named with this prefix

_configured = False
_lock = threading.Lock()


def _map_budget() -> Budget:
    """The compiled programs every JAX backend of this process keeps, together, in units of a forward program.

    A compiled CPU program holds memory maps (measured on the triples tier's flax-linen programs: ~50 for
    a forward program, ~175 for its vjp), and the kernel caps a process's maps at `vm.max_map_count`
    (65530 by default); past it, LLVM can't allocate and the process crashes. The programs get two thirds
    of the cap, the rest is the libraries' own (torch, TensorFlow, onnxruntime, OpenVINO).
    """
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        limit = 65530
    return Budget(max(64.0, limit * 2 / 3 / MAPS_PER_FORWARD_PROGRAM))


MAPS_PER_FORWARD_PROGRAM = 50
PROGRAM_WEIGHT = {FORWARD: 1.0, BACKWARD: 3.5}  # a vjp program holds ~3.5 times the maps of its forward
PROGRAM_BUDGET = _map_budget()


def cache_dir() -> Path:
    """Where the persistent XLA cache lives: `$GRU_CONFORMANCE_CACHE/jax`, else `<repo>/.cache/jax`."""
    return cache_root() / "jax"


def configure_jax() -> None:
    """Turn on the persistent compilation cache (once per process) and start counting compiles.

    The thresholds are zeroed because every program here compiles in milliseconds: with
    jax's defaults (1 s, size overrides) nothing would ever be written.
    """
    global _configured
    with _lock:
        if _configured:
            return
        import jax

        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        COMPILES.install()
        _configured = True


@dataclass
class CompileLog:
    """XLA compile requests seen through `jax.monitoring`, split by program and by cache outcome.

    jax records `/jax/core/compile/backend_compile_duration` (with `fun_name`) around every
    compile request, including ones answered by the persistent cache; a hit additionally
    records `/jax/compilation_cache/cache_hits` inside that window. So a request with no hit
    event is a real XLA compile.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    _hit_pending: bool = False
    _installed: bool = False

    def install(self) -> None:
        if self._installed:
            return
        from jax import monitoring

        monitoring.register_event_listener(self._on_event)
        monitoring.register_event_duration_secs_listener(self._on_duration)
        self._installed = True

    def _on_event(self, event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self._hit_pending = True

    # Parameter named as in jax's EventDurationListenerWithMetadata protocol (jax passes it positionally).
    def _on_duration(self, event: str, duration_secs: float, **kwargs: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            name = str(kwargs.get("fun_name", ""))
            self.events.append({"fun_name": name, "seconds": duration_secs, "cache_hit": self._hit_pending})
            self._hit_pending = False

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.events[mark:]


COMPILES = CompileLog()


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and seconds for our programs vs library set-up ops, XLA compiles vs cache hits."""
    ours = [e for e in events if PROGRAM_PREFIX in e["fun_name"]]
    other = [e for e in events if PROGRAM_PREFIX not in e["fun_name"]]
    return {
        "program_compiles": sum(not e["cache_hit"] for e in ours),
        "program_cache_hits": sum(e["cache_hit"] for e in ours),
        "program_compile_s": sum(e["seconds"] for e in ours),
        "setup_compiles": sum(not e["cache_hit"] for e in other),
        "setup_cache_hits": sum(e["cache_hit"] for e in other),
        "setup_names": sorted({e["fun_name"] for e in other}),
    }


@contextlib.contextmanager
def x64_scope(dtype: str, precision: str = "strict") -> Iterator[None]:
    """The numerics a case runs under, as scoped contexts (never a global flag flip):
    x64 on for float64 cases only, and in strict mode the highest matmul precision
    (on a GPU, XLA's default would use TF32 for float32 matmuls)."""
    import jax

    with contextlib.ExitStack() as stack:
        if dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        if precision == "strict":
            stack.enter_context(jax.default_matmul_precision("highest"))
        yield


def jnp_dtype(name: str) -> Any:
    import jax.numpy as jnp

    return {"float32": jnp.float32, "float64": jnp.float64, "float16": jnp.float16, "bfloat16": jnp.bfloat16}[name]


def to_numpy(array: Any) -> np.ndarray:
    """A jax array as numpy in the dtype jax produced: a wrong dtype must stay visible."""
    return np.asarray(array)


def host_array(array: np.ndarray | None, dtype: str) -> np.ndarray | None:
    """Case data in exactly the case dtype (already so; asserted so a mistake can't hide)."""
    if array is None:
        return None
    assert array.dtype == fmt(dtype).numpy, (array.dtype, dtype)
    return np.ascontiguousarray(array)


def host_lengths(lengths: np.ndarray | None) -> np.ndarray | None:
    """int32 lengths: jax's default integer width without x64, so no truncation warning or retrace."""
    return None if lengths is None else np.asarray(lengths, dtype=np.int32)


def jax_device(kind: str) -> Any:
    import jax

    return jax.devices("gpu" if kind == "cuda" else "cpu")[0]


def gpu_seen() -> bool:
    """True when jax has a GPU backend (never raises: no jax or no GPU plugin means False)."""
    try:
        import jax

        return bool(jax.devices("gpu"))
    except Exception:
        return False


def precision_notes(mode: str = "strict") -> dict[str, Any]:
    """Versions and the settings that decide how precisely jax computes a float32 matmul."""
    import jax
    import jaxlib

    with x64_scope("float32", mode):
        # Config options are set as attributes at runtime; jax's type stubs do not declare them.
        matmul = jax.config.jax_default_matmul_precision  # type: ignore[attr-defined]
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "precision": {"mode": mode, "jax_default_matmul_precision": matmul},
        "x64": "enabled only inside float64 cases (jax.enable_x64 context)",
        "persistent_cache": str(cache_dir()),
    }


@dataclass
class JaxBackend(BaseBackend):
    """Availability, device placement and the per-signature program cache shared by the JAX adapters."""

    modules: tuple[str, ...] = ("jax",)
    library: tuple[str, ...] = ()  # the packages a program depends on besides jax (versions go in its key)
    program_modules: tuple[str, ...] = ()  # our modules a program depends on besides the adapter and converter
    programs_root: Path | None = None  # default `<cache>/jax/programs`
    # role -> (structure, batch, seq_len) -> (compiled program, the parameter tree it takes)
    _programs: dict[str, Lru[tuple[Any, ...], Any]] = field(
        default_factory=lambda: {
            role: Lru(IN_MEMORY, PROGRAM_BUDGET, PROGRAM_WEIGHT[role]) for role in (FORWARD, BACKWARD)
        },
        repr=False,
    )
    _sources: str = field(default="", repr=False)
    _versions: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def availability(self) -> Availability:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except Exception as error:  # an ImportError, or a broken install raising anything
                return Availability(False, f"{module} is not importable: {first_line(error)}", INSTALL_HINT)
        if self.device == "cuda" and not gpu_seen():
            return Availability(False, "jax sees no GPU")
        return Availability.ok()

    @property
    def store(self) -> ProgramStore:
        return ProgramStore(self.programs_root or cache_dir() / "programs")

    def signature(self, case: Case, role: str = FORWARD) -> ProgramSignature:
        """What this case's program of `role` (forward or backward) depends on: its key names the stored program."""
        if not self._sources:
            files = {Path(__file__), Path(inspect.getfile(type(self))), Path(inspect.getfile(self.converter()))}
            files.add(Path(inspect.getfile(self.converter())).with_name("__init__.py"))
            files |= {Path(inspect.getfile(importlib.import_module(name))) for name in self.program_modules}
            self._sources = source_digest(tuple(files))
            self._versions = tuple(sorted(versions(self.library).items()))
        return ProgramSignature(
            family=self.family,
            platform="cpu" if self.device == "cpu" else "cuda",
            precision=self.precision,
            structure=case.structure,
            batch=case.batch,
            seq_len=case.seq_len,
            versions=self._versions,
            sources=self._sources,
            role=role,
        )

    def traced(self, case: Case) -> Any:
        """The program as the library traces it (jitted), what the stored program must equal bit for bit."""
        configure_jax()
        return self.build_program(case)

    def program(self, case: Case, params: Any, x: Any, h0: Any, lengths: Any) -> Any:
        """The compiled program of this case's signature, `(params, x, h0, lengths) -> (output, h_n)`.

        From memory, else the stored serialized program (deserialized and compiled, which hits
        XLA's persistent cache), else traced, exported and stored. Called inside the case's
        `x64_scope` with the arguments already on the device.
        """
        return self._program(case, FORWARD, params, (x, h0, lengths))

    def backward_program(
        self, case: Case, params: Any, x: Any, h0: Any, lengths: Any, g_output: Any, g_h_n: Any
    ) -> Any:
        """The compiled vjp of this case's signature, `(params, x, h0, lengths, g_output, g_h_n) -> gradients`.

        The vjp of `traced(case)`, the library's own program (`_vjp`), found like `program`: from
        memory, else stored, else traced, exported and stored. A `jax.export` program is
        differentiable only when serialized with its vjp (`vjp_order`), which would double the
        cost of every export for forward-only runs; so the vjp is exported as a program of its own.
        Returns (d params, d x) or (d params, d x, d h0) when h0 is an input.
        """
        return self._program(case, BACKWARD, params, (x, h0, lengths, g_output, g_h_n))

    def _program(self, case: Case, role: str, params: Any, args: tuple[Any, ...]) -> Any:
        import jax

        treedef = jax.tree_util.tree_structure(params)
        loaded = self._programs[role].get(_memory_key(case)) or self._load(case, role)
        if loaded is not None and loaded[1] == str(treedef):
            return loaded[0]
        started = time.perf_counter()  # not stored, or stored for another parameter tree: trace it
        leaves = jax.tree_util.tree_leaves(params)
        stored = self._export(case, role, treedef, (leaves, *args))
        compiled = self._compile(case, role, stored)
        stored.build_s = time.perf_counter() - started  # traced to compiled: the plan's estimate of a build
        self.store.save(self.signature(case, role), stored, units(case))
        return compiled

    def _load(self, case: Case, role: str = FORWARD) -> tuple[Any, str] | None:
        """The stored program compiled, with the parameter tree it takes; None when none is stored."""
        stored = self.store.load(self.signature(case, role))
        if stored is None:
            return None
        self._compile(case, role, stored)
        return self._programs[role][_memory_key(case)]

    def _compile(self, case: Case, role: str, stored: StoredProgram) -> Any:
        """Deserialize and compile a stored program for its own argument shapes; remember it."""
        import jax

        configure_jax()
        exported = jax.export.deserialize(bytearray(stored.serialized))
        specs = [jax.ShapeDtypeStruct(aval.shape, aval.dtype) for aval in exported.in_avals]
        args, _ = jax.tree_util.tree_unflatten(exported.in_tree, specs)

        def call(leaves: Any, *arrays: Any) -> Any:
            return exported.call(leaves, *arrays)

        compiled = self.jit(call, role="" if role == FORWARD else role).lower(*args).compile()

        def program(params: Any, *arrays: Any) -> Any:
            return compiled(jax.tree_util.tree_leaves(params), *arrays)

        def backward(params: Any, *arrays: Any) -> Any:
            grads = program(params, *arrays)  # d params come back as leaves: into the parameter tree again
            return (jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), grads[0]), *grads[1:])

        self._programs[role][_memory_key(case)] = (program if role == FORWARD else backward, stored.params_tree)
        return self._programs[role][_memory_key(case)][0]

    def _export(self, case: Case, role: str, treedef: Any, args: tuple[Any, ...]) -> StoredProgram:
        """Trace the library's program (or its vjp) and serialize it with `jax.export` (saved once compiled)."""
        import jax

        traced = self.traced(case)

        def forward(leaves: Any, x: Any, h0: Any, lengths: Any) -> Any:
            return traced(jax.tree_util.tree_unflatten(treedef, leaves), x, h0, lengths)

        def backward(leaves: Any, x: Any, h0: Any, lengths: Any, g_output: Any, g_h_n: Any) -> Any:
            params = jax.tree_util.tree_unflatten(treedef, leaves)
            grads = _vjp(traced, params, x, h0, lengths, g_output, g_h_n)
            return (jax.tree_util.tree_leaves(grads[0]), *grads[1:])  # leaves: no library pytree in the export

        specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
        platform = "cpu" if self.device == "cpu" else "cuda"
        flat = forward if role == FORWARD else backward
        exported = jax.export.export(jax.jit(flat), platforms=[platform])(*specs)
        return StoredProgram(bytes(exported.serialize()), str(treedef), build_s=0.0)

    def prepare(self, cases: list[Case]) -> None:
        """Load or build every forward program these cases need before the first run, showing progress."""
        self._prepare(cases, FORWARD)

    def prepare_backward(self, cases: list[Case]) -> None:
        """Load or build every backward program (vjp) these cases' gradient checks need (`PreparingBackward`)."""
        self._prepare(cases, BACKWARD)

    def _prepare(self, cases: list[Case], role: str) -> None:
        todo: dict[tuple[Any, ...], Case] = {}
        for case in cases:
            key = _memory_key(case)
            if key not in self._programs[role] and key not in todo and self.supports(case) is None:
                todo[key] = case
        if not todo:
            return
        store = self.store
        on_disk = {k for k, c in todo.items() if store.has(self.signature(c, role))}
        stored = [c for k, c in todo.items() if k in on_disk]
        fresh = [c for k, c in todo.items() if k not in on_disk]
        room = PROGRAM_BUDGET.size - PROGRAM_BUDGET.used
        if len(todo) > IN_MEMORY or len(todo) * PROGRAM_WEIGHT[role] > room:
            # more than memory holds (a full-tier shard, or the other backends' programs): stored ones load as
            # their cases run, instead of loading now only to be dropped
            todo, stored = {k: c for k, c in todo.items() if k not in on_disk}, []
        note = f"{len(fresh)} to trace, {len(todo) - len(fresh)} from the cache"
        with progress.task(self.builder(role), len(todo), note) as task:

            def build(case: Case, stored: bool) -> None:
                # A library refusing to trace is not the run's problem: the case's own run meets it and records it.
                try:
                    with x64_scope(case.dtype, self.precision):
                        if stored:
                            self._load(case, role)
                        elif role == FORWARD:
                            self.program(case, *self.arguments(case, *case_data(case)))
                        else:
                            self.backward_program(case, *self.backward_arguments(case, *case_data(case)))
                except Exception:
                    task.step(case.id, ok=False)
                else:
                    task.step(case.id)

            # Stored programs compile in a few threads (XLA's compile leaves the GIL); tracing runs the
            # library's Python, so fresh programs are traced one at a time.
            with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
                list(pool.map(lambda case: build(case, True), stored))
            for case in fresh:
                build(case, False)

    def builder(self, role: str = FORWARD) -> str:
        """What the plan and the progress line call building this backend's programs of `role`."""
        return f"compile ({self.name})" if role == FORWARD else f"compile {role} ({self.name})"

    def plan(self, cases: list[Case]) -> list[Build]:
        """One compiled program per signature; cached when its serialized program is stored."""
        return self._plan(cases, FORWARD)

    def plan_backward(self, cases: list[Case]) -> list[Build]:
        """One compiled vjp program per signature, for the cases whose gradients a run checks (`PreparingBackward`)."""
        return self._plan(cases, BACKWARD)

    def _plan(self, cases: list[Case], role: str) -> list[Build]:
        store, builds = self.store, {}
        for case in cases:
            sig = self.signature(case, role)
            key = sig.key()
            if key not in builds:
                builds[key] = Build(self.builder(role), key, store.has(sig), units(case))
        return list(builds.values())

    def recorded(self) -> list[Build]:
        return [
            Build(self.builder(role), key, True, amount, seconds)
            for key, role, amount, seconds in self.store.recorded(self.family)
        ]

    def arguments(self, case: Case, weights: Weights, inputs: Inputs) -> tuple[Any, Any, Any, Any]:
        """Converted parameters and the case's arrays, on this backend's device."""
        params = self.put(self.convert(weights.tensors))
        x = self.put(host_array(inputs.x, case.dtype))
        h0 = self.put(host_array(inputs.h0, case.dtype))
        lengths = self.put(host_lengths(inputs.lengths))
        return params, x, h0, lengths

    def backward_arguments(
        self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents | None = None
    ) -> tuple[Any, ...]:
        """`arguments` and the cotangents of (output, h_n) in the case dtype, on this backend's device."""
        cotangents = make_cotangents(case) if cotangents is None else cotangents
        g_output = self.put(host_array(cotangents.output, case.dtype))
        g_h_n = self.put(host_array(cotangents.h_n, case.dtype))
        return (*self.arguments(case, weights, inputs), g_output, g_h_n)

    def build_program(self, case: Case) -> Any:  # pragma: no cover - each adapter defines it
        """A function (params, x, h0, seq_lengths) -> (output, h_n), jitted with `self.jit`."""
        raise NotImplementedError

    def converter(self) -> ModuleType:  # pragma: no cover - each adapter defines it
        """The `backends.converters` module for this library (convert, FOLDS, cannot_represent)."""
        raise NotImplementedError

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:  # pragma: no cover - each adapter defines it
        """The canonical state_dict as this library's parameter tree."""
        raise NotImplementedError

    def convert_gradients(self, grads: Any, case: Case) -> dict[str, np.ndarray]:  # pragma: no cover - per adapter
        """Gradients w.r.t. this library's parameter tree (numpy leaves) as state_dict gradients: the converter's adjoint."""
        raise NotImplementedError

    def library_notes(self) -> dict[str, Any]:
        """The adapter's own lines for the report: library version, modules, length handling."""
        return {}

    def supports(self, case: Case) -> str | None:
        lost = self.converter().cannot_represent(case.bias)
        return "; ".join(lost) if lost else None

    def describe(self) -> dict[str, Any]:
        conv = self.converter()
        return {
            **precision_notes(self.precision),
            **self.library_notes(),
            "folds": conv.FOLDS,
            "cannot_represent": conv.cannot_represent(True),
            "programs": f"traced once per signature, serialized with jax.export under {self.store.root}",
        }

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        """Same steps for every JAX library: convert, place on the device, run the signature's program."""
        configure_jax()
        with x64_scope(case.dtype, self.precision):
            params, x, h0, lengths = self.arguments(case, weights, inputs)
            output, h_n = self.program(case, params, x, h0, lengths)(params, x, h0, lengths)
            return GruOutput(output=to_numpy(output), h_n=to_numpy(h_n))

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors:
        """dL/d x, h0 (if given) and every state_dict parameter: the jitted vjp of the forward's own program."""
        import jax

        configure_jax()
        with x64_scope(case.dtype, self.precision):
            args = self.backward_arguments(case, weights, inputs, cotangents)
            grads = jax.tree.map(to_numpy, self.backward_program(case, *args)(*args))
        tensors = {"x": grads[1]}
        if inputs.h0 is not None:
            tensors["h0"] = grads[2]
        tensors.update(self.convert_gradients(grads[0], case))
        return tensors

    def jit(self, fn: Any, role: str = "") -> Any:
        """jax.jit of fn under a recognizable name, so compile counting can tell our programs apart.

        The forward program is `gru_conformance_<family>`; another role (e.g. "backward") is appended."""
        import jax

        name = PROGRAM_PREFIX + self.family.replace("-", "_") + (f"_{role}" if role else "")
        fn.__name__ = fn.__qualname__ = name
        return jax.jit(fn)

    def put(self, tree: Any) -> Any:
        """Host arrays onto this backend's device (a transfer, never a compile)."""
        import jax

        return jax.device_put(tree, jax_device(self.device))


def _memory_key(case: Case) -> tuple[Any, ...]:
    """What a program in memory is kept under (its role apart): the signature's case part."""
    return (case.structure, case.batch, case.seq_len)


def _vjp(forward: Any, params: Any, x: Any, h0: Any, lengths: Any, g_output: Any, g_h_n: Any) -> Any:
    """jax.vjp of `forward` at (params, x[, h0]) applied to the cotangents of (output, h_n).

    Returns (d params, d x) or (d params, d x, d h0) when h0 is an input. The cotangents are cast
    to the outputs' dtypes (jax.vjp requires it; the forward check already reports a dtype change).
    """
    import jax

    if h0 is None:
        outputs, pullback = jax.vjp(lambda p, x_: forward(p, x_, None, lengths), params, x)
    else:
        outputs, pullback = jax.vjp(lambda p, x_, h: forward(p, x_, h, lengths), params, x, h0)
    return pullback((g_output.astype(outputs[0].dtype), g_h_n.astype(outputs[1].dtype)))
