"""Peer benchmark: scheduler-daemon side by side with PgQueuer 1.6 on one PostgreSQL server.

Run it as ``python benchmarks/peers.py`` (``make bench`` runs it after engine.py) where the
``bench`` extra is installed (``pip install -e '.[bench]'``); without PgQueuer it says so and
exits 0. ``--help`` lists the knobs.

Both systems use the same server (``common.open_server``: ``SCHEDULER_BENCH_DATABASE_URL`` or
an embedded PostgreSQL) in the same run. Every (system, phase) of every round gets a fresh
database (``common.fresh_database``, which also migrates the daemon's schema into PgQueuer's
databases; PgQueuer never reads those tables). Rounds are interleaved (``--repeat``): each
round runs every phase for both systems, the order of the systems alternating per round;
the table shows the medians, the JSON line keeps every round.

drain
    ``--n`` no-op tasks are loaded in calls of 1000 (untimed), then ``VACUUM ANALYZE`` and
    ``CHECKPOINT``. The worker is started held back and released once it is ready, so
    process start, imports and connecting are never timed:

    * scheduler-daemon: the real daemon process (``engine.DaemonProcess``, i.e. ``python -m
      scheduler_daemon run`` with the engine benchmark's default settings) running the
      built-in ``noop`` action. It starts with queue ``default`` paused and is released by
      resuming the queue with the store's own statement, which notifies the daemon.
    * PgQueuer: this script as a worker process (``--pgqueuer-worker``): one
      ``QueueManager`` on one asyncpg connection, one no-op entrypoint, batch size 100. It
      prints ``ready`` once connected and calls ``QueueManager.run`` when told ``go`` on
      stdin; closing its stdin shuts it down gracefully.

    Time runs from the database clock just before the release to the last completion as
    the database recorded it: ``max(tasks.finished_at)`` once every task is completed;
    for PgQueuer ``max(pgqueuer_log.created)`` of the successful jobs once its ``pgqueuer``
    table is empty. The probes poll every 0.1 s, which does not decide the time. Reported:
    tasks/s, and per task the CPU time of PostgreSQL (every process of the local
    postmaster) and of the worker process, read from /proc between the release and the
    moment the probe saw the last task done.
enqueue
    No worker. On one asyncpg connection, each call its own autocommitted transaction,
    after 50 untimed single calls (connection caches, prepared statements): ``--n`` tasks
    in calls of 1000 (``scheduler_daemon.enqueue_many`` / ``Queries.enqueue`` with lists),
    then 2000 tasks one per call (``scheduler_daemon.enqueue`` / ``Queries.enqueue``).
    Reported: tasks/s of each; building the call's arguments is part of the timed call.

Output: a header (machine, PostgreSQL settings, versions, worker settings), a table of the
figures with the ratio between the systems (turned so that above 1 means scheduler-daemon
is better: daemon/PgQueuer for rates, PgQueuer/daemon for costs), then all results as one
JSON line (``--json-out`` writes the same line to a file). Figures only: nothing here
asserts; a check that fails is printed with ``!``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg

from benchmarks.common import (
    Server,
    fresh_database,
    local_postmaster,
    machine_lines,
    open_server,
    postgres_used,
)
from benchmarks.engine import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    CpuMeter,
    CpuSnapshot,
    DaemonProcess,
    ScenarioFailed,
)
from benchmarks.engine import Options as EngineOptions
from benchmarks.engine import parse_args as engine_args
from scheduler_daemon import enqueue, enqueue_many
from scheduler_daemon.app import install_uvloop
from scheduler_daemon.domain.models import NewTask
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.settings import LogSettings
from scheduler_daemon.store import queries

SYSTEMS = ("pgqueuer", "daemon")
TITLES = {"pgqueuer": "PgQueuer", "daemon": "scheduler-daemon"}
PHASES = ("drain", "enqueue")
CALL_SIZE = 1_000  # tasks per call: the drain's load and the batch enqueue
SINGLES = 2_000  # tasks enqueued one per call
WARMUP_CALLS = 50
PGQ_BATCH_SIZE = 100  # QueueManager.run(batch_size=...); the library default is 10
PGQ_ENTRYPOINT = "noop"
DAEMON_ACTION = "noop"
DAEMON_QUEUE = "default"
POLL_S = 0.1
TIMEOUT_S = 300.0  # the longest a drain may take
WORKER_FLAG = "--pgqueuer-worker"
SCRIPT = Path(__file__).resolve()
WORKER_DSN_ENV = "SD_PEERS_PGQUEUER_DSN"
INSTALL_HINT = "pip install -e '.[bench]'"
PG_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "wal_level",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "jit",
)

Figures = dict[str, float | None]


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    n: int
    repeat: int
    phases: tuple[str, ...]
    json_out: Path | None


def parse_phases(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in names if p not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"phases are a comma list of {', '.join(PHASES)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/peers.py",
        description="scheduler-daemon beside PgQueuer on one PostgreSQL: drain and enqueue.",
    )
    parser.add_argument("--n", type=int, default=20_000, help="drain and batch tasks (20000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--phases",
        type=parse_phases,
        default=PHASES,
        help=f"comma list of {', '.join(PHASES)} (default: both)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON line to this file")
    ns = parser.parse_args(argv)
    if ns.n < 1 or ns.repeat < 1:
        parser.error("--n and --repeat must be at least 1")
    return Options(n=ns.n, repeat=ns.repeat, phases=ns.phases, json_out=ns.json_out)


def daemon_options() -> EngineOptions:
    """The engine benchmark's daemon settings, at their defaults."""
    return engine_args([])


