"""Out-of-process backends: what crosses the process boundary, and what happens when a worker dies or hangs.

The planted backends (`tests/planted_workers.py`) are the example NumPy GRU in a worker that
aborts, hangs, exits or writes to stdout on bidirectional cases only, so each test shows the
failing case as `error` with the signal or the limit, and the next case, on a restarted worker,
passing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import planted_workers
import pytest
from example_gru_backend.adapter import NumpyGru

from conformance import selection
from conformance.case import Case
from conformance.contract import WorkerFailure
from conformance.data import case_data, fresh
from conformance.engine import check
from conformance.matrix import cases, zero_length
from conformance.out_of_process import WorkerBackend, close_all, in_worker, process, wire
from conformance.time_limit import TimeLimit
from conformance.verdict import Verdict

SMOKE = cases("smoke", 0)
UNI = [c for c in SMOKE if not c.bidirectional]
BI = next(c for c in SMOKE if c.bidirectional)


@pytest.fixture(autouse=True)
def _fresh_workers():  # type: ignore[no-untyped-def]
    """Each test starts its own workers (the pool is per process) and leaves none behind."""
    close_all()
    process._POOL.clear()
    yield
    close_all()
    process._POOL.clear()


def proxy(factory, timeout: float = 60.0) -> WorkerBackend:  # type: ignore[no-untyped-def]
    backend = in_worker(next(factory()), case_timeout_s=timeout)
    assert isinstance(backend, WorkerBackend)
    return backend


# --- the frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.linspace(-1, 1, 7, dtype=np.float64),
        np.array([1.5, -0.0, np.inf, np.nan], dtype=np.float16),
        np.array([[1.0, -2.5], [3.25, 1e-3]], dtype=ml_dtypes.bfloat16),
        np.array([5, 1, 3], dtype=np.int64),
        np.array([[True, False]], dtype=bool),
        np.zeros((0, 4), dtype=np.float32),
        np.array(2.5),
    ],
)
@pytest.mark.parametrize("writeable", [True, False])
def test_an_array_crosses_with_its_dtype_shape_bits_and_read_only_flag(array: np.ndarray, writeable: bool) -> None:
    array = array.copy()
    array.setflags(write=writeable)
    header, arrays = wire.read_frame(io.BytesIO(wire.encode({"op": "x"}, {"a": array})))  # type: ignore[misc]
    got = arrays["a"]
    assert header["op"] == "x"
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.tobytes() == array.tobytes()
    assert got.flags.writeable == writeable


def test_an_array_of_objects_or_complex_numbers_cannot_cross() -> None:
    for bad in (np.array([object()]), np.array([1j])):
        with pytest.raises(wire.WireError, match="can't cross the process boundary"):
            wire.encode({}, {"a": bad})


def test_a_frame_cut_short_is_refused_not_misread() -> None:
    frame = wire.encode({"op": "run"}, {"x": np.ones(8)})
    for cut in (3, 10, len(frame) - 1):
        with pytest.raises(wire.WireError):
            wire.read_frame(io.BytesIO(frame[:cut]))
    assert wire.read_frame(io.BytesIO(b"")) is None  # a clean end of stream


# --- exactly the same data and answers as in process ---------------------------------------------


def _as_seen(case: Case) -> dict[str, object]:
    """What an in-process adapter observes: the pipeline hands each backend its own copies (`fresh`)."""
    weights, inputs = fresh(*case_data(case))
    arrays = {**weights.tensors, "x": inputs.x, "h0": inputs.h0, "lengths": inputs.lengths}
    return {name: planted_workers.describe(a) for name, a in arrays.items()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
def test_the_worker_gets_exactly_the_arrays_an_in_process_adapter_gets(dtype: str) -> None:
    case = Case.from_id(f"I5H6-L2-bi-bf-bias-h0-B3T5-unsorted-{dtype}-xsame-s0")
    result = check(proxy(planted_workers.inspecting), case)
    assert result.verdict == Verdict.UNSUPPORTED
    assert eval(result.reason) == _as_seen(case)  # repr of plain tuples, strings and None


def test_the_fidelity_check_sees_a_read_only_flag_changed_on_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the sending side marks every array read-only; the worker's adapter then sees other arrays."""
    honest = wire.array_bytes

    def forgetful(array: np.ndarray) -> tuple[bytes, dict[str, object]]:
        blob, entry = honest(array)
        return blob, {**entry, "writeable": False}

    monkeypatch.setattr(wire, "array_bytes", forgetful)
    case = Case.from_id("I5H6-L2-bi-bf-bias-h0-B3T5-unsorted-float32-xsame-s0")
    assert eval(check(proxy(planted_workers.inspecting), case).reason) != _as_seen(case)


