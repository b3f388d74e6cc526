"""Kept for adapters written against `backends.base`: the contract now lives in `conformance.contract`.

Third-party adapters that import from here keep working; new code imports `conformance.contract`.
"""

from conformance.contract import (
    PRECISIONS,
    Availability,
    Backend,
    BaseBackend,
    Differentiable,
    Factory,
    PrecisionAware,
    Preparing,
    UnsupportedCase,
    column,
    configure,
    first_line,
)

__all__ = [
    "PRECISIONS",
    "Availability",
    "Backend",
    "BaseBackend",
    "Differentiable",
    "Factory",
    "PrecisionAware",
    "Preparing",
    "UnsupportedCase",
    "column",
    "configure",
    "first_line",
]
