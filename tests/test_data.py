"""Case data is deterministic, PyTorch-shaped, and never has a zero bias."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.case import Case
from conformance.data import case_data, make_inputs, make_weights, param_names


def digest(case: Case) -> str:
    weights, inputs = make_weights(case), make_inputs(case)
    h = hashlib.sha256()
    for name in sorted(weights.tensors):
        h.update(name.encode() + np.ascontiguousarray(weights.tensors[name]).tobytes())
    for array in (inputs.x, inputs.h0, inputs.lengths):
        h.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


CASE = Case(3, 4, num_layers=2, bidirectional=True, batch=3, seq_len=5, lengths="unsorted", initial_state=True)
GOLDEN = "c3ba77d3adeec623"


def test_data_is_identical_everywhere() -> None:
    # A fixed digest: a change here means every machine's data (and the committed vectors) changed.
    assert digest(CASE) == GOLDEN


def test_data_does_not_depend_on_the_process() -> None:
    """A fresh interpreter with another hash seed draws the same data (no dict-order or hash() in the keys)."""
    script = "import sys; sys.path.insert(0, 'tests'); from test_data import CASE, digest; print(digest(CASE))"
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONHASHSEED="12345")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == GOLDEN


def test_weights_follow_torch_layout_and_init() -> None:
    torch = pytest.importorskip("torch")
    case = Case(3, 4, num_layers=2, bidirectional=True, dtype="float64")
    weights = make_weights(case)
    module = torch.nn.GRU(3, 4, 2, bidirectional=True)
    assert list(weights.tensors) == list(module.state_dict()) == param_names(case)
    for name, value in module.state_dict().items():
        assert weights.tensors[name].shape == tuple(value.shape)
        assert np.abs(weights.tensors[name]).max() <= 1 / np.sqrt(4)
    assert all(np.all(weights.tensors[n] != 0) for n in weights.tensors if n.startswith("bias"))


def test_lengths_contain_one_and_seq_len_and_respect_sorting() -> None:
    sorted_case = Case(2, 3, batch=4, seq_len=9, lengths="sorted")
    unsorted_case = Case(2, 3, batch=4, seq_len=9, lengths="unsorted")
    for case in (sorted_case, unsorted_case):
        lengths = make_inputs(case).lengths
        assert 1 in lengths and 9 in lengths
    assert list(make_inputs(sorted_case).lengths) == sorted(make_inputs(sorted_case).lengths, reverse=True)
    assert list(make_inputs(unsorted_case).lengths) != sorted(make_inputs(unsorted_case).lengths, reverse=True)
    assert list(make_inputs(Case(2, 3, batch=3, seq_len=4, lengths="full")).lengths) == [4, 4, 4]


def test_seed_and_structure_change_the_data_and_dtype_rounds_it() -> None:
    base = Case(3, 4)
    assert digest(base) != digest(Case(3, 4, seed=1))
    assert digest(base) != digest(Case(3, 4, batch=3))
    x16 = make_inputs(Case(3, 4, dtype="float16")).x
    assert x16.dtype == np.float16
    _weights, inputs = case_data(Case(3, 4))
    with pytest.raises(ValueError):
        inputs.x[0, 0, 0] = 1.0  # shared between backends: read-only
