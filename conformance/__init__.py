"""gru-conformance: checks GRU implementations against one float64 reference."""

__version__ = "0.1.0"
