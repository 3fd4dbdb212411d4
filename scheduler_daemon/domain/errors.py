"""The errors of the domain: what a request asks that cannot be done, whichever surface (the
HTTP API, transactional enqueue) it came through. Each surface maps them to its own answer."""

from __future__ import annotations

import uuid


class InvalidCursor(ValueError):
    """A list cursor that this store did not produce."""


class UnknownDependencies(LookupError):
    def __init__(self, index: int, missing: list[uuid.UUID]) -> None:
        super().__init__(f"unknown task ids: {', '.join(map(str, missing))}")
        self.index = index
        self.missing = missing


class IdempotencyConflict(Exception):
    def __init__(self, index: int, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was used for a different request")
        self.index = index
        self.key = key
