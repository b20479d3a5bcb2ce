"""The operator dashboard (SPEC §7): Custom Actions, Agents, Logs and the Playground."""

from __future__ import annotations

from gateway.admin.dashboard.routes import build_dashboard, mount_static

__all__ = ["build_dashboard", "mount_static"]