# -- the systems --------------------------------------------------------------------------


class Worker(Protocol):
    """A started worker process that has not taken any work yet."""

    @property
    def pid(self) -> int | None: ...

    async def release(self) -> None: ...

    def check_alive(self) -> None: ...


class System(Protocol):
    """One measured system on one phase database (``conn``: the harness's connection)."""

    async def install(self) -> None: ...

    async def enqueue_batch(self, count: int) -> None: ...

    async def enqueue_one(self) -> None: ...

    def worker(self) -> contextlib.AbstractAsyncContextManager[Worker]: ...

    async def left(self, n: int) -> int:
        """How many of the ``n`` loaded tasks are not done yet."""
        ...

    async def last_done(self) -> datetime | None: ...

    async def checks(self, n: int) -> list[str]:
        """What is wrong after a drain of ``n`` tasks (empty: every task ran once)."""
        ...


async def count(conn: asyncpg.Connection, sql: str) -> int:
    return int(await conn.fetchval(sql) or 0)


@dataclass(slots=True)
class HeldDaemon:
    """The daemon process, ready, with its queue paused; ``release`` resumes the queue."""

    process: DaemonProcess
    conn: asyncpg.Connection

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def release(self) -> None:
        await self.conn.fetchval(queries.RESUME_QUEUE, DAEMON_QUEUE)

    def check_alive(self) -> None:
        self.process.check_alive()


