"""Loads the conformance plugin for `pytest conformance` where its entry point wasn't loaded.

The plugin (conformance/plugin.py) is registered by the `pytest11` entry point under its module
name, `conformance.plugin`, and pytest registers a plugin name once: so this is a no-op normally,
and no hook ever runs twice. It matters when entry points aren't loaded: PYTEST_DISABLE_PLUGIN_AUTOLOAD=1,
or a virtualenv installed before the entry point existed (reinstall it: `pip install -e .`).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.import_plugin("conformance.plugin")
