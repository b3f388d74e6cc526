"""The suite's side of an out-of-process backend: a `Backend` whose every call runs in its worker.

The pipeline sees an ordinary backend. Its name, family and device are the declaring adapter's
(constructed cheaply in the suite's process, never asked to run); `availability`, `supports`,
`describe` and `run` are answered by the same adapter rebuilt in the worker. `run` sends the
case id, the weights and the inputs as they are (dtype and read-only flags included) and returns
the worker's `GruOutput`; a dead or overrunning worker raises `WorkerFailure`, which the pipeline
records as `error` with the message as the reason.

`supports` is a pure function of the case, so its answers are kept: the plan asks it of every
case of the matrix's space (tens of thousands), and `supports_many` answers those in a few
requests instead of one round trip each.

`availability`, `supports` and `describe` must not raise (the contract says so, and the plugin
asks for availability outside any check). So when the worker can't answer them, the proxy keeps
the failure and raises it from the next `run`: a worker that can't start gives `error` results
that say why, never a quiet `skipped`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.case import Case
from conformance.contract import (
    Availability,
    Backend,
    OutOfProcess,
    UnsupportedCase,
    WorkerFailure,
    configure,
)
from conformance.data import GruOutput, Inputs, Weights
from conformance.out_of_process.process import WorkerProcess, WorkerRaised, WorkerUnsupported, worker_for
from conformance.out_of_process.wire import WEIGHTS
from conformance.time_limit import DEFAULT_SECONDS

# The per-case time limit on `run` until the pipeline sets the run's own (`--case-timeout`, read from
# `conformance.time_limit`). Other requests (a worker's start, which imports its library, and
# availability/supports/describe) get `process.START_TIMEOUT_S`.
CASE_TIMEOUT_S = DEFAULT_SECONDS
SUPPORTS_PER_REQUEST = 5000  # case ids per `supports_many` request: a few hundred KB of header


@dataclass
class WorkerBackend:
    """`local` runs in a worker process; this object stands in for it in the suite's process."""

    local: OutOfProcess
    case_timeout_s: float = CASE_TIMEOUT_S  # 0: no limit
    _availability: Availability | None = field(default=None, repr=False)
    _pending: WorkerFailure | None = field(default=None, repr=False)  # raised by the next run
    # case id -> the worker's answer, or the failure asking it met (kept for the next run, as without batching)
    _supports: dict[str, str | WorkerFailure | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Checked once: a runtime Protocol check costs microseconds, and `name` is read for every test.
        assert isinstance(self.local, Backend)
        self._backend: Backend = self.local

    @property
    def name(self) -> str:
        return self._backend.name

    @property
    def family(self) -> str:
        return self._backend.family

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def precision(self) -> str:
        return str(getattr(self.local, "precision", "strict"))

    def configure(self, precision: str) -> None:
        configure(self._backend, precision)

    def worker(self) -> WorkerProcess:
        return worker_for(self.local.worker_spec(), self.precision)

    def _ask(self, op: str, **fields: Any) -> Any:
        worker = self.worker()
        reply, _ = worker.request(
            {"op": op, "backend": self.name, **fields},
            None,
            worker.start_timeout_s,
            f"{op} of {self.name}",
            "the worker's start limit",
        )
        return reply.get("value")

    def availability(self) -> Availability:
        if self._availability is None:
            try:
                value = self._ask("availability")
                self._availability = Availability(
                    bool(value["available"]), str(value["reason"]), str(value["install_hint"])
                )
            except WorkerFailure as failure:
                self._pending, self._availability = failure, Availability.ok()
        return self._availability

    def supports(self, case: Case) -> str | None:
        if case.id not in self._supports:
            try:
                reason = self._ask("supports", case=case.id)
                self._supports[case.id] = None if reason is None else str(reason)
            except WorkerFailure as failure:
                if not isinstance(failure, WorkerRaised):
                    self._pending = failure
                    return None  # the worker died or hung: ask again next time, on a new worker
                self._supports[case.id] = failure
        answer = self._supports[case.id]
        if isinstance(answer, WorkerFailure):
            self._pending = answer
            return None
        return answer

    def supports_many(self, cases: Sequence[Case]) -> list[str | None]:
        """`supports` of each case, asked of the worker in batches of `SUPPORTS_PER_REQUEST`."""
        todo = list(dict.fromkeys(c.id for c in cases if c.id not in self._supports))
        for start in range(0, len(todo), SUPPORTS_PER_REQUEST):
            chunk = todo[start : start + SUPPORTS_PER_REQUEST]
            try:
                value = self._ask("supports_many", cases=chunk)
            except WorkerFailure:
                break  # the rest are asked one by one, which meets the failure as usual
            reasons, raised = value["reasons"], value["raised"]
            for case_id, i in zip(chunk, value["index"], strict=True):
                reason = reasons[i] if i >= 0 else None
                self._supports[case_id] = (
                    WorkerRaised(raised[-1 - i]) if i < 0 else None if reason is None else str(reason)
                )
        return [self.supports(c) for c in cases]

    def describe(self) -> dict[str, Any]:
        facts = {**self.worker().facts(), "case_timeout_s": self.case_timeout_s}
        try:
            notes = self._ask("describe")
        except WorkerFailure as failure:
            return {"worker_process": facts, "describe_error": str(failure)}
        return {**(notes if isinstance(notes, dict) else {"describe": notes}), "worker_process": facts}

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if self._pending is not None:
            failure, self._pending = self._pending, None
            raise failure
        arrays = {WEIGHTS + name: value for name, value in weights.tensors.items()}
        arrays["x"] = inputs.x
        if inputs.h0 is not None:
            arrays["h0"] = inputs.h0
        if inputs.lengths is not None:
            arrays["lengths"] = inputs.lengths
        try:
            _, out = self.worker().request(
                {"op": "run", "backend": self.name, "case": case.id}, arrays, self.case_timeout_s, "run"
            )
        except WorkerUnsupported as refusal:
            raise UnsupportedCase(str(refusal)) from None
        return GruOutput(output=out["output"], h_n=out["h_n"])


def in_worker(backend: Backend, case_timeout_s: float = CASE_TIMEOUT_S) -> Backend:
    """The backend itself, or its proxy when it declares `OutOfProcess`."""
    if isinstance(backend, OutOfProcess) and not isinstance(backend, WorkerBackend):
        return WorkerBackend(backend, case_timeout_s)
    return backend
