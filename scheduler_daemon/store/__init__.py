"""Persistence: the only package that executes SQL."""
