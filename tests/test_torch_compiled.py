"""torch.compile(nn.GRU): a graph holding the GRU is compiled and run, or the cell says it fell back to eager.

The compiled cases are the smallest the matrix has (one or two GRU cells): inductor
compiles each cell to its own C++ kernels, and its cache (`.cache/inductor`) makes a
second run cheap.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch

from backends.torch_compiled import MAX_CELLS_ENV, CompiledTorchGru, cells, first_call
from conformance.case import Case
from conformance.engine import check, check_backward
from conformance.verdict import Verdict

TINY = Case(input_size=2, hidden_size=3, batch=2, seq_len=1, initial_state=True)


@pytest.fixture(autouse=True)
def fresh_dynamo():  # type: ignore[no-untyped-def]
    """Dynamo remembers a frame it once ran eagerly (the planted test's) until reset: each test starts clean."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_a_compiled_graph_holding_the_gru_runs_and_agrees() -> None:
    backend = CompiledTorchGru()
    result = check(backend, TINY)
    assert result.verdict == Verdict.PASS, result.reason
    graphs = backend.log.graphs
    assert len(graphs) == 1 and graphs[0].holds_gru and graphs[0].calls == 1
    facts = backend.describe()["compile"]
    assert facts["graphs_holding_gru"] == 1 and facts["torch._dynamo.config.allow_rnn"] is True
    assert torch._dynamo.config.allow_rnn is False  # scoped: restored after the call


def test_new_weights_reuse_the_graph_and_another_shape_recompiles() -> None:
    backend = CompiledTorchGru()
    assert check(backend, TINY).verdict == Verdict.PASS
    assert check(backend, Case(**{**TINY.as_dict(), "seed": 1})).verdict == Verdict.PASS
    assert len(backend.log.graphs) == 1 and backend.log.graphs[0].calls == 2
    other = Case(**{**TINY.as_dict(), "export_shape": "other"})  # first called at batch 4, seq_len 7
    assert check(backend, other).verdict == Verdict.PASS
    first, export_shape = backend.log.graphs  # a graph for the export shape; the run shape's guards pass again
    assert export_shape.calls == 1 and first.calls == 3


def test_planted_out_of_the_box_compile_falls_back_to_eager_and_says_so() -> None:
    """Without allow_rnn dynamo compiles nothing and runs nn.GRU eagerly: never a pass for this column."""
    backend = CompiledTorchGru(allow_rnn=False)
    result = check(backend, TINY)
    assert result.verdict == Verdict.UNSUPPORTED
    assert "fell back to eager" in result.reason and "Attempted to wrap RNN, GRU, or LSTM" in result.reason
    assert backend.log.graphs == []


def test_gradients_come_from_the_compiled_graph() -> None:
    """The backward runs AOTAutograd's compiled backward, verified like the forward: not eager's autograd."""
    backend = CompiledTorchGru()
    result = check_backward(backend, TINY)
    assert result.verdict == Verdict.PASS, result.reason
    assert backend.log.gru_calls() == 1 and backend.log.graphs[0].holds_gru


def test_planted_eager_backward_is_not_this_columns_gradient() -> None:
    """Planted counterpart: without allow_rnn the forward under autograd runs eagerly, and the backward says so."""
    result = check_backward(CompiledTorchGru(allow_rnn=False), TINY)
    assert result.verdict == Verdict.UNSUPPORTED and "fell back to eager" in result.reason


def test_a_remembered_eager_fallback_is_an_error_not_a_pass() -> None:
    """Dynamo caches the eager decision for the frame: turning allow_rnn on later compiles nothing, and the
    verification reports it (no graph break is logged this time, so it is an error, not a refusal)."""
    assert check(CompiledTorchGru(allow_rnn=False), TINY).verdict == Verdict.UNSUPPORTED
    result = check(CompiledTorchGru(), TINY)
    assert result.verdict == Verdict.ERROR and "fell back to eager" in result.reason


def test_packed_input_is_not_compiled_and_dynamo_is_quoted() -> None:
    result = check(CompiledTorchGru(), Case(**{**TINY.as_dict(), "seq_len": 3, "lengths": "sorted"}))
    assert result.verdict == Verdict.UNSUPPORTED
    assert "fell back to eager" in result.reason and "dynamo:" in result.reason


def test_cases_beyond_the_cell_budget_are_not_run_and_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    long = Case(input_size=2, hidden_size=3, num_layers=3, bidirectional=True, seq_len=260)
    assert cells(long) == 1560 and cells(Case(**{**TINY.as_dict(), "export_shape": "other"})) == 7  # first call T7
    reason = CompiledTorchGru().supports(long)
    assert reason is not None and "1560 GRU cells" in reason and "not a refusal of torch" in reason
    monkeypatch.setenv(MAX_CELLS_ENV, "2000")
    assert CompiledTorchGru().supports(long) is None


def test_the_first_call_of_a_traced_elsewhere_case_is_at_its_trace_shape() -> None:
    """`xother` compiles first at (4, 7), `xdegenerate` at (1, 1): a packed batch there can only be full."""
    packed = Case(input_size=2, hidden_size=3, batch=3, seq_len=5, lengths="unsorted")
    other = first_call(Case(**{**packed.as_dict(), "export_shape": "other"}))
    degenerate = first_call(Case(**{**packed.as_dict(), "export_shape": "degenerate"}))
    assert (other.batch, other.seq_len, other.lengths, other.export_shape) == (4, 7, "unsorted", "same")
    assert (degenerate.batch, degenerate.seq_len, degenerate.lengths) == (1, 1, "full")
    assert cells(Case(**{**packed.as_dict(), "export_shape": "degenerate"})) == 5  # the run's 5 steps
