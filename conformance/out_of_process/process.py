"""One long-lived worker process per group (`WorkerSpec.group`): start, ask, notice death, kill, restart.

Every request waits on the worker's stdout with a deadline (`select`), so a hung worker can be
told apart from a slow one without threads, and killed: unlike a thread in the suite's own
process, a process can always be stopped, whatever native code it is stuck in. A worker that
dies (a signal, an abort, `os._exit`) or overruns its deadline is reaped, and the request raises
`WorkerCrashed` or `WorkerTimeout` naming the signal or the limit plus the last lines the worker
wrote to stderr; the next request starts a fresh worker. A worker that can't even start (its
factory fails, it dies importing its library) stays broken for the rest of the run: restarting
it for every case would only repeat the failure, slowly.

The worker starts in a session of its own, so a Ctrl-C at the terminal reaches the suite, not
the worker; the worker ends when its stdin closes (the suite's exit, `close_all`) or, on Linux,
when the suite's process dies (`serve.die_with_parent`).
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from conformance.contract import WorkerFailure, WorkerSpec
from conformance.out_of_process.wire import WHERE_SIGNAL, WireError, encode, read_frame

SERVE_MODULE = "conformance.out_of_process.serve"
STDERR_LINES = 200  # how much of the worker's stderr is kept for a crash reason
AFTER_CASE = "a new one starts for the next case"
AFTER_START = "its backends' cases are error for the rest of the run"
WHERE_WAIT_S = 1.0  # how long a hung worker gets to print where it hangs before it is killed
START_TIMEOUT_S = 300.0  # starting a worker imports its library (TensorFlow: seconds, more on a busy machine)


class WorkerCrashed(WorkerFailure):
    """The worker process died while answering."""


class WorkerTimeout(WorkerFailure):
    """The worker didn't answer within the limit; it has been killed."""


class WorkerRaised(WorkerFailure):
    """The adapter in the worker raised; the worker lives on."""


class WorkerUnsupported(Exception):
    """The adapter in the worker raised `UnsupportedCase`; the proxy re-raises it as that."""


def exit_text(returncode: int) -> str:
    """`died with SIGABRT` for a signal, `exited with status 3` for an exit."""
    if returncode < 0:
        try:
            return f"died with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died with signal {-returncode}"
    return f"exited with status {returncode}"


class _Deadline:
    """A readable stream over a pipe's file descriptor whose reads give up at a monotonic deadline."""

    def __init__(self, fd: int, deadline: float | None) -> None:
        self.fd, self.deadline = fd, deadline

    def read(self, size: int) -> bytes:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError
        return os.read(self.fd, min(size, 1 << 20))


