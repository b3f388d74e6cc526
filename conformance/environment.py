"""The environment of a run, recorded once: machine, Python and the package versions involved.

Versions come from installed metadata, so recording them imports no backend.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = (
    "numpy",
    "ml_dtypes",
    "torch",
    "jax",
    "jaxlib",
    "flax",
    "equinox",
    "keras",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxscript",
    "covertable",
    "pytest",
    "gru-conformance",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """GPUs as nvidia-smi lists them; empty when there is none (never an error)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def environment(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "environment",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
        "hostname": platform.node(),
        "packages": package_versions(),
        "options": options,
    }
