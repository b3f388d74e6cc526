"""The backend contract: what every adapter implements, and nothing more.

The core owns it: adapters import this module, the core never imports `backends/`
(it finds adapters through the `gru_conformance.backends` entry points).

An adapter is constructed cheaply (no heavy import); `availability()` is where it
finds out whether its library is importable and its device present. A factory,
registered under the `gru_conformance.backends` entry-point group (or given as
`--backend-module pkg.module:factory`), returns the adapters of one family.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from conformance.case import Case
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights
from conformance.forms import PYTORCH, Form


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


# The smallest case the matrix can hold: a column whose library refuses even this checks nothing anywhere.
SMALLEST_CASE = Case(input_size=1, hidden_size=1, batch=1, seq_len=1)


def smallest_case_runs(run: Callable[[Case, Weights, Inputs], Any]) -> Availability:
    """Availability of a column its library may refuse as a whole (OpenVINO compiles no HardSigmoid GRU;
    LiteRT's pip build has no Select TF ops): run the smallest case for real. A refusal
    (`UnsupportedCase`) makes it unavailable, quoting the library, instead of every case unsupported and
    a run that checked nothing; asked of the library on every run, so the day it accepts, the column runs.
    Anything else it raises is left to the checks to record."""
    from conformance.data import case_data

    weights, inputs = case_data(SMALLEST_CASE)
    try:
        run(SMALLEST_CASE, weights, inputs)
    except UnsupportedCase as refusal:
        return Availability(False, f"refuses even the smallest case ({SMALLEST_CASE.id}): {refusal}")
    except Exception:  # a crash is a result of the checks, not an availability
        return Availability.ok()
    return Availability.ok()


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


@dataclass(frozen=True)
class Refusal:
    """A class of cases a backend declares, before running, that its library refuses.

    `key` names the class (`ort-no-float64-gru`): every run still attempts one representative
    of each class it meets, so a declaration that stops being true fails the run
    (`unexpected_support`) instead of hiding cases. `reason` says why, in the library's terms.
    """

    key: str
    reason: str


@runtime_checkable
class StaticCapabilities(Protocol):
    """Optional: a backend that knows, without running anything, which cases its library refuses.

    Why it matters: the tier is built from what `supports` admits (each backend gets its own
    covering array, `conformance.plan`), so a refusal found only by running leaves pairs of the
    backend's space unchecked. A backend implementing this returns the refusals' reasons from
    `supports` (`refusal_reason`); the plan still attempts one representative per `key` (a probe,
    preferably a case refused for that key alone), whose result quotes the library's own refusal,
    or fails as `unexpected_support` when the library ran it after all.
    `refusals` must be cheap and import nothing heavy: it is evaluated over the whole matrix.
    """

    def refusals(self, case: Case) -> tuple[Refusal, ...]:
        """Every declared refusal that applies to `case`; empty when the library is expected to run it."""
        ...


def refusal_reason(refusals: tuple[Refusal, ...]) -> str | None:
    """What `supports` returns for these refusals: their reasons, or None when there are none."""
    return "; ".join(r.reason for r in refusals) or None


@runtime_checkable
class StatesComputeFormat(Protocol):
    """Optional: a backend whose library picks its own arithmetic format states the one it really uses.

    OpenVINO's CPU plugin runs float32 models in bfloat16 out of the box on CPUs that have
    AVX512-BF16; the adapter reads that from the library (never assumes it) and returns it
    here ("bfloat16", "float32", ...), or None when it computes in the case dtype. Under
    `--precision default` the tolerance is derived for that format in place of TF32
    (`conformance.tolerance.derive`); strict mode and float64 cases ignore it, so a backend
    that computes in a narrower format there fails, as it should.
    """

    def compute_format(self, case: Case) -> str | None: ...


def compute_format(backend: Backend, case: Case) -> str | None:
    """The format `backend` states it computes `case` in, or None when it states none."""
    return backend.compute_format(case) if isinstance(backend, StatesComputeFormat) else None


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


def checks_backward(backend: Backend) -> bool:
    """Whether the backward check runs this backend at all: it differentiates, in PyTorch's GRU form (the BPTT
    oracle's; a declared other form is refused by `conformance.engine.check_backward`). What to build for it,
    and what to plan, follow from this."""
    return backward_refusal(backend) is None and declared_form(backend) == PYTORCH


def backward_refusal(backend: Backend) -> str | None:
    """None for a `Differentiable` backend; else why it has no backward check (its `unsupported` reason).

    An adapter whose library can't differentiate at all may say why in a `no_gradients` string
    attribute (an ONNX inference runtime does); otherwise the reason names the missing method.
    """
    if isinstance(backend, Differentiable):
        return None
    why = getattr(backend, "no_gradients", None)
    if isinstance(why, str) and why:
        return f"{backend.name} does not differentiate: {why}"
    return (
        f"{backend.name} does not differentiate: its adapter has no run_backward (conformance.contract.Differentiable)"
    )


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


@runtime_checkable
class PreparingBackward(Protocol):
    """Optional: a differentiable backend whose gradient check runs a program of its own (JAX's vjp)
    builds it ahead too. `prepare_backward` gets the cases whose backward check a run will run
    (then `prepare` gets only the forward checks' cases); `plan_backward` lists those builds, as
    `Planning.plan` does the forward's."""

    def prepare_backward(self, cases: list[Case]) -> None: ...

    def plan_backward(self, cases: list[Case]) -> list[Build]: ...


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


@dataclass(frozen=True)
class WorkerSpec:
    """Where a backend is rebuilt in its worker process, and what that process needs.

    `factory` is a `pkg.module:callable` that, called in the worker, yields this backend among
    others (matched there by name, after the same `configure(precision)`); `group` names the
    worker: one long-lived process per group, shared by the group's backends (a family's CPU
    and CUDA columns); `env` is set in the worker's environment before anything is imported
    (`KERAS_BACKEND`, which Keras reads once per process).
    """

    factory: str
    group: str
    env: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class OutOfProcess(Protocol):
    """Optional: a backend whose library must not share the suite's process (Keras on another backend
    than the one already imported, a library that can abort or hang the process).

    Selection replaces it with a proxy (`conformance.out_of_process`) that runs every call in the
    worker process `worker_spec()` describes, with the same case, weights and inputs (dtype and
    read-only flags included), and returns the same `GruOutput`. If the worker dies (a signal, an
    abort) or overruns the per-case time limit, the proxy raises `WorkerFailure`, the result is
    `error` saying so, and the next call starts a new worker. The adapter object in the suite's
    process is only asked for its name, family, device and `worker_spec()`.
    """

    def worker_spec(self) -> WorkerSpec: ...


class WorkerFailure(Exception):
    """Raised by an out-of-process backend's proxy: the worker died, overran the time limit, or its
    adapter raised. The message is the whole reason (signal or limit, and where), quoted as is."""


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


def declared_form(backend: Backend) -> Form:
    """The GRU a backend declares it implements: its optional `form` attribute, else PyTorch's.

    Half the GRU world computes the candidate with the reset gate applied before the recurrent
    matmul (ONNX's default `linear_before_reset=0`, Keras `reset_after=False`, haiku's only GRU):
    such a backend sets `form = Form(linear_before_reset=False)` and is judged against the
    oracle's recurrence in that form (`conformance.forms`), its own semantics. ONNX attributes
    beyond torch's (`activations`, `clip`) are declared the same way.
    """
    form = getattr(backend, "form", None)
    return form if isinstance(form, Form) else PYTORCH


# First lines that only announce the library's own sentence on the next line: Keras's layer-call wrapper
# (`keras.src.utils.traceback_utils`) puts the error it caught, in bold, under this header.
WRAPPER_HEADERS = ("Exception encountered when calling",)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(error: BaseException) -> str:
    """The first non-empty line of a library error, prefixed by its type: how the report quotes it.
    Under a wrapper's header (`WRAPPER_HEADERS`), the header and the library's sentence that follows it."""
    lines = [ln for ln in (_ANSI.sub("", raw).strip() for raw in str(error).strip().splitlines()) if ln]
    if not lines:
        return type(error).__name__
    line = lines[0]
    if len(lines) > 1 and line.startswith(WRAPPER_HEADERS):
        line = f"{line} {lines[1]}"
    return f"{type(error).__name__}: {line}"
