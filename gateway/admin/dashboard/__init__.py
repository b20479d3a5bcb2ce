"""The operator dashboard: the Overview, Custom Actions, Agents, Logs and the Playground.

What it offers and how it is secured: README, "Admin API and dashboard".
"""

from __future__ import annotations

from gateway.admin.dashboard.routes import build_dashboard, mount_static

__all__ = ["build_dashboard", "mount_static"]
