"""Expander benchmark: the cost of keeping N active schedules that fire every minute.

Run it as ``.venv/bin/python benchmarks/expander.py`` (``--help`` lists the knobs). The
worst case for the recurrence expander: ``--schedules`` schedules (default 10,000), all
active, all ``cron "* * * * *"`` in UTC, so every one of them is due in the same pass every
minute. The schedules are inserted in one statement with the column values the API stores
(``next_run_at`` the next minute, ``expand_at`` one horizon before it); then the real
:class:`~scheduler_daemon.engine.expander.Expander` runs in this process, on the database
clock, for ``--minutes`` minutes of wall time: ``Expander.run()`` as a task, sleeping until
the next ``expand_at`` between passes exactly as in the daemon (no NOTIFY listener: nothing
changes the schedules meanwhile).

A pass is one ``expand_due()`` call that made tasks: it claims the due schedules in batches
of ``expander.batch_size`` (one transaction per batch: claim, insert, update) until a batch
comes back short. Nothing runs the tasks it makes: only the expansion is measured.

The database server is the one named by ``SCHEDULER_BENCH_DATABASE_URL`` (an admin DSN, allowed
to create databases) or, when that is unset, an embedded PostgreSQL started in a temporary
folder and stopped at the end. Either way the schedules go into a fresh, migrated database.

Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg

from benchmarks.common import (
    Server,
    fresh_database,
    local_postmaster,
    open_server,
    percentile,
    postgres_cpu,
    postgres_used,
)
from scheduler_daemon.app import install_uvloop
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.recurrence import Recurrence, next_occurrence, validate
from scheduler_daemon.domain.schedules import (
    Expansion,
    OverlapPolicy,
    Schedule,
    TaskTemplate,
    expand_at,
)
from scheduler_daemon.engine.expander import Expander
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.settings import ExpanderSettings, LogSettings
from scheduler_daemon.store.postgres import create_pool
from scheduler_daemon.store.schedules import PostgresScheduleStore, _row_args

CRON = "* * * * *"
POLL_INTERVAL_S = 30.0  # expander.poll_interval_s: the longest sleep between looks

# The columns of INSERT_SCHEDULE, filled for every schedule from one prototype: $1 ids and $2
# names vary, $3.. $16 are _row_args(prototype) after the name.
INSERT_MANY = """
INSERT INTO schedules (id, name, rule, timezone, template, start_at, end_at, exclusions,
                       misfire_policy, misfire_grace_s, max_catchup, overlap_policy, jitter_s,
                       paused, metadata, next_run_at, expand_at, last_task_id, from_task)
SELECT u.id, u.name, $3::jsonb, $4::text, $5::jsonb, $6::timestamptz, $7::timestamptz,
       $8::jsonb, $9::text, $10::float8, $11::int4, $12::text, $13::float8, $14::bool,
       $15::jsonb, $16::timestamptz, $17::timestamptz, NULL, false
FROM unnest($1::uuid[], $2::text[]) AS u(id, name)
"""


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    schedules: int
    minutes: float
    batch_size: int
    horizon_s: float
    pool_size: int


def _default(name: str) -> object:
    return ExpanderSettings.model_fields[name].default


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/expander.py",
        description="Benchmark the recurrence expander: N schedules firing every minute.",
    )
    parser.add_argument(
        "--schedules", type=int, default=10_000, help="active schedules (default 10000)"
    )
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="wall minutes to measure (default 3)"
    )
    batch_size = _default("batch_size")
    horizon_s = _default("horizon_s")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"expander.batch_size (default {batch_size})",
    )
    parser.add_argument(
        "--horizon-s",
        type=float,
        default=horizon_s,
        help=f"expander.horizon_s (default {horizon_s})",
    )
    parser.add_argument(
        "--pool-size", type=int, default=4, help="connections in the pool (default 4)"
    )
    ns = parser.parse_args(argv)
    if ns.schedules < 1:
        parser.error("--schedules must be at least 1")
    if ns.minutes <= 0:
        parser.error("--minutes must be positive")
    if not 1 <= ns.batch_size <= 10_000:
        parser.error("--batch-size must be within 1..10000")
    if not 0 < ns.horizon_s <= 3600:
        parser.error("--horizon-s must be within (0, 3600]")
    if ns.pool_size < 1:
        parser.error("--pool-size must be at least 1")
    return Options(ns.schedules, ns.minutes, ns.batch_size, ns.horizon_s, ns.pool_size)


# -- database -----------------------------------------------------------------------------


async def insert_schedules(pool: asyncpg.Pool, opts: Options) -> tuple[int, float]:
    """``opts.schedules`` every-minute schedules in one statement, with the column values the
    API stores (as ``build_schedule`` computes them on the database clock); the rows inserted
    and the seconds it took."""
    now: datetime = await pool.fetchval("SELECT now()")
    rule = Recurrence(cron=CRON, timezone="UTC")
    validate(rule, now)
    next_run_at = next_occurrence(rule, now, inclusive=True)
    prototype = Schedule(
        id=uuid.uuid4(),
        name="prototype",
        recurrence=rule,
        template=TaskTemplate(action="noop", payload={"bench": "expander"}),
        next_run_at=next_run_at,
        expand_at=expand_at(OverlapPolicy.ALLOW, next_run_at, opts.horizon_s),
    )
    constant = _row_args(prototype)[1:]  # every column after the name
    ids = [uuid.uuid4() for _ in range(opts.schedules)]
    names = [f"every-minute-{i:06d}" for i in range(opts.schedules)]
    start = time.perf_counter()
    status = await pool.execute(INSERT_MANY, ids, names, *constant)
    elapsed = time.perf_counter() - start
    return int(status.split()[-1]), elapsed


# -- the expander, timed ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pass:
    started: float  # perf_counter
    seconds: float
    created: int
    transactions: int  # store.expand calls (Expander.passes counts these)
    statements: int
    planning: float  # seconds in plan_expansion (pure Python: the rule's occurrences)


class CountingStore(PostgresScheduleStore):
    """The real store, counting the "when is the next one due" queries of Expander.run."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.next_queries = 0

    async def next_expansion_in(self) -> float | None:
        self.next_queries += 1
        return await super().next_expansion_in()