def test_a_worker_returns_bit_for_bit_what_the_same_adapter_returns_in_process() -> None:
    in_worker_ = proxy(planted_workers.in_worker)
    local = NumpyGru()
    for case in SMOKE:
        weights, inputs = case_data(case)
        there, here = in_worker_.run(case, weights, inputs), local.run(case, weights, inputs)
        for name in ("output", "h_n"):
            a, b = getattr(there, name), getattr(here, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (case.id, name)
    assert in_worker_.worker().starts == 1  # one long-lived worker for every case


def test_selection_runs_what_declares_out_of_process_in_a_worker() -> None:
    chosen = selection.select(
        ["planted-in-worker", "numpy-example", "keras-tensorflow", "keras-torch", "tflite", "keras-jax"],
        modules=["planted_workers:in_worker", "example_gru_backend.adapter:backends"],
    )
    kinds = {b.name: type(b).__name__ for b in chosen}
    assert kinds == {
        "planted-in-worker[cpu]": "WorkerBackend",
        "numpy-example[cpu]": "NumpyGru",
        "keras-tensorflow[cpu]": "WorkerBackend",
        "keras-torch[cpu]": "WorkerBackend",
        "tflite/builtins[cpu]": "WorkerBackend",
        "tflite/tf-ops[cpu]": "WorkerBackend",
        "keras-jax[cpu]": "KerasJaxGru",  # Keras on JAX stays in the suite's process
    }
    assert not any(b.worker().pid for b in chosen if isinstance(b, WorkerBackend))  # selecting starts nothing


def test_library_chatter_on_stdout_does_not_reach_the_protocol() -> None:
    backend = proxy(planted_workers.chatty)
    assert [check(backend, c).verdict for c in (UNI[0], BI, UNI[1])] == [Verdict.PASS] * 3
    assert backend.worker().starts == 1


# --- death and hangs are results; the run goes on ------------------------------------------------


def _three(backend: WorkerBackend, seconds: float = 60.0) -> list[tuple[Verdict, str]]:
    """A case before, the bidirectional case that misbehaves, and a case after it, under the run's limit."""
    limit = TimeLimit(seconds)  # what --case-timeout gives the pipeline, which hands it to the worker
    return [(r.verdict, r.reason) for r in (check(backend, c, limit=limit) for c in (UNI[0], BI, UNI[1]))]


def test_a_worker_that_aborts_gives_error_with_sigabrt_and_the_next_case_runs_on_a_new_worker() -> None:
    backend = proxy(planted_workers.aborting)
    (before, _), (verdict, reason), (after, _) = _three(backend)
    assert (before, verdict, after) == (Verdict.PASS, Verdict.ERROR, Verdict.PASS)
    assert "died with SIGABRT during run" in reason
    assert "Fatal Python error: Aborted" in reason and "in misbehave" in reason  # where it died
    assert "worker.py" not in reason and "process.py" not in reason  # no suite-internal location
    assert backend.worker().starts == 2


def test_a_worker_that_hangs_is_killed_at_the_time_limit_and_the_next_case_runs() -> None:
    backend = proxy(planted_workers.hanging)  # its own 60 s: the run's 2 s must be the one that counts
    (before, _), (verdict, reason), (after, _) = _three(backend, seconds=2.0)
    assert (before, verdict, after) == (Verdict.PASS, Verdict.ERROR, Verdict.PASS)
    assert "exceeded the time limit of 2 s (--case-timeout)" in reason and "SIGKILL" in reason
    assert "in misbehave" in reason  # faulthandler said where it hung before it was killed
    assert backend.worker().starts == 2


def test_a_worker_that_exits_gives_error_with_its_status() -> None:
    (_, _), (verdict, reason), (after, _) = _three(proxy(planted_workers.exiting))
    assert verdict == Verdict.ERROR and "exited with status 3 during run" in reason
    assert after == Verdict.PASS


def test_a_worker_that_cannot_start_is_error_on_every_case_without_restarting_each_time() -> None:
    backend = proxy(planted_workers.broken_start)
    assert backend.availability().available  # not a quiet skip: its cases must say why they didn't run
    results = [check(backend, c) for c in (UNI[0], BI, UNI[1])]
    assert {r.verdict for r in results} == {Verdict.ERROR}
    assert all("could not start: RuntimeError: planted: this factory fails" in r.reason for r in results)
    assert backend.worker().starts == 1
    with pytest.raises(WorkerFailure):
        backend.run(UNI[0], *case_data(UNI[0]))
    assert "describe_error" in backend.describe()


def test_a_worker_that_dies_while_starting_is_error_with_its_signal_and_is_not_restarted_per_case() -> None:
    backend = proxy(planted_workers.dies_at_start)
    results = [check(backend, c) for c in (UNI[0], BI)]
    assert {r.verdict for r in results} == {Verdict.ERROR}
    reason = results[0].reason
    assert "could not start" in reason and "died with SIGABRT during start" in reason
    assert "cases are error for the rest of the run" in reason and "next case" not in reason
    assert backend.worker().starts == 1


def test_a_timeout_is_not_a_crash_and_a_crash_is_not_a_timeout() -> None:
    """The reason names what happened: a planted swap of the two messages would fail here."""
    crash = _three(proxy(planted_workers.aborting))[1][1]
    hang = _three(proxy(planted_workers.hanging), seconds=2.0)[1][1]
    assert "time limit" not in crash and "SIGABRT" not in hang


@pytest.mark.e2e
def test_the_suite_completes_past_planted_crashes_and_hangs(suite, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = suite(
        "--backend-module",
        "planted_workers:aborting",
        "--backend-module",
        "planted_workers:hanging",
        "--backends",
        "planted-abort,planted-hang",
        "--tier",
        "smoke",
        "--case-timeout",
        "3",
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # failures, not a crash of the run
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    results = [r for r in records if r["kind"] == "result"]
    tier = len(SMOKE) + len(zero_length())  # every tier adds the declared zero-length cases
    assert records[-1]["kind"] == "end" and len(results) == 2 * tier
    for r in results:
        bidirectional = "-bi-" in r["rerun"]
        assert r["verdict"] == ("error" if bidirectional else "pass"), r
        if bidirectional:
            assert ("SIGABRT" if r["backend"].startswith("planted-abort") else "time limit of 3 s") in r["reason"]
            assert "--case-timeout 3" in r["rerun"]


# --- supports, asked in batches ------------------------------------------------------------------


def _count_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    real = WorkerBackend._ask

    def counting(self, op, **fields):  # type: ignore[no-untyped-def]
        asked.append(op)
        return real(self, op, **fields)

    monkeypatch.setattr(WorkerBackend, "_ask", counting)
    return asked


def test_supports_many_answers_as_one_request_per_case_does_in_few_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.matrix import load
    from conformance.plan import space

    every = space(load(), 0).cases  # the matrix's whole space: what the plan asks of each backend
    asked = _count_requests(monkeypatch)
    batched = proxy(planted_workers.picky)
    answers = batched.supports_many(every)
    requests = len(asked)
    assert requests == -(-len(every) // 5000), requests  # one per 5000 cases
    sample = every[:: max(1, len(every) // 300)]
    one_by_one = proxy(planted_workers.picky)  # a fresh proxy: nothing remembered
    expected = [one_by_one.supports(c) for c in sample]
    assert [answers[every.index(c)] for c in sample] == expected
    assert any(a is not None and "bidirectional" in a for a in answers) and None in answers
    asked.clear()
    assert [batched.supports(c) for c in sample] == expected
    assert asked == []  # remembered, the raised ones included


def test_a_supports_that_raises_in_a_batch_still_reaches_the_next_run_as_an_error() -> None:
    case = Case.from_id("I5H6-L1-uni-bf-bias-h0-B3T5-dense-float16-xsame-s0")
    backend = proxy(planted_workers.picky)
    assert backend.supports_many([case]) == [None]  # admitted, as a raising supports is by the plan
    result = check(backend, case)
    assert result.verdict == Verdict.ERROR and "planted: supports broke on" in result.reason


def test_the_plan_asks_a_worker_backend_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import plan
    from conformance.matrix import load

    asked = _count_requests(monkeypatch)
    backend = proxy(planted_workers.picky)
    whole = plan.space(load(), 0)
    built = plan.build(cases("pairwise", 0), [backend], whole)
    assert built.extras(backend.name)  # it planned extras from its own space
    assert set(asked) == {"supports_many"} and len(asked) == -(-len(whole.cases) // 5000), asked
