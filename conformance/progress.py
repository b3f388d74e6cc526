"""Progress of long preparation (exports, compiles): what is being built, how many of how many, elapsed time.

Why a module of the core: a backend that builds models before its first case (ONNX
exports, JAX programs) can take minutes cold, and a terminal that shows nothing but
`collected 210 items` meanwhile looks hung. Backends report through `task()`; the pytest
plugin installs a reporter that writes to pytest's terminal. Without a reporter (library
use, the project's own tests) a task costs a counter and prints nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


class Reporter(Protocol):
    """Where progress goes; `TerminalProgress` is the plugin's."""

    def started(self, task: Task) -> None: ...

    def advanced(self, task: Task, item: str) -> None: ...

    def finished(self, task: Task) -> None: ...


@dataclass
class Task:
    """One batch of builds: `what` (e.g. `export (dynamo)`), `total` to build, `done` so far."""

    what: str
    total: int
    note: str = ""  # e.g. "3 cached": shown on the first line
    done: int = 0
    failed: int = 0  # builds that raised: the cases that need them record why
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at

    def line(self, item: str = "") -> str:
        width = len(str(self.total))
        text = f"{self.what} [{self.done:>{width}}/{self.total}] {self.elapsed:6.1f} s"
        return f"{text}  {item}" if item else text


_reporter: Reporter | None = None
_lock = threading.Lock()


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send the progress of every task started inside this block to `reporter`."""
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        _reporter = previous


class Handle:
    """What a builder holds while it works: `step(item)` after each build."""

    def __init__(self, task: Task, reporter: Reporter | None) -> None:
        self.task, self._reporter = task, reporter

    def step(self, item: str = "", ok: bool = True) -> None:
        with _lock:
            self.task.done += 1
            self.task.failed += not ok
            if self._reporter is not None:
                self._reporter.advanced(self.task, item)


@contextlib.contextmanager
def task(what: str, total: int, note: str = "") -> Iterator[Handle]:
    """A batch of `total` builds; reported only when a reporter is installed and there is work."""
    reporter = _reporter if total > 0 else None
    handle = Handle(Task(what, total, note), reporter)
    if reporter is not None:
        reporter.started(handle.task)
    try:
        yield handle
    finally:
        if reporter is not None:
            reporter.finished(handle.task)


class Terminal(Protocol):
    """The part of pytest's TerminalReporter that progress uses."""

    @property
    def isatty(self) -> bool: ...

    def write_line(self, line: str) -> None: ...

    def rewrite(self, line: str, erase: bool = False) -> None: ...


class TerminalProgress:
    """Progress on pytest's terminal: one line rewritten in place on a tty, a line every `every` s otherwise."""

    def __init__(self, terminal: Terminal, every: float = 10.0) -> None:
        self.terminal, self.every = terminal, every
        self._last = 0.0

    def started(self, task: Task) -> None:
        note = f" ({task.note})" if task.note else ""
        self.terminal.write_line(f"{task.what}: {task.total} to build{note}")
        self._last = time.perf_counter()

    def advanced(self, task: Task, item: str) -> None:
        if self.terminal.isatty:
            self.terminal.rewrite(task.line(item), erase=True)
        elif time.perf_counter() - self._last >= self.every and task.done < task.total:
            self.terminal.write_line(task.line(item))
            self._last = time.perf_counter()

    def finished(self, task: Task) -> None:
        line = f"{task.what}: {task.done - task.failed} of {task.total} built in {task.elapsed:.1f} s"
        if task.failed:
            line += f" ({task.failed} failed: the checks that need them say why)"
        if self.terminal.isatty:
            self.terminal.rewrite(line, erase=True)
            self.terminal.write_line("")  # ends the rewritten line
        else:
            self.terminal.write_line(line)