class DaemonSystem:
    """scheduler-daemon: the library's enqueue, the real daemon process as the worker."""

    def __init__(self, conn: asyncpg.Connection, dsn: str, workdir: Path, label: str) -> None:
        self.conn = conn
        self.dsn = dsn
        self.workdir = workdir
        self.label = label

    async def install(self) -> None:
        return None  # fresh_database migrated it; the daemon's own migration is a no-op

    async def enqueue_batch(self, count: int) -> None:
        await enqueue_many(
            self.conn, [NewTask(action=DAEMON_ACTION, payload={}) for _ in range(count)]
        )

    async def enqueue_one(self) -> None:
        await enqueue(self.conn, DAEMON_ACTION, {})

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[Worker]:
        await self.conn.fetchval(queries.PAUSE_QUEUE, DAEMON_QUEUE, "peers-benchmark")
        async with aiohttp.ClientSession() as session:
            daemon = DaemonProcess(self.dsn, daemon_options(), self.workdir, self.label)
            try:
                await daemon.start(session)
                yield HeldDaemon(daemon, self.conn)
            finally:
                code = await daemon.stop()
                summary = daemon.log_summary()
                if summary:
                    print(f"  daemon log ({self.label}): {summary}")
                if code not in (0, None):
                    print(f"  ! daemon ({self.label}) exited with code {code}")

    async def left(self, n: int) -> int:
        # Counted on the partial index of finished tasks: nothing is cancelled here.
        done = await count(
            self.conn, "SELECT count(*) FROM tasks WHERE status IN ('completed', 'cancelled')"
        )
        return n - done

    async def last_done(self) -> datetime | None:
        value: datetime | None = await self.conn.fetchval(
            "SELECT max(finished_at) FROM tasks WHERE status = 'completed'"
        )
        return value

    async def checks(self, n: int) -> list[str]:
        row = await self.conn.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                      count(*) FILTER (WHERE attempts <> 1) AS not_once,
                      (SELECT count(*) FROM task_attempts) AS attempts
               FROM tasks"""
        )
        if row is None:
            return ["no tasks table"]
        problems = []
        if row["completed"] != n:
            problems.append(f"{row['completed']} of {n} tasks completed")
        if row["not_once"]:
            problems.append(f"{row['not_once']} tasks with attempts other than 1")
        if row["attempts"] != n:
            problems.append(f"{row['attempts']} attempt rows for {n} tasks")
        return problems


class PgQueuerWorker:
    """This script with ``--pgqueuer-worker``: ``ready`` on stdout, ``go`` on stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ScenarioFailed("PgQueuer worker started without its pipes")
        self._proc = proc
        self._commands = proc.stdin
        self._answers = proc.stdout
        self.log_path = log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while line := await self._answers.readline():
                    if line.strip() == b"ready":
                        return
                await self._proc.wait()
        except TimeoutError:
            raise ScenarioFailed(
                f"PgQueuer worker not ready after {READY_TIMEOUT_S:g} s:\n{self.log_tail()}"
            ) from None
        raise ScenarioFailed(
            f"PgQueuer worker exited with code {self._proc.returncode} before it was ready:\n"
            f"{self.log_tail()}"
        )

    async def release(self) -> None:
        self._commands.write(b"go\n")
        await self._commands.drain()

    def check_alive(self) -> None:
        if self._proc.returncode is not None:
            raise ScenarioFailed(
                f"PgQueuer worker exited with code {self._proc.returncode}:\n{self.log_tail()}"
            )

    async def stop(self) -> int | None:
        """Close its stdin (a graceful shutdown); kill it if it does not exit in time."""
        self._commands.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._proc.wait()
        except TimeoutError:
            print(f"  ! PgQueuer worker did not stop in {STOP_TIMEOUT_S:g} s: killed")
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "(no worker log)"
        return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:])


class PgQueuerSystem:
    """PgQueuer: ``Queries`` on the harness's connection, a QueueManager process as worker."""

    def __init__(self, conn: asyncpg.Connection, dsn: str, workdir: Path, label: str) -> None:
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        self.conn = conn
        self.dsn = dsn
        self.workdir = workdir
        self.label = label
        self.queries = Queries(AsyncpgDriver(conn))

    async def install(self) -> None:
        await self.queries.install()

    async def enqueue_batch(self, count: int) -> None:
        await self.queries.enqueue([PGQ_ENTRYPOINT] * count, [None] * count, [0] * count)

    async def enqueue_one(self) -> None:
        await self.queries.enqueue(PGQ_ENTRYPOINT, None, 0)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[Worker]:
        log_path = self.workdir / f"pgqueuer-{self.label}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                WORKER_FLAG,
                env={**os.environ, WORKER_DSN_ENV: self.dsn},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            worker = PgQueuerWorker(proc, log_path)
            try:
                await worker.wait_ready()
                yield worker
            finally:
                code = await worker.stop()
                if code not in (0, None):
                    print(f"  ! PgQueuer worker ({self.label}) exited with code {code}")
                    print(worker.log_tail())

    async def left(self, n: int) -> int:
        # A finished job's row is deleted (and its status logged to pgqueuer_log).
        return await count(self.conn, "SELECT count(*) FROM pgqueuer")

    async def last_done(self) -> datetime | None:
        value: datetime | None = await self.conn.fetchval(
            "SELECT max(created) FROM pgqueuer_log WHERE status = 'successful'"
        )
        return value

    async def checks(self, n: int) -> list[str]:
        row = await self.conn.fetchrow(
            """SELECT count(*) AS logged, count(DISTINCT job_id) AS jobs
               FROM pgqueuer_log WHERE status = 'successful'"""
        )
        if row is None:
            return ["no pgqueuer_log table"]
        problems = []
        if row["jobs"] != n:
            problems.append(f"{row['jobs']} of {n} jobs logged successful")
        if row["logged"] != row["jobs"]:
            problems.append(f"{row['logged'] - row['jobs']} jobs logged successful twice")
        return problems


