"""Out-of-process backends: an adapter that declares `OutOfProcess` runs in a long-lived worker process.

Why: some libraries must not share a process with others (Keras picks its backend once per
process; TensorFlow and JAX each bring their own runtime), and some can take the process down
(an abort in native code) or hang in it. A worker can be killed and restarted; a thread can't.

    wire.py     frames: JSON header + .npy arrays, never pickle
    serve.py    the worker process (python -m conformance.out_of_process.serve)
    process.py  one worker per group: start, request with a deadline, death and timeout, restart
    proxy.py    WorkerBackend, the Backend the pipeline sees; in_worker() wraps what declares it
"""

from conformance.out_of_process.process import WorkerCrashed, WorkerRaised, WorkerTimeout, close_all
from conformance.out_of_process.proxy import CASE_TIMEOUT_S, WorkerBackend, in_worker

__all__ = [
    "CASE_TIMEOUT_S",
    "WorkerBackend",
    "WorkerCrashed",
    "WorkerRaised",
    "WorkerTimeout",
    "close_all",
    "in_worker",
]
