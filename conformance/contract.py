"""The backend contract: what every adapter implements, and nothing more.

The core owns it: adapters import this module, the core never imports `backends/`
(it finds adapters through the `gru_conformance.backends` entry points).

An adapter is constructed cheaply (no heavy import); `availability()` is where it
finds out whether its library is importable and its device present. A factory,
registered under the `gru_conformance.backends` entry-point group (or given as
`--backend-module pkg.module:factory`), returns the adapters of one family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from conformance.case import Case
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""  # why not, quoting the import error where there is one
    install_hint: str = ""  # e.g. "pip install -e '.[torch]' -c constraints.txt"

    @classmethod
    def ok(cls) -> Availability:
        return cls(True)

    def describe(self) -> str:
        return self.reason + (f" (install: {self.install_hint})" if self.install_hint else "")


class UnsupportedCase(Exception):
    """Raised by `run` when only trying reveals the backend can't express a case.

    The message must quote the library's own error (first line), so the report
    says what the library said, not what we guessed.
    """


@runtime_checkable
class Backend(Protocol):
    """One implementation on one device, e.g. `torch[cpu]` or `onnx-dynamo/ort[cpu]`."""

    @property
    def name(self) -> str: ...  # family + device, unique among all backends

    @property
    def family(self) -> str: ...  # the entry-point name that produced it, e.g. "torch"

    @property
    def device(self) -> str: ...  # "cpu" or "cuda"

    def availability(self) -> Availability: ...

    def supports(self, case: Case) -> str | None:
        """None if the case can be expressed, else the reason (never raises)."""
        ...

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        """Output and h_n in PyTorch's layout and the case dtype, as numpy arrays."""
        ...

    def describe(self) -> dict[str, Any]:
        """Notes for the report: library versions, precision settings, export facts."""
        ...


# Precision modes (`--precision`). strict: TF32 off and the highest matmul precision, so
# tolerances stay derived from float32. default: whatever the library does out of the box.
PRECISIONS = ("strict", "default")


@runtime_checkable
class PrecisionAware(Protocol):
    """Optional part of the contract (kept out of `Backend` so older adapters still qualify).

    Selection calls `configure(precision)` once, before anything reads `name`. The adapter
    must then (1) put the mode into its name via `column()`, so both modes can sit side by
    side in one merged report, (2) apply the mode's library settings around every `run`
    (scoped: those settings are process-global), and (3) report the settings in effect
    under `describe()["precision"]`.
    """

    def configure(self, precision: str) -> None: ...


@runtime_checkable
class Differentiable(Protocol):
    """Optional: a backend whose library differentiates its own GRU (autograd, `jax.vjp`), as a user
    training with it would. The backward check compares what it returns with the float64 BPTT oracle.

    `run_backward` returns dL/d(input) for L = <output, G_out> + <h_n, G_h> (`Cotangents`), keyed
    "x", "h0" (only when the case gives h0) and every `nn.GRU` state_dict name, each in PyTorch's
    layout and the case dtype; gradients of the library's own parameters come back to the
    state_dict layout through the adjoint of the adapter's weight converter. Raise
    `UnsupportedCase` (quoting the library) for a case whose backward the library can't run.
    """

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors: ...


@runtime_checkable
class Preparing(Protocol):
    """Optional: a backend that builds models ahead of `run` (ONNX exports) gets every case it
    will run, once, after collection, so it can build them all in parallel."""

    def prepare(self, cases: list[Case]) -> None: ...


@dataclass(frozen=True)
class Build:
    """One thing a backend builds before it can run cases (an export, a compiled program), for the plan.

    Builds with the same `builder` and `key` are one build, shared by every column that needs
    it (the two runtimes of one exporter). `units` sizes it for the time estimate (steps traced:
    seq_len x layers x directions); `seconds` is what building it took, as its cache recorded it.
    """

    builder: str  # e.g. "export (dynamo)", "compile (flax-linen[cpu])"
    key: str
    cached: bool
    units: float = 1.0
    seconds: float | None = None


@runtime_checkable
class Planning(Protocol):
    """Optional: a backend that builds ahead says what a run would build (`--plan`), before building it.

    `plan(cases)` lists every build the cases need, cached or not, without building anything;
    `recorded()` lists the builds its cache holds with the time each took, the basis of the
    estimate for the ones still to build.
    """

    def plan(self, cases: list[Case]) -> list[Build]: ...

    def recorded(self) -> list[Build]: ...


def column(device: str, precision: str = "strict") -> str:
    """What goes between the brackets of a backend name: `cuda`, or `cuda+default` outside strict mode.

    `+` rather than `,`: pytest's `-k` grammar accepts `+` in a name, so `-k "cuda+default"` works.
    """
    return device if precision == "strict" else f"{device}+{precision}"


def configure(backend: Backend, precision: str) -> bool:
    """Put a backend into a precision mode; False when it isn't `PrecisionAware` (it then runs as it is)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision mode {precision!r}; valid: {', '.join(PRECISIONS)}")
    if isinstance(backend, PrecisionAware):
        backend.configure(precision)
        return True
    return False


Factory = Callable[[], Iterable[Backend]]


@dataclass
class BaseBackend:
    """Convenience base: fills in name, a permissive `supports` and empty notes."""

    family: str
    device: str = "cpu"
    notes: dict[str, Any] = field(default_factory=dict)
    precision: str = "strict"  # set through `configure`; see `PrecisionAware`

    @property
    def name(self) -> str:
        return f"{self.family}[{column(self.device, self.precision)}]"

    def configure(self, precision: str) -> None:
        """Record the mode; subclasses apply its library settings around `run` (see `PrecisionAware`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision mode {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.precision = precision

    def availability(self) -> Availability:
        return Availability.ok()

    def supports(self, case: Case) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        return dict(self.notes)


def first_line(error: BaseException) -> str:
    """The first non-empty line of a library error, prefixed by its type: how the report quotes it."""
    text = str(error).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
