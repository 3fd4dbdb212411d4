"""Unit tests: no I/O. Hypothesis keeps no example database (no .hypothesis/ in the repo)."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("unit", database=None, deadline=None)
settings.load_profile("unit")
