"""Exported models: correct at other run shapes, weights rebound by name, cached, isolated.

Exports are slow (a forked child of a warm exporter process each), so the tests share
a few small signatures: the repo cache serves reruns; the cache and isolation tests use
a private root so they see real exports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from backends.onnx.column import OnnxColumn
from backends.onnx.export_store import STORE, ModelStore, Signature, _export_isolated
from backends.onnx.ort import ORT
from backends.onnx.reference import REFERENCE
from backends.onnx.source_dynamo import DynamoSource
from backends.onnx.source_torch import TorchExportSource, weights_to_inputs
from backends.onnx.source_torchscript import TorchScriptSource
from conformance.case import Case
from conformance.contract import UnsupportedCase
from conformance.data import case_data
from conformance.oracle import gru_reference

# Packed, unsorted, bidirectional, h0, batch_first: the hardest path; exported at the fixed other shape (B4, T7).
PACKED = Case(
    input_size=3,
    hidden_size=4,
    num_layers=2,
    bidirectional=True,
    batch_first=True,
    initial_state=True,
    batch=3,
    seq_len=5,
    lengths="unsorted",
    export_shape="other",
)
DENSE = Case(input_size=2, hidden_size=3, batch=2, seq_len=4, export_shape="other")


TORCHSCRIPT, DYNAMO = TorchScriptSource(), DynamoSource()


def column(source: TorchExportSource, runtime: str = "ort") -> OnnxColumn:
    return OnnxColumn.of(source, ORT if runtime == "ort" else REFERENCE)


def error(backend: OnnxColumn, case: Case) -> float:
    weights, inputs = case_data(case)
    got = backend.run(case, weights, inputs)
    want = gru_reference(case, weights, inputs)
    return max(
        float(np.max(np.abs(got.output.astype(np.float64) - want.output))),
        float(np.max(np.abs(got.h_n.astype(np.float64) - want.h_n))),
    )


@pytest.mark.parametrize("lengths", ["unsorted", "full"])
@pytest.mark.parametrize("run_dims", [(3, 5), (2, 1), (1, 7)])
def test_torchscript_packed_export_is_right_at_other_shapes(lengths: str, run_dims: tuple[int, int]) -> None:
    """One export at (5, 8) serves every run shape, including batch 1 and seq_len 1, and new weights."""
    batch, seq_len = run_dims
    if batch < 2 or seq_len < 2:
        lengths = "full"
    case = Case(**{**PACKED.as_dict(), "batch": batch, "seq_len": seq_len, "lengths": lengths})
    assert case.export_dims != run_dims
    assert error(column(TORCHSCRIPT), case) < 1e-5


def test_rebinding_weights_is_verified_not_trusted() -> None:
    """Two seeds share one export; each must match its own oracle, and not the other's."""
    backend = column(TORCHSCRIPT)
    first, second = PACKED, Case(**{**PACKED.as_dict(), "seed": 1})
    assert Signature.of("torchscript", first) == Signature.of("torchscript", second)
    assert error(backend, first) < 1e-5 and error(backend, second) < 1e-5
    weights, inputs = case_data(first)
    other_weights, _ = case_data(second)
    stale = backend.run(first, other_weights, inputs)  # the wrong weights must show
    assert np.max(np.abs(stale.output - gru_reference(first, weights, inputs).output)) > 1e-3


def test_dynamo_dense_export_matches_and_records_facts() -> None:
    backend = column(DYNAMO)
    assert error(backend, DENSE) < 1e-5
    facts = STORE.get(DYNAMO, DENSE).facts
    assert facts["form"] == "GRU op" and facts["opset"] >= 18
    assert any('"linear_before_reset": 1' in g for g in facts["gru_attributes"])


def test_dynamo_packed_export_is_unsupported_with_torchs_message() -> None:
    weights, inputs = case_data(PACKED)
    with pytest.raises(UnsupportedCase, match=r"^dynamo export: TorchExportError: Failed to export"):
        column(DYNAMO).run(PACKED, weights, inputs)


def test_weights_to_inputs_refuses_a_folded_parameter() -> None:
    """If an exporter folded a parameter away, rebinding must fail loudly rather than guess."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([], "g", [], [], [helper.make_tensor("gru.weight_ih_l0", TensorProto.FLOAT, [1], [0.0])])
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        weights_to_inputs(helper.make_model(graph), ["weight_ih_l0", "weight_hh_l0"])


@pytest.mark.e2e  # a private cache root: every export is a fresh `python -m backends.onnx.source_<exporter>`
def test_second_run_exports_nothing(tmp_path: Path) -> None:
    cases = [DENSE, Case(**{**DENSE.as_dict(), "seed": 3})]  # one signature
    first = ModelStore(tmp_path)
    first.prepare(TORCHSCRIPT, cases)
    assert first.stats.count == {"torchscript": 1}
    second = ModelStore(tmp_path)
    second.prepare(TORCHSCRIPT, cases)
    assert second.get(TORCHSCRIPT, DENSE).status == "ok"
    assert second.stats.count == {}


@pytest.mark.e2e  # a private cache root: real exports, by warm exporter processes and a fresh interpreter
def test_dynamo_export_is_the_same_first_or_after_others(tmp_path: Path) -> None:
    """The torch.export-based exporter keeps state in-process; our exports must not depend on history.

    The same model, byte for byte: exported alone, exported last by one warm exporter process
    after others, and exported by a fresh interpreter that never exported anything.
    """
    others = [Case(input_size=4, hidden_size=2, num_layers=2, bidirectional=True), PACKED]
    alone = ModelStore(tmp_path / "alone")
    alone.prepare(DYNAMO, [DENSE])
    after = ModelStore(tmp_path / "after", workers=1)  # one exporter process: strictly sequential, DENSE last
    after.prepare(DYNAMO, [*others, DENSE])
    assert after.stats.count == {"dynamo": 3}
    fresh = _export_isolated(DYNAMO, Signature.of("dynamo", DENSE), DENSE, tmp_path / "fresh")
    assert fresh.status == "ok"
    assert alone.get(DYNAMO, DENSE).model == after.get(DYNAMO, DENSE).model == fresh.model


IN_ONE_PROCESS = """
import sys
from backends.onnx.export_store import Signature
from backends.onnx.source_dynamo import DynamoSource
from conformance.case import Case
source, models = DynamoSource(), []
for case_id in sys.argv[1:]:
    case = Case.from_id(case_id)
    models.append(source.export(Signature.of("dynamo", case), case).model)
sys.stdout.buffer.write(models[-1])
"""


@pytest.mark.e2e  # exports in a subprocess, so this test process's exporter state stays untouched
def test_exports_in_one_process_do_depend_on_history(tmp_path: Path) -> None:
    """The counterpart: what the isolation prevents is real. In one process, an export after another differs."""
    import subprocess
    import sys

    from backends.onnx.export_store import REPO

    def last_model(*cases: Case) -> bytes:
        command = [sys.executable, "-c", IN_ONE_PROCESS, *(c.id for c in cases)]
        return subprocess.run(command, cwd=REPO, capture_output=True, check=True, timeout=600).stdout

    other = Case(input_size=4, hidden_size=2, num_layers=2, bidirectional=True)
    assert last_model(DENSE) != last_model(other, DENSE)
