"""Example handler modules. Load one with ``handlers.modules = ["examples.attendance"]``."""
