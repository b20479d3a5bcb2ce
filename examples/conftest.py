"""Make the ``actiongate_replay`` fixture available to the example tests.

Installing actiongate registers :mod:`gateway.replay.plugin` through its ``pytest11`` entry point
(named ``actiongate``); this covers a checkout where that entry point is not installed yet.
In your own project, ``pytest_plugins = ["gateway.replay.plugin"]`` in the top-level conftest.py
does the same.
"""

from __future__ import annotations

import pytest

import gateway.replay.plugin


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin unless the entry point already did."""
    manager = config.pluginmanager
    if not manager.has_plugin("actiongate") and not manager.is_registered(gateway.replay.plugin):
        manager.register(gateway.replay.plugin, "actiongate")
