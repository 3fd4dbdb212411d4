"""Benchmarks: run ``benchmarks/engine.py`` (or ``make bench``)."""
