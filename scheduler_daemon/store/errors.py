"""Which exceptions mean "the database cannot be reached right now" (as opposed to a bug or a
rejected statement): a refused or broken connection, a server shutting down, starting up or out
of connection slots, a connect or acquire that timed out, a pool that is closed, a pooled
connection whose session the server ended while it sat idle.

Callers answer these with "try again later" (the API's 503 with ``Retry-After``, a retry with
backoff in the engine) and log them without a traceback; anything else stays an error.
"""

from __future__ import annotations

import asyncpg

# SQLSTATE prefixes of the server's "this connection cannot be used": class 08 (connection
# exception), 57P (admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped,
# idle_session_timeout) and 53300 (too_many_connections).
UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")

# What asyncpg's InterfaceError says when the connection or the pool it went through is gone;
# its other InterfaceErrors (another operation in progress, a bad argument) are bugs.
_CLOSED_MESSAGES = (
    "connection is closed",
    "connection was closed",
    "pool is closed",
    "pool is closing",
)

# What asyncpg's InternalClientError says when its protocol state was broken under it: the
# server ended the session while the connection sat idle in the pool (a fast shutdown, a
# terminated backend), and the next statement finds it mid-error. Its others are bugs.
_BROKEN_PROTOCOL_MESSAGES = (
    "cannot switch to state",
    "protocol is in an unexpected state",
    "not connected",
)

# How far ``is_unavailable`` follows ``__cause__`` (asyncpg chains the server's error there).
_MAX_CHAIN = 8

UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx, ConnectionDoesNotExistError among them
    asyncpg.exceptions.AdminShutdownError,  # 57P01: the server is stopping
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up, shutting down, recovering
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
    OSError,  # refused, reset, unreachable, name not resolved, no such socket file
    TimeoutError,  # connect, pool acquire or statement timeout
)
"""The exception types that always mean unavailable; ``is_unavailable`` also recognises
others by SQLSTATE, and asyncpg's client-side errors about a closed or broken connection."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) means the database cannot be reached.

    An exception group counts when every exception in it does.
    """
    seen: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if seen is None:
            return False
        if _unavailable_itself(seen):
            return True
        seen = seen.__cause__
    return False


def _unavailable_itself(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(is_unavailable(e) for e in exc.exceptions)
    if isinstance(exc, UNAVAILABLE_TYPES):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    if isinstance(exc, asyncpg.InterfaceError):
        return _says(exc, _CLOSED_MESSAGES)
    if isinstance(exc, asyncpg.InternalClientError):
        return _says(exc, _BROKEN_PROTOCOL_MESSAGES)
    return False


def _says(exc: BaseException, messages: tuple[str, ...]) -> bool:
    text = str(exc)
    return any(message in text for message in messages)


def describe(exc: BaseException) -> str:
    """``Type: message`` for a log line (no traceback)."""
    return f"{type(exc).__name__}: {exc}"
