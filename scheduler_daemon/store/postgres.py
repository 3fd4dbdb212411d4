"""The PostgreSQL store: a typed interface over asyncpg and the statements in ``queries``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from scheduler_daemon.domain.errors import IdempotencyConflict, InvalidCursor, UnknownDependencies
from scheduler_daemon.domain.models import (
    Attempt,
    AttemptResult,
    ClaimedTask,
    NewTask,
    Outcome,
    Page,
    Task,
    TaskStatus,
)
from scheduler_daemon.store import queries
from scheduler_daemon.store.base import Rescued, TaskCounts, TaskFilter
from scheduler_daemon.store.migrate import migrate

NOTIFY_CHANNEL = queries.NOTIFY_CHANNEL


_DEAD = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})


def _insert_args(
    tasks: Sequence[NewTask], states: dict[uuid.UUID, tuple[TaskStatus, str | None]]
) -> list[list[Any] | None]:
    """The INSERT_TASKS columns. An optional column that is empty in every task travels as
    NULL, not as an array of NULLs: unnest pads it, and asyncpg has nothing to encode."""
    scheduled = (TaskStatus.SCHEDULED, None)
    status = [states.get(t.id, scheduled) for t in tasks]
    return [
        [t.id for t in tasks],
        [t.action for t in tasks],
        [t.payload_json or json.dumps(t.payload) for t in tasks],
        [t.queue for t in tasks],
        [t.priority for t in tasks],
        [st[0].value for st in status],
        _optional([t.run_at for t in tasks]),
        _optional([t.delay_s for t in tasks]),
        [t.max_attempts for t in tasks],
        [t.timeout_s for t in tasks],
        _optional([t.idempotency_key for t in tasks]),
        _optional([t.request_hash for t in tasks]),
        _optional([json.dumps(t.metadata) if t.metadata else None for t in tasks]),
        _optional([_uuid_array(t.depends_on) if t.depends_on else None for t in tasks]),
        _optional([st[1] for st in status]),
        _optional([t.schedule_id for t in tasks]),
        _optional([t.scheduled_for for t in tasks]),
        _optional([t.parent_task_id for t in tasks]),
        _optional([t.retry_base_s for t in tasks]),
        _optional([t.retry_cap_s for t in tasks]),
    ]


def _optional(values: list[Any]) -> list[Any] | None:
    return None if all(v is None for v in values) else values


def _uuid_array(ids: Sequence[uuid.UUID]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without the default reset query (a round trip per release).

    asyncpg still rolls back an open transaction and drops listeners before this runs; pool
    connections hold no other session state (LISTEN and advisory locks use their own).
    """


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(2, size),
        max_size=size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
        server_settings={"application_name": "scheduler-daemon"},
    )
    assert pool is not None
    return pool