@dataclass
class WorkerProcess:
    """The worker of one group, in one precision mode; thread-safe, started on the first request."""

    spec: WorkerSpec
    precision: str = "strict"
    start_timeout_s: float = START_TIMEOUT_S
    starts: int = 0  # how many processes this group has had (restarts = starts - 1)
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _broken: WorkerFailure | None = field(default=None, repr=False)  # a failure to start: final
    _stderr: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES), repr=False)
    _drain: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(
        self,
        header: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None,
        timeout_s: float | None,
        doing: str,
        limit_name: str = "--case-timeout",
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request and wait for its reply; `doing` and `limit_name` name the request and its
        time limit in a failure's reason.

        Raises WorkerCrashed, WorkerTimeout (the worker is then gone, and the next request starts
        another), WorkerRaised (the adapter raised), or WorkerUnsupported.
        """
        with self._lock:
            self._start()
            reply, out = self._exchange(encode(header, arrays), timeout_s, doing, limit_name)
        status = reply.get("status")
        if status == "ok":
            return reply, out
        if status == "unsupported":
            raise WorkerUnsupported(str(reply.get("reason", "")))
        raise WorkerRaised(str(reply.get("reason", reply)))

    def _start(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._process is not None:
            return
        env = {**os.environ, **self.spec.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", SERVE_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.starts += 1
        self.pid = self._process.pid
        self._stderr.clear()
        self._drain = threading.Thread(target=self._keep_stderr, args=(self._process.stderr,), daemon=True)
        self._drain.start()
        hello = encode({"op": "hello", "factory": self.spec.factory, "precision": self.precision})
        try:
            reply, _ = self._exchange(hello, self.start_timeout_s, "start", "the worker's start limit", AFTER_START)
        except WorkerFailure as failure:
            self._broken = type(failure)(f"could not start: {failure}")
            raise self._broken from None
        if reply.get("status") != "ok":
            self._stop()
            self._broken = WorkerRaised(f"the {self.spec.group} worker could not start: {reply.get('reason', reply)}")
            raise self._broken

    def _exchange(
        self, frame: bytes, timeout_s: float | None, doing: str, limit_name: str, then: str = AFTER_CASE
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        deadline = None if not timeout_s or timeout_s <= 0 else time.monotonic() + timeout_s
        try:
            process.stdin.write(frame)
            process.stdin.flush()
            got = read_frame(_Deadline(process.stdout.fileno(), deadline))  # type: ignore[arg-type]
        except TimeoutError:
            self._ask_where(process)
            self._kill()
            raise WorkerTimeout(
                f"{doing} exceeded the time limit of {timeout_s:g} s ({limit_name}): the {self.spec.group} worker "
                f"process (pid {process.pid}) was killed (SIGKILL); {then}" + self._tail()
            ) from None
        except (OSError, WireError):
            got = None
        if got is None:
            code = self._reap()
            raise WorkerCrashed(
                f"the {self.spec.group} worker process (pid {process.pid}) {exit_text(code)} during {doing}; {then}"
                + self._tail()
            )
        return got

    def _keep_stderr(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)

    def _ask_where(self, process: subprocess.Popen[bytes]) -> None:
        """Before killing a hung worker, let faulthandler print where it hangs (see `_tail`)."""
        seen = len(self._stderr)
        try:
            os.kill(process.pid, WHERE_SIGNAL)
        except ProcessLookupError:
            return
        waited = time.monotonic() + WHERE_WAIT_S
        while time.monotonic() < waited and len(self._stderr) == seen:
            time.sleep(0.02)
        time.sleep(0.05)  # the rest of the stack follows its first line

    def _tail(self) -> str:
        """What the worker last said on stderr: where it died or hung (faulthandler's fatal error and
        innermost frame) when it printed that, else its last three lines."""
        if self._drain is not None and self._process is None:
            self._drain.join(timeout=2)  # the last lines arrive after the process is gone
        lines = list(self._stderr)
        stacks = [i for i, line in enumerate(lines) if line.rstrip().endswith("(most recent call first):")]
        if stacks:
            frames = [line.strip() for line in lines[stacks[-1] + 1 :] if line.strip().startswith("File ")]
            fatal = [line for line in lines if line.startswith("Fatal Python error")]
            said = [*fatal[-1:], *(f"at {frame}" for frame in frames[:1])]
            return f"; {'; '.join(said)[-600:]}"
        tail = lines[-3:]
        return f"; its last stderr lines: {' | '.join(tail)[-600:]!r}" if tail else ""

    def _reap(self) -> int:
        """The exit status of a worker whose stdout ended (killed if it lingers without a stdout)."""
        process = self._process
        assert process is not None
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            code = process.returncode
        self._process = None
        return code

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker's session: anything it started goes too
        except (ProcessLookupError, PermissionError):
            process.kill()
        process.wait()
        self._process = None

    def _stop(self) -> None:
        """Ask politely (close stdin: the worker's loop ends), then kill."""
        process = self._process
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=5)
            self._process = None
        except (OSError, subprocess.TimeoutExpired):
            self._kill()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def facts(self) -> dict[str, Any]:
        """How this group's worker runs, for the report's notes."""
        return {
            "group": self.spec.group,
            "factory": self.spec.factory,
            "env": dict(self.spec.env),
            "pid": self.pid,
            "starts": self.starts,
            "command": f"{sys.executable} -m {SERVE_MODULE}",
            "transport": "stdin/stdout pipes, length-prefixed JSON header + .npy arrays (no pickle)",
        }


_POOL: dict[tuple[Any, ...], WorkerProcess] = {}
_POOL_LOCK = threading.Lock()


def worker_for(spec: WorkerSpec, precision: str) -> WorkerProcess:
    """The one worker of this group and precision mode in this process (not started yet)."""
    key = (spec.group, spec.factory, tuple(sorted(spec.env.items())), precision)
    with _POOL_LOCK:
        if key not in _POOL:
            _POOL[key] = WorkerProcess(spec, precision)
        return _POOL[key]


@atexit.register
def close_all() -> None:
    """Stop every worker (at the suite's exit; tests call it too)."""
    with _POOL_LOCK:
        workers = list(_POOL.values())
    for worker in workers:
        worker.close()
