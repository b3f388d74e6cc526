"""The per-case time limit (`--case-timeout`), for backends that run in this process.

A hung adapter must not stall the whole run. But an in-process call can't be stopped safely:
no thread can be killed, and a signal only interrupts Python code between bytecodes, never a
native library that hangs. So a backend's `run` goes to the backend's own daemon worker thread
and the check waits at most the limit for it. When the limit passes, the check records `error`
and the run goes on; the call itself keeps running in the background, and the backend is marked
hung: its later cases are `error` at once, without calling it again (a second call could contend
with the first for the library's locks, or hang the same way). Only a call that hangs while
holding the GIL stops the process regardless; out-of-process workers, which can be killed and
restarted, are the remedy for that.

One worker thread per backend, reused for every case, so library state a backend keeps per
thread (Keras' global state is thread-local) stays where it was put. With the limit off (0) a
call runs inline on the calling thread, exactly as without this module.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SECONDS = 300.0


@dataclass
class Outcome:
    """How one limited call ended: a value, an exception, the limit passing, or not called at all."""

    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    hung_on: str | None = None  # set when not called: the case id this backend hung on earlier


def capture(call: Callable[[], Any]) -> Outcome:
    """Run `call`; whatever it raises (SystemExit too) becomes the outcome, except a user's Ctrl-C."""
    try:
        return Outcome(value=call())
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # an adapter's SystemExit or pytest.exit is a result, not the end of the run
        return Outcome(error=error)


class _Worker:
    """A daemon thread that runs one backend's calls in order; daemon, so a hung call never blocks exit."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"gru-conformance {name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            self._jobs.get()()

    def call(self, call: Callable[[], Any], seconds: float) -> Outcome:
        done = threading.Event()
        box: list[Outcome] = []

        def job() -> None:
            try:
                box.append(capture(call))
            except KeyboardInterrupt as interrupt:  # can't reach this thread from a terminal, but be exact
                box.append(Outcome(error=interrupt))
            finally:
                done.set()

        self._jobs.put(job)
        if not done.wait(seconds):
            return Outcome(timed_out=True)
        return box[0]


@dataclass
class TimeLimit:
    """The limit in seconds (0: none) and the backends that overran it in this process."""

    seconds: float = DEFAULT_SECONDS
    hung: dict[str, str] = field(default_factory=dict)  # backend name -> the case id it hung on
    _workers: dict[str, _Worker] = field(default_factory=dict, repr=False)

    def call(self, backend: str, case_id: str, call: Callable[[], Any]) -> Outcome:
        """`call()` for `backend` under the limit; never raises for what `call` does (Ctrl-C excepted)."""
        if backend in self.hung:
            return Outcome(hung_on=self.hung[backend])
        if self.seconds <= 0:
            return capture(call)
        worker = self._workers.get(backend)
        if worker is None:
            worker = self._workers[backend] = _Worker(backend)
        outcome = worker.call(call, self.seconds)
        if outcome.timed_out:
            self.hung[backend] = case_id
        return outcome

    def describe(self) -> str:
        """What the limit is and does, for the environment record and the help text."""
        if self.seconds <= 0:
            return "none"
        return (
            f"{self.seconds:g} s per run() call; an in-process call that overruns keeps running in a background "
            "thread, its result is error, and the backend's later cases are error without being called"
        )


NO_LIMIT = TimeLimit(0.0)
