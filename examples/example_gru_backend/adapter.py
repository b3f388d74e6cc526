"""A plain NumPy GRU plugged into gru-conformance from outside the repo.

Load it without installing anything:
    PYTHONPATH=examples pytest conformance --backend-module example_gru_backend.adapter:backends
or register `backends` under the `gru_conformance.backends` entry-point group.
It computes in float32 (float64 for float64 cases) and rounds to the case dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from backends.base import BaseBackend
from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import fmt


@dataclass
class NumpyGru(BaseBackend):
    family: str = "numpy-example"

    def supports(self, case: Case) -> str | None:
        return None  # plain loops express every dimension of the matrix

    def cell(self, x: np.ndarray, h: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:  # type: ignore[no-untyped-def]
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        i_r, i_z, i_n = np.split(gi, 3, axis=1)
        h_r, h_z, h_n = np.split(gh, 3, axis=1)
        r = 1 / (1 + np.exp(-(i_r + h_r)))
        z = 1 / (1 + np.exp(-(i_z + h_z)))
        n = np.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        work = np.float64 if case.dtype == "float64" else np.float32
        x = np.asarray(inputs.x, dtype=work)
        if case.batch_first:
            x = x.transpose(1, 0, 2)
        steps, batch, hidden = x.shape[0], x.shape[1], case.hidden_size
        lengths = np.full(batch, steps) if inputs.lengths is None else np.asarray(inputs.lengths)
        h0 = np.zeros((case.num_layers * case.num_directions, batch, hidden), work)
        if inputs.h0 is not None:
            h0 = np.asarray(inputs.h0, dtype=work)
        layer_in, finals = x, []
        for layer in range(case.num_layers):
            outs = []
            for direction in range(case.num_directions):
                w_ih, w_hh, b_ih, b_hh = (
                    np.zeros(3 * hidden, work) if a is None else np.asarray(a, dtype=work)
                    for a in weights.cell(layer, direction)
                )
                h = h0[layer * case.num_directions + direction]
                out = np.zeros((steps, batch, hidden), work)
                for t in range(steps - 1, -1, -1) if direction else range(steps):
                    valid = (t < lengths)[:, None]
                    h = np.where(valid, self.cell(layer_in[t], h, w_ih, w_hh, b_ih, b_hh), h)
                    out[t] = np.where(valid, h, 0)
                outs.append(out)
                finals.append(h)
            layer_in = np.concatenate(outs, axis=2)
        output = layer_in.transpose(1, 0, 2) if case.batch_first else layer_in
        target = fmt(case.dtype).numpy
        return GruOutput(output=output.astype(target), h_n=np.stack(finals).astype(target))


def backends() -> Iterator[NumpyGru]:
    yield NumpyGru()
