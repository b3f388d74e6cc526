"""A pool of warm exporter processes: each imports torch and the exporter once, then forks a child per export.

Why not one export per fresh interpreter (what the store did first): starting Python and
importing torch, onnx, onnxscript and the modules the exporter loads lazily on its first
call costs about as much as a small export itself, and the full tier needs thousands.
Why not many exports in one process: the torch.export-based exporter keeps state between
calls, and a later export can come out different, not only renamed: after another export
a model's seq_len axis has been seen to come out fixed at the trace length.

So a server process (`python -m <exporter's module> --serve CACHE_ROOT`) imports once and
exports nothing itself; for each case id it reads on stdin it forks a child, which
exports, saves to the cache and exits. Every child starts from the same imported, never
exported state, so an export can't depend on what was exported before it. The modules the
exporter loads lazily are found once per library versions (a throwaway export in a child
that reports what it imported; `preload_path`) and imported by every later server. Servers
stay up between batches until the process exits, so exports asked for one at a time (under
pytest-xdist each worker exports what its cases need, when they need it) reuse a warm one.
`tests/test_onnx_export.py` measures the guarantee: an export is byte-identical alone, after
others in one server, and in a fresh interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

PRELOAD_FORMAT = 1


def preload_path(root: Path, exporter: str, versions: dict[str, str]) -> Path:
    """Where the modules an exporter imports lazily are listed, per library versions."""
    tag = "-".join(f"{k}{v}" for k, v in sorted(versions.items()))
    return root / "onnx" / "preload" / f"{exporter}-{PRELOAD_FORMAT}-{tag}.json"


class Server:
    """One warm exporter process, driven over pipes: `export(case_id)` -> the child's exit status."""

    def __init__(self, worker_module: str, root: Path, env: dict[str, str], cwd: Path) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed by `close`)
        self.process = subprocess.Popen(
            [sys.executable, "-m", worker_module, "--serve", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=cwd,
        )

    def export(self, case_id: str) -> tuple[int, str]:
        """(exit status of the exporting child, its error tail); a dead server reads as a failure."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(case_id + "\n")
            stdin.flush()
            reply = stdout.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            return -1, self.error_tail()
        status, _, tail = reply.rstrip("\n").partition(" ")
        return int(status), tail

    def error_tail(self) -> str:
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().splitlines() if line.strip()]
        code = self.process.poll()
        return lines[-1] if lines else f"exporter process exited with status {code}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


_idle: dict[tuple[str, str], list[Server]] = {}  # warm servers between batches, per (exporter module, root)
_idle_lock = threading.Lock()


def _take(worker_module: str, root: Path, env: dict[str, str], cwd: Path) -> Server:
    """A warm idle server for this exporter and cache, or a new one."""
    with _idle_lock:
        idle = _idle.get((worker_module, str(root)), [])
        while idle:
            server = idle.pop()
            if server.alive:
                return server
            server.close()
    return Server(worker_module, root, env, cwd)


def _give_back(worker_module: str, root: Path, server: Server) -> None:
    """Keep a live server for the next batch (a lazy export, under xdist, comes one at a time)."""
    if not server.alive:
        server.close()
        return
    with _idle_lock:
        _idle.setdefault((worker_module, str(root)), []).append(server)


@atexit.register
def _close_idle() -> None:
    with _idle_lock:
        for servers in _idle.values():
            for server in servers:
                server.close()
        _idle.clear()


def run_pool(
    worker_module: str,
    root: Path,
    case_ids: Iterable[str],
    workers: int,
    env: dict[str, str],
    cwd: Path,
    on_done: Callable[[str, int, str], None],
) -> None:
    """Export every case id on `workers` servers; `on_done(case_id, status, error_tail)` after each."""
    todo: queue.Queue[str] = queue.Queue()
    for case_id in case_ids:
        todo.put(case_id)
    if todo.empty():
        return

    def drive() -> None:
        server: Server | None = None
        try:
            while True:
                try:
                    case_id = todo.get_nowait()
                except queue.Empty:
                    return
                if server is None or not server.alive:
                    if server is not None:
                        server.close()
                    server = _take(worker_module, root, env, cwd)
                status, tail = server.export(case_id)
                on_done(case_id, status, tail)
        finally:
            if server is not None:
                _give_back(worker_module, root, server)

    threads = [threading.Thread(target=drive, daemon=True) for _ in range(max(1, min(workers, todo.qsize())))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- the server side: runs inside `python -m <exporter's module> --serve CACHE_ROOT` ------------


def _quiet() -> contextlib.ExitStack:
    """Exporters print and warn a lot; a worker's output is only its reply line."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    stack = contextlib.ExitStack()
    sink = stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115  (closed by the stack)
    stack.enter_context(contextlib.redirect_stdout(sink))
    return stack


def _in_child(work: Callable[[], None], report: IO[str] | None = None) -> tuple[int, str]:
    """Run `work` in a forked child; (its exit status, or minus the signal that killed it; its error)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: work, then leave without running the parent's clean-up
        os.close(read_fd)
        code = 0
        try:
            work()
        except BaseException as error:  # reported to the parent, which records the failure
            with contextlib.suppress(OSError):
                os.write(write_fd, f"{type(error).__name__}: {error}".splitlines()[0].encode()[:500])
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status < 0 and not message:
        message = f"export process killed by signal {-status}"
    return status, message


def _preload(path: Path, discover: Callable[[], None]) -> None:
    """Import the modules the exporter loads lazily; list them first (in a throwaway child) if unknown.

    Servers started together wait for the first one's list (a lock file) rather than each discovering it.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            _discover(path, discover)
    for name in json.loads(path.read_text(encoding="utf-8")):
        with contextlib.suppress(Exception):  # a module that only imports mid-export stays lazy
            importlib.import_module(name)


def _discover(path: Path, discover: Callable[[], None]) -> None:
    """Export in a throwaway child and write down the modules that imported."""
    read_fd, write_fd = os.pipe()

    def record() -> None:
        before = set(sys.modules)
        discover()
        names = sorted(set(sys.modules) - before)
        with os.fdopen(write_fd, "w") as out:
            out.write(json.dumps(names))

    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            with _quiet():
                record()
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    try:
        names = json.loads(text)
    except ValueError:
        names = []
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(names), encoding="utf-8")
    tmp.replace(path)


def serve(export_one: Callable[[str], None], discover: Callable[[], None], preload: Path) -> int:
    """The server loop: preload, then one forked child per case id read from stdin; reply `STATUS ERROR`."""
    with _quiet():
        _preload(preload, discover)
    for line in sys.stdin:
        case_id = line.strip()
        if not case_id:
            continue

        def work(case_id: str = case_id) -> None:
            with _quiet():
                export_one(case_id)

        status, message = _in_child(work)
        sys.__stdout__.write(f"{status} {message}\n")  # type: ignore[union-attr]
        sys.__stdout__.flush()  # type: ignore[union-attr]
    return 0
