"""ONNX columns: a model *source* (an exporter, a spec-built node) run in a *runtime* (onnxruntime, ...).

The runtime layer (`model_source`, `runtime`, `column`, one module per runtime) knows no
source; each source (`source_*.py`, with `export_store` for the torch exporters) imports
the runtime layer; `columns` registers the combinations and holds the entry-point factories.
This file stays empty of imports: the export workers run as `python -m backends.onnx.source_*`.
"""