class TimedExpander(Expander):
    """The real expander, recording every ``expand_due()`` call."""

    def __init__(self, store: PostgresScheduleStore, opts: Options) -> None:
        super().__init__(
            store,
            SystemClock(),
            horizon_s=lambda: opts.horizon_s,
            batch_size=lambda: opts.batch_size,
            poll_interval_s=lambda: POLL_INTERVAL_S,
        )
        self.calls: list[Pass] = []
        self.planning = 0.0

    def _plan(self, schedule: Schedule, busy: bool, now: datetime) -> Expansion:
        start = time.perf_counter()
        try:
            return super()._plan(schedule, busy, now)
        finally:
            self.planning += time.perf_counter() - start

    async def expand_due(self) -> int:
        passes, statements, planning = self.passes, self.statements, self.planning
        start = time.perf_counter()
        created = await super().expand_due()
        self.calls.append(
            Pass(
                start,
                time.perf_counter() - start,
                created,
                self.passes - passes,
                self.statements - statements,
                self.planning - planning,
            )
        )
        return created


# -- where the CPU went -------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    wall: float = field(default_factory=time.perf_counter)
    process: float = field(default_factory=time.process_time)
    postgres: dict[int, float] | None = None


# -- figures ------------------------------------------------------------------------------


def table(rows: list[tuple[str, str]]) -> str:
    lines = ["| figure | measured |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


async def header(pool: asyncpg.Pool, server: Server, opts: Options) -> None:
    pg_version = await pool.fetchval("SELECT version()")
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print("# scheduler-daemon expander benchmark")
    print(f"python: {platform.python_implementation()} {platform.python_version()} ({loop})")
    print(f"cpus: {os.cpu_count()}  platform: {platform.platform()}")
    print(f"postgresql: {pg_version} ({server.description})")
    print(
        f"expander settings: horizon_s={opts.horizon_s:g} batch_size={opts.batch_size} "
        f"poll_interval_s={POLL_INTERVAL_S:g}; pool size {opts.pool_size}"
    )
    print(
        f"workload: {opts.schedules} active schedules, cron {CRON!r} (UTC), measured for "
        f"{opts.minutes:g} min of wall time"
    )
    print()


async def measure(pool: asyncpg.Pool, server: Server, opts: Options) -> None:
    await header(pool, server, opts)
    inserted, insert_s = await insert_schedules(pool, opts)
    print(f"insert: {inserted} schedules in one statement, {insert_s * 1000:.0f} ms")

    backend = await pool.fetchval("SELECT pg_backend_pid()")
    postmaster = local_postmaster(int(backend))
    store = CountingStore(pool)
    expander = TimedExpander(store, opts)

    # The first pass: every schedule was created just now, its next minute is within the
    # horizon. Measured apart: steady state starts after it.
    await expander.expand_due()
    first = expander.calls[-1]
    print(
        f"first pass: {first.created} tasks in {first.seconds * 1000:.0f} ms "
        f"({first.transactions} transactions, {first.statements} statements; planning "
        f"{first.planning * 1000:.0f} ms)"
    )

    calls_before = len(expander.calls)
    statements_before = expander.statements
    transactions_before = expander.passes
    created_before = expander.created
    queries_before = store.next_queries
    start = Usage(postgres=postgres_cpu(postmaster))
    db_start: datetime = await pool.fetchval("SELECT now()")

    runner = asyncio.create_task(expander.run(), name="expander")
    try:
        await asyncio.sleep(opts.minutes * 60)
        # Stop between passes, never in the middle of one.
        await expander.idle.wait()
    finally:
        runner.cancel()
        with suppress(asyncio.CancelledError):
            await runner
    end = Usage(postgres=postgres_cpu(postmaster))
    minutes = (end.wall - start.wall) / 60

    calls = expander.calls[calls_before:]
    passes = [c for c in calls if c.created]
    empty = len(calls) - len(passes)
    statements = expander.statements - statements_before
    transactions = expander.passes - transactions_before
    created = expander.created - created_before
    next_queries = store.next_queries - queries_before
    row = await pool.fetchrow(
        """SELECT count(*) AS tasks, count(DISTINCT (schedule_id, scheduled_for)) AS distinct_,
                  count(DISTINCT scheduled_for) AS minutes_
           FROM tasks WHERE created_at >= $1""",
        db_start,
    )
    assert row is not None
    process_cpu = end.process - start.process
    pg_cpu = postgres_used(start.postgres, end.postgres)
    seconds = [c.seconds for c in passes]
    planning = [c.planning for c in passes]

    print(
        f"steady state: {minutes:.2f} min wall, {len(passes)} passes that made tasks, "
        f"{empty} empty expand_due calls, {transactions} expand transactions, "
        f"{statements} expand statements, {next_queries} next-expansion queries"
    )
    for i, c in enumerate(passes, 1):
        print(
            f"  pass {i}: {c.created} tasks, {c.transactions} transactions, "
            f"{c.statements} statements, {c.seconds * 1000:.0f} ms "
            f"(of which planning {c.planning * 1000:.0f} ms)"
        )
    print(
        f"  stored since the start: {row['tasks']} tasks, {row['distinct_']} distinct "
        f"occurrences, {row['minutes_']} distinct minutes"
    )
    pg_line = f"postgres {pg_cpu:.2f} s" if pg_cpu is not None else "postgres n/a (not local)"
    print(
        f"  cpu: this process {process_cpu:.2f} s, {pg_line} in {end.wall - start.wall:.1f} s "
        f"wall ({os.cpu_count()} cpus)"
    )
    print()

    per_pass = sum(c.statements for c in passes) / len(passes) if passes else math.nan
    per_pass_tx = sum(c.transactions for c in passes) / len(passes) if passes else math.nan
    batches = math.ceil(opts.schedules / opts.batch_size)
    rows = [
        ("active schedules", f"{opts.schedules:,} (cron `{CRON}`)"),
        ("wall time measured", f"{minutes:.2f} min"),
        ("expansion passes (expand_due calls that made tasks)", f"{len(passes)}"),
        ("tasks created per minute", f"{created / minutes:,.0f}"),
        (
            "tasks per pass",
            f"{sum(c.created for c in passes) / len(passes):,.0f}" if passes else "n/a",
        ),
        (
            "statements in total (Expander.statements)",
            f"{statements:,} (of which {statements - sum(c.statements for c in passes)} in "
            f"{empty} empty expand_due calls)",
        ),
        (
            "statements per pass",
            f"{per_pass:.1f} in {per_pass_tx:.1f} transactions ({batches} batches of <= "
            f"{opts.batch_size}: claim + insert + update each, + the claim that comes back "
            "short)",
        ),
        ("next-expansion queries (between passes)", f"{next_queries}"),
        (
            "wall time per pass",
            f"p50 {percentile(seconds, 50) * 1000:.0f} ms, "
            f"max {max(seconds, default=math.nan) * 1000:.0f} ms",
        ),
        (
            "of which planning (plan_expansion, in this process)",
            f"p50 {percentile(planning, 50) * 1000:.0f} ms per pass",
        ),
        ("CPU of this process per minute", f"{process_cpu / minutes:.2f} s"),
        (
            "CPU of PostgreSQL per minute",
            f"{pg_cpu / minutes:.2f} s" if pg_cpu is not None else "n/a (server not local)",
        ),
    ]
    print(table(rows))


async def main_async(opts: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sd-bench-expander-"))
    server: Server | None = None
    try:
        server = await open_server(workdir)
        async with fresh_database(server.admin_dsn, "expander") as dsn:
            pool = await create_pool(dsn, opts.pool_size)
            try:
                await measure(pool, server, opts)
            finally:
                await pool.close()
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    configure_logging(LogSettings(level="warning", format="console"))  # quiet migrations
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        return runner.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
