"""Backends that run in a worker process (`OutOfProcess`) and misbehave there in one known way each.

Each is the example NumPy GRU (correct) in a worker, plus one way a library takes its process
down or never answers: an abort, a hang, an exit, stray bytes on stdout. Each misbehaves only on
bidirectional cases, so a test can show the worker failing on one case and, restarted, passing
the next. `Inspecting` reports what crossed the process boundary (dtype, shape, read-only flag)
by refusing every case with that description.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.contract import UnsupportedCase, WorkerSpec
from conformance.data import GruOutput, Inputs, Weights


@dataclass
class InWorker(NumpyGru):
    """The correct NumPy GRU, in a worker process."""

    family: str = "planted-in-worker"
    factory: str = "planted_workers:in_worker"

    def worker_spec(self) -> WorkerSpec:
        return WorkerSpec(factory=self.factory, group=self.family, env={"GRU_PLANTED_WORKER": self.family})

    def misbehave(self) -> None:
        """What this backend does on a bidirectional case before answering (nothing: it is correct)."""

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if case.bidirectional:
            self.misbehave()
        return super().run(case, weights, inputs)


@dataclass
class Aborting(InWorker):
    """`abort()` in native code, as a failed C++ check does: the process dies with SIGABRT."""

    family: str = "planted-abort"
    factory: str = "planted_workers:aborting"

    def misbehave(self) -> None:
        os.abort()


@dataclass
class Hanging(InWorker):
    """Never answers, as a deadlocked native library doesn't."""

    family: str = "planted-hang"
    factory: str = "planted_workers:hanging"

    def misbehave(self) -> None:
        time.sleep(1e9)


@dataclass
class Exiting(InWorker):
    """Ends the process with a status, as a library calling exit() does."""

    family: str = "planted-exit"
    factory: str = "planted_workers:exiting"

    def misbehave(self) -> None:
        os._exit(3)


@dataclass
class Chatty(InWorker):
    """Writes to file descriptor 1, as C++ logging does: the protocol must not see it."""

    family: str = "planted-chatty"
    factory: str = "planted_workers:chatty"

    def misbehave(self) -> None:
        print("a library's chatter on stdout")
        os.write(1, b"\x00\x00\x00\x10raw bytes on fd 1, shaped like a frame header\n")


@dataclass
class Inspecting(InWorker):
    """Refuses every case, saying what it was given: the test compares that with the in-process data."""

    family: str = "planted-inspect"
    factory: str = "planted_workers:inspecting"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        arrays = {**weights.tensors, "x": inputs.x, "h0": inputs.h0, "lengths": inputs.lengths}
        raise UnsupportedCase(repr({name: describe(a) for name, a in arrays.items()}))


def describe(array: object) -> object:
    """What an adapter can observe about one argument."""
    if array is None:
        return None
    return (str(array.dtype), tuple(array.shape), bool(array.flags.writeable), array.tobytes().hex())  # type: ignore[attr-defined]


@dataclass
class BrokenFactoryMember(InWorker):
    """Declares a worker whose factory raises: the worker can't start."""

    family: str = "planted-broken-start"
    factory: str = "planted_workers:broken_factory"


@dataclass
class AbortAtStartMember(InWorker):
    """Declares a worker that dies while starting, as a library import that aborts (an unsupported CPU) does."""

    family: str = "planted-abort-at-start"
    factory: str = "planted_workers:abort_at_start"


def in_worker() -> Iterator[InWorker]:
    yield InWorker()


def aborting() -> Iterator[InWorker]:
    yield Aborting()


def hanging() -> Iterator[InWorker]:
    yield Hanging()


def exiting() -> Iterator[InWorker]:
    yield Exiting()


def chatty() -> Iterator[InWorker]:
    yield Chatty()


def inspecting() -> Iterator[InWorker]:
    yield Inspecting()


def broken_start() -> Iterator[InWorker]:
    yield BrokenFactoryMember()


def broken_factory() -> Iterator[InWorker]:
    raise RuntimeError("planted: this factory fails in the worker")


def dies_at_start() -> Iterator[InWorker]:
    yield AbortAtStartMember()


def abort_at_start() -> Iterator[InWorker]:
    os.abort()
    yield InWorker()  # never reached


@dataclass
class Picky(InWorker):
    """Refuses bidirectional cases (naming the case) and raises in `supports` for batch-first float16 ones:
    the batched `supports` must answer exactly as one request per case does, broken answers included."""

    family: str = "planted-picky"
    factory: str = "planted_workers:picky"

    def supports(self, case: Case) -> str | None:
        if case.batch_first and case.dtype == "float16":
            raise RuntimeError(f"planted: supports broke on {case.id}")
        return f"planted: no bidirectional GRU ({case.num_layers} layers)" if case.bidirectional else None


def picky() -> Iterator[InWorker]:
    yield Picky()
