"""Portable conformance vectors: the matrix as data (.npy files + JSON manifest) for implementations
that can't be imported next to torch and jax. Format: fixtures/README.md. CLI: `python -m conformance.vectors`.
"""

from conformance.vectors.store import (
    SCHEMA_VERSION,
    Manifest,
    VectorsError,
    VectorsReference,
    check_integrity,
    load_case,
    load_gradients,
    load_manifest,
    write,
)
from conformance.vectors.verify import Implementation, verify, write_gradients, write_outputs

__all__ = [
    "SCHEMA_VERSION",
    "Implementation",
    "Manifest",
    "VectorsError",
    "VectorsReference",
    "check_integrity",
    "load_case",
    "load_gradients",
    "load_manifest",
    "verify",
    "write",
    "write_gradients",
    "write_outputs",
]