async def migrate_database(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _from_json_text(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _inserted(task: NewTask, row: asyncpg.Record) -> Task:
    """A task just inserted: what was sent, plus what the database decided."""
    return Task(
        id=task.id,
        action=task.action,
        payload=task.payload,
        queue=task.queue,
        priority=task.priority,
        status=TaskStatus(row["status"]),
        run_at=row["run_at"],
        attempts=0,
        max_attempts=task.max_attempts,
        timeout_s=task.timeout_s,
        idempotency_key=task.idempotency_key,
        metadata=task.metadata,
        lease_owner=None,
        lease_expires_at=None,
        last_error=row["last_error"],
        result=None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=None,
        finished_at=row["finished_at"],
        depends_on=task.depends_on,
        schedule_id=task.schedule_id,
        scheduled_for=task.scheduled_for,
        parent_task_id=task.parent_task_id,
        request_hash=task.request_hash,
        retry_base_s=task.retry_base_s,
        retry_cap_s=task.retry_cap_s,
    )


def _task(row: asyncpg.Record, *, json_text: bool = False) -> Task:
    """A task row; ``json_text``: its jsonb columns were read as text (TASK_COLUMNS_JSON_TEXT)."""
    decode = _from_json_text if json_text else (lambda value: value)
    return Task(
        id=row["id"],
        action=row["action"],
        payload=decode(row["payload"]),
        queue=row["queue"],
        priority=row["priority"],
        status=TaskStatus(row["status"]),
        run_at=row["run_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout_s=row["timeout_s"],
        idempotency_key=row["idempotency_key"],
        metadata=decode(row["metadata"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        last_error=row["last_error"],
        result=decode(row["result"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        depends_on=tuple(row["depends_on"]),
        schedule_id=row["schedule_id"],
        scheduled_for=row["scheduled_for"],
        parent_task_id=row["parent_task_id"],
        request_hash=row["request_hash"],
        retry_base_s=row["retry_base_s"],
        retry_cap_s=row["retry_cap_s"],
    )


def claimed_tasks(rows: Sequence[asyncpg.Record]) -> list[ClaimedTask]:
    """Claimed rows in claim order (priority first, then run_at)."""
    rows = sorted(rows, key=lambda r: (-r["priority"], r["run_at"]))
    return [
        ClaimedTask(
            id=r["id"],
            action=r["action"],
            payload=r["payload"],
            attempt=r["attempts"],
            max_attempts=r["max_attempts"],
            timeout_s=r["timeout_s"],
            run_at=r["run_at"],
            series_start=r["series_start"],
            queue=r["queue"],
            claimed_at=r["claimed_at"],
            retry_base_s=r["retry_base_s"],
            retry_cap_s=r["retry_cap_s"],
        )
        for r in rows
    ]


async def _claim_queue(
    conn: Connection,
    owner: str,
    queue: str,
    limit: int,
    lease_s: float,
    global_limit: int | None,
    runnable: list[str] | None,
) -> list[ClaimedTask]:
    if global_limit is not None:
        await conn.execute(queries.LOCK_QUEUE, queue)
    rows = await conn.fetch(
        queries.CLAIM_QUEUE, limit, owner, lease_s, queue, global_limit, runnable
    )
    return claimed_tasks(rows)


def encode_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive cursor time")
        return created_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``, in code point
    (UTF-8 byte) order; None when there is none (only U+10FFFF characters)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:  # surrogates cannot be stored: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _search_clause(text: str, args: list[Any]) -> str:
    """``GET /v1/tasks?q=``: the task whose id is ``text`` (when it is a UUID), and the tasks
    whose idempotency key starts with ``text`` (equal to it included). Appends its parameters
    to ``args``.

    The LIKE pattern decides; the byte-wise range (~>=~ and ~<~, text_pattern_ops) lets
    tasks_idempotency_key_pattern_idx find the keys in any collation, also when the prepared
    statement runs with a generic plan (a LIKE with a parameter cannot use an index then).
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    args.extend([escaped + "%", text])
    parts = [
        f"idempotency_key LIKE ${len(args) - 1} ESCAPE '\\'",
        f"idempotency_key ~>=~ ${len(args)}",
    ]
    upper = _successor(text)
    if upper is not None:
        args.append(upper)
        parts.append(f"idempotency_key ~<~ ${len(args)}")
    by_key = " AND ".join(parts)
    try:
        task_id = uuid.UUID(text)
    except ValueError:
        return f"({by_key})"
    args.append(task_id)
    return f"(id = ${len(args)} OR ({by_key}))"


Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def _insert(
    conn: Connection,
    tasks: Sequence[NewTask],
    states: dict[uuid.UUID, tuple[TaskStatus, str | None]],
) -> list[asyncpg.Record]:
    columns = _insert_args(tasks, states)
    if len(tasks) == 1:
        values = (None if column is None else column[0] for column in columns)
        row = await conn.fetchrow(queries.INSERT_TASK, *values)
        return [] if row is None else [row]
    return await conn.fetch(queries.INSERT_TASKS, *columns)


async def insert_tasks_quietly(conn: Connection, tasks: Sequence[NewTask]) -> None:
    """Insert tasks with neither dependencies nor idempotency keys in one statement, reading
    nothing back (``enqueue_many``: the ids are the caller's own)."""
    if len(tasks) <= 1:  # none, or one with plain parameters (INSERT_TASK)
        if tasks:
            await _insert(conn, tasks, {})
        return
    await conn.execute(queries.INSERT_TASKS_QUIET, *_insert_args(tasks, {}))


async def insert_tasks(conn: Connection, tasks: Sequence[NewTask]) -> list[tuple[Task, bool]]:
    """Insert tasks all-or-nothing on ``conn``; results in the order given, each with whether
    it was created (False: an idempotent repeat, the original task is returned).

    Runs inside the connection's open transaction if there is one: tasks with neither
    dependencies nor idempotency keys take one statement; otherwise the statements run in
    ``conn.transaction()`` (a savepoint inside an open transaction), so a later rollback by
    the caller removes everything. Needs no type codec on ``conn``: JSON travels as text.

    Raises UnknownDependencies or IdempotencyConflict (nothing is inserted then).
    """
    if not tasks:
        return []
    needs_transaction = any(t.depends_on or t.idempotency_key for t in tasks)
    if not needs_transaction:  # the common case: one statement, one round trip
        rows = await _insert(conn, tasks, {})
        by_id = {r["id"]: r for r in rows}
        return [(_inserted(t, by_id[t.id]), True) for t in tasks]
    async with conn.transaction():
        states = await _dependency_states(conn, tasks)
        rows = await _insert(conn, tasks, states)
        by_id = {r["id"]: r for r in rows}
        inserted = {t.id: _inserted(t, by_id[t.id]) for t in tasks if t.id in by_id}
        waiting = [(t.id, d) for t in tasks if t.id in inserted for d in t.depends_on]
        if waiting:
            await conn.execute(
                queries.INSERT_DEPENDENCIES, [w[0] for w in waiting], [w[1] for w in waiting]
            )
        repeats = [t for t in tasks if t.id not in inserted]
        existing: dict[str, Task] = {}
        if repeats:
            found = await conn.fetch(
                queries.GET_TASKS_BY_IDEMPOTENCY_KEYS, [t.idempotency_key for t in repeats]
            )
            existing = {r["idempotency_key"]: _task(r, json_text=True) for r in found}
        out: list[tuple[Task, bool]] = []
        for index, task in enumerate(tasks):
            if task.id in inserted:
                out.append((inserted[task.id], True))
                continue
            assert task.idempotency_key is not None
            original = existing.get(task.idempotency_key)
            if original is None or original.request_hash != task.request_hash:
                raise IdempotencyConflict(index, task.idempotency_key)
            out.append((original, False))
        return out


async def _dependency_states(
    conn: Connection, tasks: Sequence[NewTask]
) -> dict[uuid.UUID, tuple[TaskStatus, str | None]]:
    """The initial status of each new task with dependencies, and why if cancelled."""
    wanted = sorted({d for t in tasks for d in t.depends_on})
    if not wanted:
        return {}
    rows = await conn.fetch(queries.LOCK_DEPENDENCIES, wanted)
    known = {r["id"]: TaskStatus(r["status"]) for r in rows}
    states: dict[uuid.UUID, tuple[TaskStatus, str | None]] = {}
    for index, task in enumerate(tasks):
        if not task.depends_on:
            continue
        missing = [d for d in task.depends_on if d not in known]
        if missing:
            raise UnknownDependencies(index, missing)
        dead = [d for d in task.depends_on if known[d] in _DEAD]
        if dead:
            reason = f"dependency {dead[0]} {known[dead[0]].value}"
            states[task.id] = (TaskStatus.CANCELLED, reason)
        elif all(known[d] is TaskStatus.COMPLETED for d in task.depends_on):
            states[task.id] = (TaskStatus.SCHEDULED, None)
        else:
            states[task.id] = (TaskStatus.WAITING, None)
    return states


class LazyPool:
    """A pool opened on first use (handlers' own transactions); closing an unopened one is a
    no-op."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._dsn, self._size)
            return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        pool = await self._get()
        async with pool.acquire() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class PostgresStore:
    """Implements both EngineStore and TaskStore on one asyncpg pool.

    ``runnable``: the actions the engine may claim (a daemon's: the ones it can run); None
    claims every action.
    """

    def __init__(self, pool: asyncpg.Pool, runnable: Sequence[str] | None = None) -> None:
        self.pool = pool
        self.runnable = None if runnable is None else sorted(runnable)

    # -- API side -------------------------------------------------------------------------

    async def create_task(self, task: NewTask) -> tuple[Task, bool]:
        """Insert a task; with an idempotency key already used for the same request, return
        that task instead (created False)."""
        [outcome] = await self.create_tasks([task])
        return outcome

    async def create_tasks(self, tasks: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        """Insert tasks all-or-nothing, in one INSERT; results in the order given.

        Raises UnknownDependencies or IdempotencyConflict (nothing is inserted then).
        """
        if not tasks:
            return []
        async with self.pool.acquire() as conn:
            return await insert_tasks(conn, tasks)

    async def get_task(self, task_id: uuid.UUID) -> Task | None:
        row = await self.pool.fetchrow(queries.GET_TASK, task_id)
        return _task(row) if row is not None else None

    async def list_tasks(self, flt: TaskFilter, limit: int, cursor: str | None) -> Page:
        clauses: list[str] = []
        args: list[Any] = []
        if flt.statuses:
            args.append([s.value for s in flt.statuses])
            clauses.append(f"status = ANY(${len(args)}::text[])")
        for column, value, op in (
            ("action", flt.action, "="),
            ("queue", flt.queue, "="),
            ("schedule_id", flt.schedule_id, "="),
            ("created_at", flt.created_after, ">="),
            ("created_at", flt.created_before, "<"),
            ("run_at", flt.run_after, ">="),
            ("run_at", flt.run_before, "<"),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} {op} ${len(args)}")
        if flt.search is not None:
            clauses.append(_search_clause(flt.search, args))
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            args.extend([created_at, last_id])
            clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit + 1)
        sql = (
            f"SELECT {queries.TASK_COLUMNS} FROM tasks {where} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        )
        rows = await self.pool.fetch(sql, *args)
        items = [_task(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and items:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items=items, next_cursor=next_cursor)

    async def count_tasks(self) -> TaskCounts:
        """Tasks per status and queue, due now and failed in the last hour, in one snapshot."""
        row = await self.pool.fetchrow(queries.COUNT_TASKS)
        assert row is not None
        groups = zip(row["statuses"], row["queues"], row["counts"], strict=True)
        return TaskCounts(
            at=row["db_now"],
            by_status_queue={(TaskStatus(s), q): n for s, q, n in groups},
            due_now=row["due_now"],
            failed_last_hour=row["failed_last_hour"],
        )

    async def list_attempts(self, task_id: uuid.UUID) -> list[Attempt]:
        rows = await self.pool.fetch(queries.LIST_ATTEMPTS, task_id)
        return [
            Attempt(
                task_id=r["task_id"],
                number=r["number"],
                worker=r["worker"],
                outcome=Outcome(r["outcome"]),
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                duration_ms=r["duration_ms"],
                error=r["error"],
                output=r["output"],
            )
            for r in rows
        ]

    async def run_now(self, task_id: uuid.UUID) -> Task | None:
        """Make a scheduled task due now; None when it is not scheduled."""
        row = await self.pool.fetchrow(queries.RUN_NOW, task_id)
        return _task(row) if row is not None else None

    async def retry_task(self, task_id: uuid.UUID) -> Task | None:
        """Re-queue a failed or cancelled task with a fresh attempt series."""
        row = await self.pool.fetchrow(queries.RETRY_TASK, task_id)
        return _task(row) if row is not None else None

    async def retry_dead_letters(
        self,
        ids: Sequence[uuid.UUID] | None,
        action: str | None,
        queue: str | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """Re-queue failed tasks (each as a new attempt series); the ids re-queued."""
        return await self._dead_letters(queries.RETRY_DEAD_LETTERS, ids, action, queue, limit)

    async def discard_dead_letters(
        self,
        ids: Sequence[uuid.UUID] | None,
        action: str | None,
        queue: str | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """Delete failed tasks and their attempts; the ids deleted."""
        return await self._dead_letters(queries.DISCARD_DEAD_LETTERS, ids, action, queue, limit)

    async def _dead_letters(
        self,
        sql: str,
        ids: Sequence[uuid.UUID] | None,
        action: str | None,
        queue: str | None,
        limit: int,
    ) -> list[uuid.UUID]:
        rows = await self.pool.fetch(sql, None if ids is None else list(ids), action, queue, limit)
        return [r["id"] for r in rows]

    async def cancel_task(self, task_id: uuid.UUID) -> Task | None:
        """Cancel a task that has not started; None when it is not in a cancellable state."""
        row = await self.pool.fetchrow(queries.CANCEL_TASK, task_id)
        return _task(row) if row is not None else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection inside a transaction, for user handlers."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        await self.pool.fetchval(queries.PING)

    # -- engine side ----------------------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]:
        """Up to ``limit`` due tasks of any queue but paused ones and those in ``exclude``.

        With exclusions the allowed queues are claimed one by one: each first gets an even
        share of ``limit``, then what is left goes to those that had more. Claim order
        (priority, run_at) holds within each queue.
        """
        if not exclude:
            async with self._connection() as conn:
                rows = await conn.fetch(queries.CLAIM, limit, owner, lease_s, self.runnable)
            return claimed_tasks(rows)
        left_out = set(exclude)
        claimed: list[ClaimedTask] = []
        async with self._per_queue() as conn:  # one transaction: the list and every claim
            names = [r["queue"] for r in await conn.fetch(queries.SCHEDULED_QUEUES)]
            allowed = [name for name in names if name not in left_out]
            full: list[str] = []  # queues that gave their whole share: they may have more
            share = -(-limit // max(len(allowed), 1))
            for name in allowed:
                want = min(share, limit - len(claimed))
                if want <= 0:
                    break
                got = await _claim_queue(conn, owner, name, want, lease_s, None, self.runnable)
                claimed.extend(got)
                if len(got) == want:
                    full.append(name)
            for name in full:
                want = limit - len(claimed)
                if want <= 0:
                    break
                claimed.extend(
                    await _claim_queue(conn, owner, name, want, lease_s, None, self.runnable)
                )
        return claimed

    async def claim_queue(
        self, owner: str, queue: str, limit: int, lease_s: float, global_limit: int | None
    ) -> list[ClaimedTask]:
        """Up to ``limit`` due tasks of ``queue``; with ``global_limit``, never more than that
        many running in the queue across all daemons (claims of the queue serialised by a
        transaction-scoped advisory lock)."""
        async with self._per_queue() as conn:
            return await _claim_queue(
                conn, owner, queue, limit, lease_s, global_limit, self.runnable
            )

    @asynccontextmanager
    async def _per_queue(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A transaction planning its statements for one queue (queries.PER_QUEUE_PLANNING)."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(queries.PER_QUEUE_PLANNING)
            yield conn

    async def next_due_in(self, exclude: Sequence[str] = ()) -> float | None:
        """Seconds until the earliest scheduled task is due (negative: overdue; None: nothing
        scheduled), leaving out the queues in ``exclude`` and, when that is given, paused ones."""
        if not exclude:
            value: float | None = await self.pool.fetchval(queries.NEXT_DUE_IN, self.runnable)
            return value
        left_out = set(exclude) | await self.paused_queues()
        async with self._per_queue() as conn:
            names = [r["queue"] for r in await conn.fetch(queries.SCHEDULED_QUEUES)]
            earliest = [
                await conn.fetchval(queries.QUEUE_NEXT_RUN, name, self.runnable)
                for name in names
                if name not in left_out
            ]
            times = [t for t in earliest if t is not None]
            if not times:
                return None
            value = await conn.fetchval(queries.SECONDS_UNTIL, min(times))
        return value

    async def paused_queues(self) -> frozenset[str]:
        rows = await self.pool.fetch(queries.PAUSED_QUEUES)
        return frozenset(r["queue"] for r in rows)

    async def count_due(self) -> int:
        """Scheduled tasks that are due and not claimed."""
        value: int = await self.pool.fetchval(queries.COUNT_DUE)
        return value

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection that is discarded, not handed back for reuse, when a statement
        on it fails with anything but an error the server reported: after a terminated backend
        or a protocol error (``InternalClientError: cannot switch to state ...``) its state is
        unknown, and the next try must run on a fresh connection."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except asyncpg.PostgresError as exc:
                if isinstance(exc, asyncpg.PostgresConnectionError):
                    conn.terminate()
                raise
            except Exception:
                conn.terminate()
                raise

    async def complete(self, owner: str, results: Sequence[AttemptResult]) -> set[uuid.UUID]:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
        ids, attempts, outcomes, statuses, retry_in, errors, outputs, values, durations = columns
        for r in results:  # one pass, nine columns
            ids.append(r.task_id)
            attempts.append(r.attempt)
            outcomes.append(r.outcome.value)
            statuses.append(r.next_status.value)
            retry_in.append(r.retry_in_s or 0.0)
            errors.append(r.error)
            outputs.append(r.output)
            values.append(r.result)
            durations.append(r.duration_ms)
        async with self._connection() as conn:
            rows = await conn.fetch(queries.COMPLETE, owner, *columns)
        return {r["task_id"] for r in rows}

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                queries.RENEW_LEASES, owner, lease_s, [h[0] for h in held], [h[1] for h in held]
            )
        return {(r["id"], r["attempts"]) for r in rows}

    async def release(self, owner: str, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                queries.RELEASE, owner, [h[0] for h in held], [h[1] for h in held]
            )
        return {r["id"] for r in rows}

    async def rescue_expired(self, limit: int) -> list[Rescued]:
        async with self._connection() as conn:
            rows = await conn.fetch(queries.RESCUE_EXPIRED, limit)
        return [
            Rescued(
                task_id=r["id"],
                status=TaskStatus(r["status"]),
                attempt=r["attempts"],
                owner=r["owner"],
                action=r["action"],
                queue=r["queue"],
            )
            for r in rows
        ]
