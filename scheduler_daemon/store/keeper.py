"""The lease keeper's own connection (engine/lease_keeper.py): the statements its thread runs,
renewals and this daemon's row in ``workers``, on a connection of that thread's loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

import asyncpg

from scheduler_daemon.store import queries
from scheduler_daemon.store.workers import FORGET_AFTER_S

APPLICATION_NAME = "scheduler-daemon lease keeper"
MIN_DB_TIMEOUT_S = 1.0


class KeeperConnection:
    """The keeper's own connection, opened on first use and after every failure.

    Each statement has a timeout of one heartbeat interval (at least a second): a renewal that
    hangs on a dead connection gives way to a fresh connection while the leases still run.
    The heartbeat and presence both use it, so they take turns (``_turn``): asyncpg refuses
    an operation on a connection that is busy with another, and two first uses at once would
    each open a connection.
    """

    def __init__(self, dsn: str, timeout_s: Callable[[], float]) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()  # bound to the keeper's loop at first use
        self.opened = 0  # connections opened so far

    @property
    def _timeout(self) -> float:
        return max(self._timeout_s(), MIN_DB_TIMEOUT_S)

    async def open(self) -> None:
        """Open the connection now if it is not (at the keeper's start, so that its cost is
        paid before tasks flow: the thread shares the interpreter with the main loop)."""
        async with self._turn:
            await self._open()

    async def _open(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                server_settings={"application_name": APPLICATION_NAME},
            )
            self.opened += 1
        return self._conn

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]:
        async with self._turn:
            conn = await self._open()
            rows = await conn.fetch(
                queries.RENEW_LEASES,
                owner,
                lease_s,
                [h[0] for h in held],
                [h[1] for h in held],
                timeout=self._timeout,
            )
        return {(r["id"], r["attempts"]) for r in rows}

    # The presence store (engine/presence.py): this daemon's row in workers, kept from here
    # like its leases, whatever the main loop is doing.

    async def register(self, owner: str, actions: Sequence[str]) -> None:
        async with self._turn:
            conn = await self._open()
            await conn.execute(queries.UPSERT_WORKER, owner, list(actions), timeout=self._timeout)
            await conn.execute(queries.FORGET_WORKERS, FORGET_AFTER_S, timeout=self._timeout)

    async def unregister(self, owner: str) -> None:
        async with self._turn:
            conn = await self._open()
            await conn.execute(queries.DELETE_WORKER, owner, timeout=self._timeout)

    async def close(self) -> None:
        """Close the connection (after a failure: the next use opens a new one). Not in turn:
        a statement still running on a broken connection ends with it."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), MIN_DB_TIMEOUT_S)
            except Exception:  # a broken connection: drop it
                conn.terminate()
