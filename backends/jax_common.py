"""What the four JAX adapters share: cache setup, x64 scoping, dtypes, devices, compile counting.

Heavy imports stay inside functions so that importing an adapter module costs nothing and
a missing jax only makes the JAX backends unavailable (with the reason), never the others.

Compilation policy, the same for every JAX backend:

* Each adapter jits one program per *structure* (the fields of `Case.structure`): weights,
  inputs, h0 and lengths are arguments, so jax's own cache keys it on shapes and dtypes
  and a new seed or new lengths never recompile. Distinct signatures = distinct
  (structure, batch, seq_len) per device.
* JAX's persistent compilation cache is on, in `<repo>/.cache/jax` (or
  `$GRU_CONFORMANCE_CACHE/jax`), with no minimum compile time or entry size, so a second
  run of a tier compiles nothing. It must be configured before the first compile of the
  process, hence `configure_jax()` at the top of every adapter method that touches jax.
* float64 runs under `jax.enable_x64(True)` as a context manager, only for float64 cases:
  x64 never leaks into other cases or other code in the process. The jitted program is
  traced and called inside the scope, so its inputs keep their float64 dtype.

Gradients (`run_backward`, the optional `Differentiable` part of the contract) are what a
user training with the library gets: `jax.vjp` of the very jitted program `run` calls, with
the vjp itself jitted once per structure (named `..._backward`, so compile counting and the
persistent cache see it as one more program of ours). Parameter gradients come back in the
library's own tree and go to the state_dict layout through the converter's adjoint.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.contract import Availability, BaseBackend, first_line
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights
from conformance.dtypes import fmt

INSTALL_HINT = "pip install -e '.[jax]' -c constraints.txt"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "GRU_CONFORMANCE_CACHE"
PROGRAM_PREFIX = "gru_conformance_"  # every jitted program we own is named with this prefix

_configured = False
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where the persistent XLA cache lives: `$GRU_CONFORMANCE_CACHE/jax`, else `<repo>/.cache/jax`."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else REPO_ROOT / ".cache") / "jax"


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
    """Availability, device placement and the per-structure jit cache shared by the JAX adapters."""

    modules: tuple[str, ...] = ("jax",)
    _programs: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def availability(self) -> Availability:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except Exception as error:  # an ImportError, or a broken install raising anything
                return Availability(False, f"{module} is not importable: {first_line(error)}", INSTALL_HINT)
        if self.device == "cuda" and not gpu_seen():
            return Availability(False, "jax sees no GPU")
        return Availability.ok()

    def program(self, case: Case) -> Any:
        """The jitted program of this case's structure, built once and reused across cases."""
        key = case.structure
        if key not in self._programs:
            configure_jax()
            self._programs[key] = self.build_program(case)
        return self._programs[key]

    def backward_program(self, case: Case) -> Any:
        """jit of (params, x, h0, seq_lengths, g_output, g_h_n) -> vjp of `program(case)`, built once per structure.

        Returns (d params, d x) or (d params, d x, d h0) when h0 is an input. The cotangents are cast
        to the outputs' dtypes (jax.vjp requires it; the forward check already reports a dtype change).
        """
        key = ("backward", *case.structure)
        if key not in self._programs:
            forward = self.program(case)

            def backward(params: Any, x: Any, h0: Any, seq_lengths: Any, g_output: Any, g_h_n: Any) -> Any:
                import jax

                if h0 is None:
                    outputs, pullback = jax.vjp(lambda p, x_: forward(p, x_, None, seq_lengths), params, x)
                else:
                    outputs, pullback = jax.vjp(lambda p, x_, h: forward(p, x_, h, seq_lengths), params, x, h0)
                return pullback((g_output.astype(outputs[0].dtype), g_h_n.astype(outputs[1].dtype)))

            self._programs[key] = self.jit(backward, role="backward")
        return self._programs[key]

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
        }

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        """Same steps for every JAX library: convert, place on the device, run the cached program."""
        configure_jax()
        with x64_scope(case.dtype, self.precision):
            program = self.program(case)
            params = self.put(self.convert(weights.tensors))
            x = self.put(host_array(inputs.x, case.dtype))
            h0 = self.put(host_array(inputs.h0, case.dtype))
            lengths = self.put(host_lengths(inputs.lengths))
            output, h_n = program(params, x, h0, lengths)
            return GruOutput(output=to_numpy(output), h_n=to_numpy(h_n))

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors:
        """dL/d x, h0 (if given) and every state_dict parameter: the jitted vjp of the forward's own program."""
        import jax

        configure_jax()
        with x64_scope(case.dtype, self.precision):
            program = self.backward_program(case)
            params = self.put(self.convert(weights.tensors))
            x = self.put(host_array(inputs.x, case.dtype))
            h0 = self.put(host_array(inputs.h0, case.dtype))
            lengths = self.put(host_lengths(inputs.lengths))
            g_output = self.put(host_array(cotangents.output, case.dtype))
            g_h_n = self.put(host_array(cotangents.h_n, case.dtype))
            grads = jax.tree.map(to_numpy, program(params, x, h0, lengths, g_output, g_h_n))
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
