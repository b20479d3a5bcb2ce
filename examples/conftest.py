"""Make the ``actiongate_replay`` fixture available to the example tests.

Installing actiongate registers :mod:`gateway.testing` through its ``pytest11`` entry point
(named ``actiongate``); this covers a checkout where that entry point is not installed yet.
In your own project, ``pytest_plugins = ["gateway.testing"]`` in the top-level conftest.py
does the same.
"""

from __future__ import annotations

import pytest

import gateway.testing


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin unless the entry point already did."""
    manager = config.pluginmanager
    if not manager.has_plugin("actiongate") and not manager.is_registered(gateway.testing):
        manager.register(gateway.testing, "actiongate")
