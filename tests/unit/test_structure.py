"""The package's shape: functions short enough to read at a glance.

A function longer than MAX_LINES is a sign it does several jobs; the exceptions are declarative
tables (a list of metric definitions reads best in one place), named here with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scheduler_daemon

MAX_LINES = 60
PACKAGE = Path(scheduler_daemon.__file__).parent

# "module path:function": why its length is a table, not logic.
TABLES = {
    "metrics.py:__init__": "the metric definitions, one declaration each",
}


def _functions() -> list[tuple[str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                name = f"{path.relative_to(PACKAGE).as_posix()}:{node.name}"
                found.append((name, node.end_lineno - node.lineno + 1))
    return found


def test_no_function_is_longer_than_a_screen() -> None:
    long = {name: lines for name, lines in _functions() if lines > MAX_LINES}
    assert {n: v for n, v in long.items() if n not in TABLES} == {}


def test_every_table_exception_is_still_needed() -> None:
    lengths = dict(_functions())
    assert {n for n in TABLES if lengths.get(n, 0) <= MAX_LINES} == set()
