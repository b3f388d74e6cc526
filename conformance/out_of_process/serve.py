"""The worker process: `python -m conformance.out_of_process.serve`, started by `process.WorkerProcess`.

It reads frames (`wire`) from stdin and answers each on its own copy of the original stdout;
file descriptor 1 is pointed at stderr first, so whatever a library prints (TensorFlow's C++
logging, a stray `print`) can never corrupt a frame. The first frame says which factory to call
(`WorkerSpec.factory`) and in which precision mode; the worker then serves `availability`,
`supports`, `describe` and `run` for the backends that factory yields, by name, until stdin ends.

Whatever an adapter raises is answered as a result (`unsupported` for `UnsupportedCase`, `raised`
with the library's first line and where otherwise); only a death of the whole process (a signal,
an abort, `os._exit`) or silence past the time limit is the parent's to notice.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import numpy as np

from conformance.case import Case
from conformance.contract import Backend, UnsupportedCase, configure, first_line
from conformance.data import GruOutput, Inputs, Weights
from conformance.out_of_process.wire import WEIGHTS, WHERE_SIGNAL, WireError, encode, read_frame


def report_where_it_dies() -> None:
    """Python's stack on stderr when the worker dies of a signal (SIGABRT, SIGSEGV) or is asked where it hangs."""
    faulthandler.enable()
    faulthandler.register(WHERE_SIGNAL, all_threads=False)


def die_with_parent() -> None:
    """Linux: the kernel kills this worker when the suite's process dies, even mid-run (no orphans)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def reason(error: BaseException, where: str) -> str:
    """The library's first line and where it was raised, as the pipeline quotes an in-process crash."""
    frames = traceback.extract_tb(error.__traceback__)
    at = f"at {frames[-1].filename}:{frames[-1].lineno}, " if frames else ""
    return f"{first_line(error)} ({at}in {where}, in the worker process)"


def load_backends(factory: str, precision: str) -> dict[str, Backend]:
    module_name, _, attr = factory.partition(":")
    make: Callable[[], Iterable[Backend]] = getattr(importlib.import_module(module_name), attr)
    backends = {}
    for backend in make():
        configure(backend, precision)
        backends[backend.name] = backend
    return backends


def as_arrays(value: Any) -> dict[str, np.ndarray]:
    """A `GruOutput` as the arrays that go back; what can't go back is refused, naming what came."""
    if not isinstance(value, GruOutput):
        raise TypeError(f"run returned {type(value).__qualname__}; expected GruOutput(output=..., h_n=...)")
    return {"output": np.asarray(value.output), "h_n": np.asarray(value.h_n)}


def supports_many(backend: Backend, case_ids: list[str]) -> dict[str, Any]:
    """`supports` of many cases: each distinct answer once (`reasons`), per case its index there, and where
    `supports` raised, `-1 - k` for the k-th entry of `raised` (what the single request would have said)."""
    reasons: dict[Any, int] = {}
    raised: dict[str, int] = {}
    index = []
    for case_id in case_ids:
        try:
            found = backend.supports(Case.from_id(case_id))
        except Exception as error:
            index.append(-1 - raised.setdefault(reason(error, "supports"), len(raised)))
            continue
        key = found if found is None or isinstance(found, str) else str(found)
        index.append(reasons.setdefault(key, len(reasons)))
    return {"reasons": list(reasons), "index": index, "raised": list(raised)}


def answer(backends: dict[str, Backend], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """One reply frame for one request frame."""
    op, name = header.get("op"), header.get("backend")
    backend = backends.get(str(name))
    if backend is None:
        return encode({"status": "refused", "reason": f"no backend named {name!r} here; have {sorted(backends)}"})
    try:
        if op == "availability":
            availability = backend.availability()
            value: Any = {
                "available": availability.available,
                "reason": availability.reason,
                "install_hint": availability.install_hint,
            }
            return encode({"status": "ok", "value": value})
        if op == "supports":
            return encode({"status": "ok", "value": backend.supports(Case.from_id(header["case"]))})
        if op == "supports_many":
            return encode({"status": "ok", "value": supports_many(backend, header["cases"])})
        if op == "describe":
            return encode({"status": "ok", "value": backend.describe()})
        if op == "run":
            weights = Weights({k[len(WEIGHTS) :]: v for k, v in arrays.items() if k.startswith(WEIGHTS)})
            inputs = Inputs(x=arrays["x"], h0=arrays.get("h0"), lengths=arrays.get("lengths"))
            output = backend.run(Case.from_id(header["case"]), weights, inputs)
            return encode({"status": "ok"}, as_arrays(output))
    except UnsupportedCase as error:
        return encode({"status": "unsupported", "reason": str(error)})
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # an adapter's SystemExit is a result too
        return encode({"status": "raised", "reason": reason(error, str(op))})
    return encode({"status": "refused", "reason": f"unknown request {op!r}"})


def serve(requests: BinaryIO, replies: BinaryIO) -> int:
    frame = read_frame(requests)
    if frame is None:
        return 0
    hello, _ = frame
    try:
        backends = load_backends(str(hello["factory"]), str(hello.get("precision", "strict")))
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        replies.write(encode({"status": "raised", "reason": reason(error, "the worker's factory")}))
        replies.flush()
        return 1
    replies.write(encode({"status": "ok", "value": sorted(backends), "pid": os.getpid()}))
    replies.flush()
    while (frame := read_frame(requests)) is not None:
        try:
            reply = answer(backends, *frame)
        except WireError as error:  # an output of a dtype that can't cross
            reply = encode({"status": "raised", "reason": f"WireError: {error} (in the worker process)"})
        replies.write(reply)
        replies.flush()
    return 0


def main() -> int:
    die_with_parent()
    report_where_it_dies()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # library output goes to stderr; the protocol has the original stdout to itself
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    sys.exit(main())