SystemFactory = Callable[[asyncpg.Connection, str, Path, str], System]
FACTORIES: dict[str, SystemFactory] = {"daemon": DaemonSystem, "pgqueuer": PgQueuerSystem}


# -- the PgQueuer worker process ----------------------------------------------------------


async def stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def noop_job(job: object) -> None:
    """The entrypoint: takes a job (``pgqueuer.models.Job``) and does nothing."""


async def pgqueuer_worker(dsn: str) -> None:
    """Connect, register the no-op entrypoint, say ``ready``; on ``go`` run the
    QueueManager until stdin closes (or it stops by itself), then shut it down."""
    from pgqueuer import Queries, QueueManager
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(dsn)
    try:
        manager = QueueManager(Queries(AsyncpgDriver(conn)))
        manager.entrypoint(PGQ_ENTRYPOINT, accepts_context=False)(noop_job)
        commands = await stdin_reader()
        print("ready", flush=True)
        if (await commands.readline()).strip() != b"go":
            return
        run = asyncio.create_task(manager.run(batch_size=PGQ_BATCH_SIZE))
        closed = asyncio.create_task(commands.read())  # EOF: the harness is done
        await asyncio.wait({run, closed}, return_when=asyncio.FIRST_COMPLETED)
        manager.shutdown.set()  # finish what is in flight, flush the status buffers
        closed.cancel()
        await run
    finally:
        await conn.close()


def worker_main() -> int:
    dsn = os.environ[WORKER_DSN_ENV]
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        runner.run(pgqueuer_worker(dsn))
    return 0


# -- phases -------------------------------------------------------------------------------


async def enqueue_in_calls(system: System, total: int) -> None:
    for start in range(0, total, CALL_SIZE):
        await system.enqueue_batch(min(CALL_SIZE, total - start))


