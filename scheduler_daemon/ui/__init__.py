"""The web dashboard at /ui: an HTML shell and hand-written ES modules against the JSON API."""

from __future__ import annotations

from scheduler_daemon.ui.routes import add_ui_routes

__all__ = ["add_ui_routes"]