async def db_now(conn: asyncpg.Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def wait_drained(system: System, worker: Worker, n: int) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    while (left := await system.left(n)) > 0:
        if time.perf_counter() > deadline:
            raise ScenarioFailed(f"drain: {left} of {n} tasks not done after {TIMEOUT_S:g} s")
        worker.check_alive()
        await asyncio.sleep(POLL_S)


def per_task_us(seconds: float | None, n: int) -> float | None:
    return None if seconds is None else seconds / n * 1e6


async def load_backlog(system: System, conn: asyncpg.Connection, n: int) -> None:
    """``n`` due tasks, then a settled table: vacuumed, analysed, checkpointed."""
    await enqueue_in_calls(system, n)
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")


def drain_figures(n: int, seconds: float, before: CpuSnapshot, after: CpuSnapshot) -> Figures:
    worker_s = None
    if before.daemon is not None and after.daemon is not None:
        worker_s = after.daemon - before.daemon  # CpuMeter's "daemon" is the worker's pid
    return {
        "drain_seconds": seconds,
        "drain_tasks_per_s": n / seconds,
        "drain_pg_cpu_us_per_task": per_task_us(postgres_used(before.postgres, after.postgres), n),
        "drain_worker_cpu_us_per_task": per_task_us(worker_s, n),
    }


async def bench_drain(system: System, conn: asyncpg.Connection, n: int) -> Figures:
    await load_backlog(system, conn, n)
    postmaster = local_postmaster(int(await conn.fetchval("SELECT pg_backend_pid()")))
    async with system.worker() as worker:
        meter = CpuMeter(worker.pid, postmaster)
        before = meter.snapshot()
        started = await db_now(conn)
        await worker.release()
        await wait_drained(system, worker, n)
        after = meter.snapshot()
    finished = await system.last_done()
    if finished is None:
        raise ScenarioFailed("drain: no completion recorded")
    figures = drain_figures(n, (finished - started).total_seconds(), before, after)
    print(
        f"  {n} tasks in {figures['drain_seconds']:.2f} s = "
        f"{shown(figures['drain_tasks_per_s'])} tasks/s; CPU per task: PostgreSQL "
        f"{shown(figures['drain_pg_cpu_us_per_task'])} us, worker "
        f"{shown(figures['drain_worker_cpu_us_per_task'])} us"
    )
    for problem in await system.checks(n):
        print(f"  ! {problem}")
    return figures


async def timed(calls: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await calls()
    return time.perf_counter() - start


async def bench_enqueue(system: System, conn: asyncpg.Connection, n: int) -> Figures:
    """``conn`` is unused: every call goes through the system's own client."""

    async def singles() -> None:
        for _ in range(SINGLES):
            await system.enqueue_one()

    for _ in range(WARMUP_CALLS):
        await system.enqueue_one()
    batch_s = await timed(lambda: enqueue_in_calls(system, n))
    single_s = await timed(singles)
    figures: Figures = {
        "enqueue_batch_tasks_per_s": n / batch_s,
        "enqueue_one_tasks_per_s": SINGLES / single_s,
    }
    print(
        f"  {n} tasks in calls of {CALL_SIZE}: {shown(figures['enqueue_batch_tasks_per_s'])} "
        f"tasks/s; {SINGLES} one per call: {shown(figures['enqueue_one_tasks_per_s'])} tasks/s"
    )
    return figures


BENCHES = {"drain": bench_drain, "enqueue": bench_enqueue}


# -- rounds -------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    system: str
    phase: str
    round: int
    figures: Figures
    error: str | None = None


async def measure(
    server: Server, system: str, phase: str, n: int, workdir: Path, label: str
) -> Figures:
    async with fresh_database(server.admin_dsn, label) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            peer = FACTORIES[system](conn, dsn, workdir, label)
            await peer.install()
            return await BENCHES[phase](peer, conn, n)
        finally:
            await conn.close()


async def run_rounds(server: Server, opts: Options, workdir: Path) -> list[Run]:
    runs: list[Run] = []
    for rnd in range(1, opts.repeat + 1):
        order = SYSTEMS if rnd % 2 else SYSTEMS[::-1]
        for phase in opts.phases:
            for system in order:
                label = f"peers_{system}_{phase}_{rnd}"
                print(f"round {rnd} of {opts.repeat}, {phase}, {TITLES[system]}:")
                try:
                    figures = await measure(server, system, phase, opts.n, workdir, label)
                except ScenarioFailed as exc:
                    print(f"  FAILED: {exc}")
                    runs.append(Run(system, phase, rnd, {}, str(exc)))
                    continue
                runs.append(Run(system, phase, rnd, figures))
    return runs


# -- report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    higher_is_better: bool


ROWS = (
    Row("drain_tasks_per_s", "drain: tasks/s (higher is better)", True),
    Row("drain_pg_cpu_us_per_task", "drain: PostgreSQL CPU us/task (lower is better)", False),
    Row("drain_worker_cpu_us_per_task", "drain: worker CPU us/task (lower is better)", False),
    Row(
        "enqueue_batch_tasks_per_s",
        f"enqueue {CALL_SIZE} per call: tasks/s (higher is better)",
        True,
    ),
    Row("enqueue_one_tasks_per_s", "enqueue one per call: tasks/s (higher is better)", True),
)


def medians(runs: list[Run]) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    for system in SYSTEMS:
        values: dict[str, list[float]] = {}
        for run in runs:
            if run.system == system:
                for key, value in run.figures.items():
                    if value is not None:
                        values.setdefault(key, []).append(value)
        out[system] = {key: statistics.median(v) for key, v in values.items()}
    return out


def ratio(row: Row, peer: float | None, daemon: float | None) -> float | None:
    """Above 1: scheduler-daemon is better (daemon/peer for rates, peer/daemon for costs)."""
    if peer is None or daemon is None or not peer or not daemon:
        return None
    return daemon / peer if row.higher_is_better else peer / daemon


def ratios(mid: dict[str, Figures]) -> Figures:
    return {
        row.key: ratio(row, mid["pgqueuer"].get(row.key), mid["daemon"].get(row.key))
        for row in ROWS
    }


def shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def table(mid: dict[str, Figures], rates: Figures) -> str:
    peer, ours = TITLES["pgqueuer"], TITLES["daemon"]
    lines = [f"| figure | {peer} | {ours} | ratio |", "|---|---|---|---|"]
    for row in ROWS:
        a, b = mid["pgqueuer"].get(row.key), mid["daemon"].get(row.key)
        if a is None and b is None:
            continue
        r = rates.get(row.key)
        way = "daemon/PgQueuer" if row.higher_is_better else "PgQueuer/daemon"
        cell = "n/a" if r is None else f"{r:.2f} ({way})"
        lines.append(f"| {row.label} | {shown(a)} | {shown(b)} | {cell} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


async def postgres_settings(server: Server) -> dict[str, str]:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in PG_SETTINGS}
    finally:
        await conn.close()


def worker_settings() -> dict[str, str]:
    d = daemon_options()
    return {
        "daemon": (
            f"python -m scheduler_daemon run, action {DAEMON_ACTION}, "
            f"executor.concurrency={d.concurrency} discovery.batch_size={d.batch_size} "
            f"database.pool_size={d.pool_size} log.level=warning"
        ),
        "pgqueuer": (
            f"one QueueManager on one asyncpg connection, one no-op entrypoint, "
            f"batch_size={PGQ_BATCH_SIZE}, max_concurrent_tasks unlimited"
        ),
    }


async def header(server: Server, opts: Options) -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": await machine_lines(server),
        "postgres": await postgres_settings(server),
        "versions": {
            name: package_version(name) for name in ("scheduler-daemon", "pgqueuer", "asyncpg")
        },
        "workers": worker_settings(),
        "workload": {
            "n": opts.n,
            "call_size": CALL_SIZE,
            "singles": SINGLES,
            "repeat": opts.repeat,
            "phases": list(opts.phases),
        },
    }
    rounds = "1 round" if opts.repeat == 1 else f"medians of {opts.repeat} rounds"
    print(f"# scheduler-daemon beside PgQueuer on one PostgreSQL server ({rounds})")
    print("\n".join(info["machine"]))
    print("postgresql settings: " + " ".join(f"{k}={v}" for k, v in info["postgres"].items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    for system, text in info["workers"].items():
        print(f"{TITLES[system]} worker: {text}")
    print(
        f"workload: drain {opts.n} tasks; enqueue {opts.n} in calls of {CALL_SIZE}, then "
        f"{SINGLES} one per call; phases: {', '.join(opts.phases)}"
    )
    print()
    return info


def report(info: dict[str, Any], runs: list[Run], opts: Options) -> None:
    mid = medians(runs)
    rates = ratios(mid)
    print()
    print(table(mid, rates))
    print("(ratio above 1: scheduler-daemon is better; rows are medians over the rounds)")
    failed = [r for r in runs if r.error is not None]
    if failed:
        print(f"({len(failed)} of {len(runs)} measurements failed; medians of the others)")
    line = json.dumps(
        {
            "benchmark": "peers",
            **info,
            "medians": mid,
            "ratios": rates,
            "rounds": [
                {"system": r.system, "phase": r.phase, "round": r.round, **r.figures}
                | ({"error": r.error} if r.error else {})
                for r in runs
            ],
        },
        separators=(",", ":"),
    )
    print(line)
    if opts.json_out is not None:
        opts.json_out.write_text(line + "\n")


async def main_async(opts: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sd-peers-"))
    server: Server | None = None
    try:
        server = await open_server(workdir)
        info = await header(server, opts)
        runs = await run_rounds(server, opts, workdir)
        report(info, runs, opts)
        return 1 if any(r.error is not None for r in runs) else 0
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)


def pgqueuer_installed() -> bool:
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args == [WORKER_FLAG]:
        return worker_main()
    opts = parse_args(args)
    if not pgqueuer_installed():
        print(f"peers: the comparison with PgQueuer needs `{INSTALL_HINT}`; skipped")
        return 0
    configure_logging(LogSettings(level="warning", format="console"))  # quiet migrations
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        return runner.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
