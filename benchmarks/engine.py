"""Engine benchmark: drain rate, pick-up latency, lag and create rate of the real daemon.

Run it as ``.venv/bin/python benchmarks/engine.py`` (or ``make bench``); ``--help`` lists the
knobs. Every scenario gets a fresh, migrated database and its own daemon subprocess
(``python -m scheduler_daemon run``), started and ready before the measurement begins, so
start-up time is never measured and scenarios do not disturb each other.

The database server is the one named by ``SCHEDULER_BENCH_DATABASE_URL`` (an admin DSN, allowed
to create databases) or, when that is unset, an embedded PostgreSQL started in a temporary
folder and stopped at the end.

Figures only: nothing here asserts. The table at the end puts each figure beside its target.
Times that decide a figure come from the database clock where the brief allows it
(``created_at`` / ``run_at`` / ``started_at``), so the client's own overhead is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg

from benchmarks.common import (
    Server,
    fresh_database,
    local_postmaster,
    machine_lines,
    open_server,
    percentile,
    postgres_cpu,
    postgres_used,
    proc_stat,
)
from scheduler_daemon.app import install_uvloop
from scheduler_daemon.domain.models import NewTask
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.settings import (
    DatabaseSettings,
    DiscoverySettings,
    ExecutorSettings,
    LogSettings,
)
from scheduler_daemon.store.postgres import PostgresStore, create_pool
from scheduler_daemon.store.queues import PostgresQueueStore

POLL_S = 0.020  # how often every wait loop looks (readiness, completion counts)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 45.0
SCENARIOS = ("drain", "paused", "pickup", "lag", "create", "batch")
TARGETS = {
    "drain": ">= 5,000 tasks/s",
    "paused": ">= 5,000 tasks/s",
    "pickup": "< 15 ms",
    "lag": "< 25 ms",
    "create": ">= 1,500 requests/s",
    "batch": ">= 20,000 tasks/s",
}


class ScenarioFailed(Exception):
    """A scenario could not finish (timeout, daemon died); the message says why."""


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    drain_tasks: int
    pickup_samples: int
    lag_tasks: int
    lag_window_s: float
    lag_lead_s: float
    creates: int
    create_concurrency: int
    batches: int
    batch_items: int
    batch_concurrency: int
    concurrency: int
    batch_size: int
    pool_size: int
    timeout_s: float
    only: tuple[str, ...]
    profile_dir: Path | None


def _default(model: Any, name: str) -> Any:
    return model.model_fields[name].default


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/engine.py",
        description="Benchmark the scheduler daemon: drain, pick-up latency, lag, create rate.",
    )
    parser.add_argument("--drain-tasks", type=int, default=20_000, help="default 20000")
    parser.add_argument("--pickup-samples", type=int, default=300, help="default 300")
    parser.add_argument("--lag-tasks", type=int, default=1_000, help="default 1000")
    parser.add_argument(
        "--lag-window-s", type=float, default=10.0, help="run_at spread (default 10 s)"
    )
    parser.add_argument(
        "--lag-lead-s", type=float, default=1.5, help="first run_at this far ahead (default 1.5)"
    )
    parser.add_argument("--creates", type=int, default=5_000, help="POSTs to time (default 5000)")
    parser.add_argument(
        "--create-concurrency", type=int, default=16, help="in-flight POSTs (default 16)"
    )
    parser.add_argument("--batches", type=int, default=40, help="batch POSTs (default 40)")
    parser.add_argument(
        "--batch-items", type=int, default=1_000, help="tasks per batch POST (default 1000)"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=2, help="in-flight batch POSTs (default 2)"
    )
    concurrency = _default(ExecutorSettings, "concurrency")
    batch_size = _default(DiscoverySettings, "batch_size")
    pool_size = _default(DatabaseSettings, "pool_size")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=concurrency,
        help=f"executor.concurrency of the daemon (default {concurrency})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help=f"discovery.batch_size of the daemon (default {batch_size})",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=pool_size,
        help=f"database.pool_size of the daemon (default {pool_size})",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per-scenario wait limit (default 120 s)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="run each daemon under cProfile and write <dir>/<scenario>.prof",
    )
    ns = parser.parse_args(argv)
    for name in (
        "drain_tasks",
        "pickup_samples",
        "lag_tasks",
        "creates",
        "create_concurrency",
        "batches",
        "batch_items",
        "batch_concurrency",
    ):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(
        drain_tasks=ns.drain_tasks,
        pickup_samples=ns.pickup_samples,
        lag_tasks=ns.lag_tasks,
        lag_window_s=ns.lag_window_s,
        lag_lead_s=max(ns.lag_lead_s, 1.0),
        creates=ns.creates,
        create_concurrency=ns.create_concurrency,
        batches=ns.batches,
        batch_items=ns.batch_items,
        batch_concurrency=ns.batch_concurrency,
        concurrency=ns.concurrency,
        batch_size=ns.batch_size,
        pool_size=ns.pool_size,
        timeout_s=ns.timeout,
        only=tuple(dict.fromkeys(ns.only)) if ns.only else SCENARIOS,
        profile_dir=ns.profile_dir,
    )


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    shown: str  # the measured value as printed in the table
    target: str
    meets: bool | None  # None: the scenario failed


# -- the daemon subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DaemonProcess:
    """``python -m scheduler_daemon run`` on a given database and a free port."""

    def __init__(self, dsn: str, opts: Options, workdir: Path, label: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._dsn = dsn
        self._opts = opts
        self._workdir = workdir
        self._label = label
        self.log_path = workdir / f"daemon-{label}.log"
        self._log_file: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCHEDULER_")}
        env.update(
            {
                "SCHEDULER_DATABASE__URL": self._dsn,
                "SCHEDULER_DATABASE__POOL_SIZE": str(self._opts.pool_size),
                "SCHEDULER_HTTP__HOST": "127.0.0.1",
                "SCHEDULER_HTTP__PORT": str(self.port),
                "SCHEDULER_LOG__LEVEL": "warning",
                "SCHEDULER_LOG__FORMAT": "json",
                "SCHEDULER_EXECUTOR__CONCURRENCY": str(self._opts.concurrency),
                "SCHEDULER_DISCOVERY__BATCH_SIZE": str(self._opts.batch_size),
            }
        )
        return env

    def _argv(self) -> list[str]:
        argv = [sys.executable]
        if self._opts.profile_dir is not None:
            self._opts.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self._opts.profile_dir.resolve() / f"{self._label}.prof"
            argv += ["-m", "cProfile", "-o", str(out)]
        return [*argv, "-m", "scheduler_daemon", "run"]

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._log_file = self.log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv(),
            env=self._env(),
            cwd=self._workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log_file,
        )
        deadline = time.perf_counter() + READY_TIMEOUT_S
        last = "no answer yet"
        while True:
            if self._proc.returncode is not None:
                raise ScenarioFailed(
                    f"daemon exited with code {self._proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                async with session.get(f"{self.base_url}/readyz") as resp:
                    if resp.status == 200:
                        return
                    last = f"{resp.status} {await resp.text()}"
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() > deadline:
                raise ScenarioFailed(
                    f"daemon not ready after {READY_TIMEOUT_S:g} s (last /readyz: {last}):\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(POLL_S)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise ScenarioFailed(
                f"daemon exited with code {self._proc.returncode}:\n{self.log_tail()}"
            )

    async def stop(self) -> int | None:
        """SIGTERM, wait for the drain; SIGKILL if it does not stop in time."""
        proc = self._proc
        try:
            if proc is None:
                return None
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await proc.wait()
                except TimeoutError:
                    print(f"  ! daemon ignored SIGTERM for {STOP_TIMEOUT_S:g} s: killed")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            return proc.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "(no daemon log)"
        return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:])

    def log_summary(self) -> str | None:
        """Warning and error lines the daemon logged, counted by event; None when none."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return None
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = f"{entry.get('level', '?')}:{entry.get('event', '?')}"
            except ValueError:
                key = "unstructured"
            counts[key] += 1
        if not counts:
            return None
        return ", ".join(f"{key} x{n}" for key, n in counts.most_common())


# -- where the CPU went -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    wall: float
    bench: float
    daemon: float | None
    postgres: dict[int, float] | None


class CpuMeter:
    """CPU seconds used by the daemon, the PostgreSQL server (when it runs on this host; every
    process of its postmaster) and this benchmark process, between two snapshots (Linux)."""

    def __init__(self, daemon_pid: int | None, postmaster_pid: int | None) -> None:
        self._daemon_pid = daemon_pid
        self._postmaster_pid = postmaster_pid

    def snapshot(self) -> CpuSnapshot:
        daemon = proc_stat(self._daemon_pid) if self._daemon_pid is not None else None
        pg = postgres_cpu(self._postmaster_pid)
        return CpuSnapshot(
            time.perf_counter(), time.process_time(), daemon[1] if daemon else None, pg
        )

    def report(self, start: CpuSnapshot) -> str:
        end = self.snapshot()
        parts: list[str] = []
        if start.daemon is not None and end.daemon is not None:
            parts.append(f"daemon {end.daemon - start.daemon:.2f} s")
        used = postgres_used(start.postgres, end.postgres)
        if used is not None:
            parts.append(f"postgres {used:.2f} s")
        parts.append(f"benchmark client {end.bench - start.bench:.2f} s")
        return (
            f"  cpu: {', '.join(parts)} in {end.wall - start.wall:.2f} s wall "
            f"({os.cpu_count()} cpus)"
        )


@dataclass(slots=True)
class Env:
    """What a scenario gets: its database, a store on it, a polling connection, the daemon."""

    dsn: str
    store: PostgresStore
    conn: asyncpg.Connection
    daemon: DaemonProcess
    session: aiohttp.ClientSession
    timeout_s: float
    cpu: CpuMeter

    async def count(self, sql: str, *args: object) -> int:
        value = await self.conn.fetchval(sql, *args)
        return int(value or 0)

    async def wait_completed(self, total: int, timeout_s: float, what: str) -> float:
        """Poll every POLL_S until ``total`` tasks are completed; return the seconds it took."""
        start = time.perf_counter()
        deadline = start + timeout_s
        while True:
            # Counted on the partial index of finished tasks (nothing is cancelled here): a
            # count over the whole table at this rate would load the database more than the
            # daemon does.
            done = await self.count(
                "SELECT count(*) FROM tasks WHERE status IN ('completed', 'cancelled')"
            )
            if done >= total:
                return time.perf_counter() - start
            if time.perf_counter() > deadline:
                statuses = await self.status_counts()
                raise ScenarioFailed(
                    f"{what}: only {done} of {total} tasks completed after {timeout_s:g} s "
                    f"(statuses: {statuses})"
                )
            self.daemon.check_alive()
            await asyncio.sleep(POLL_S)

    async def status_counts(self) -> dict[str, int]:
        rows = await self.conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
        return {str(r["status"]): int(r["n"]) for r in rows}


@asynccontextmanager
async def scenario_env(
    server: Server, opts: Options, workdir: Path, label: str
) -> AsyncIterator[Env]:
    async with fresh_database(server.admin_dsn, label) as dsn:
        pool = await create_pool(dsn, 4)
        try:
            conn = await asyncpg.connect(dsn)
            try:
                connector = aiohttp.TCPConnector(limit=4)
                async with aiohttp.ClientSession(connector=connector) as session:
                    daemon = DaemonProcess(dsn, opts, workdir, label)
                    try:
                        await daemon.start(session)
                        backend = await conn.fetchval("SELECT pg_backend_pid()")
                        cpu = CpuMeter(daemon.pid, local_postmaster(int(backend)))
                        yield Env(
                            dsn, PostgresStore(pool), conn, daemon, session, opts.timeout_s, cpu
                        )
                    finally:
                        code = await daemon.stop()
                        summary = daemon.log_summary()
                        if summary:
                            print(f"  daemon log ({label}): {summary}")
                        if code not in (0, None):
                            print(f"  ! daemon ({label}) exited with code {code}")
            finally:
                await conn.close()
        finally:
            await pool.close()


# -- scenarios ----------------------------------------------------------------------------


async def bench_drain(env: Env, opts: Options) -> Figure:
    n = opts.drain_tasks
    tasks = [NewTask(action="noop", payload={}, run_at=None) for _ in range(n)]
    before = time.perf_counter()
    await env.store.create_tasks(tasks)  # one statement, committed when it returns
    insert_s = time.perf_counter() - before
    cpu = env.cpu.snapshot()
    elapsed = await env.wait_completed(n, env.timeout_s, "drain")
    cpu_line = env.cpu.report(cpu)
    rate = n / elapsed
    attempts = await env.count("SELECT count(*) FROM task_attempts")
    print(
        f"drain: {n} tasks in {elapsed:.2f} s = {rate:.0f} tasks/s (attempts recorded: {attempts})"
    )
    row = await env.conn.fetchrow(
        """SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS span_s,
                  count(DISTINCT started_at) AS claims,
                  count(DISTINCT finished_at) AS completions,
                  max(attempts) AS max_attempts
           FROM tasks"""
    )
    assert row is not None
    claims = int(row["claims"])
    completions = int(row["completions"])
    print(
        f"  insert {insert_s * 1000:.0f} ms; database span first claim -> last completion "
        f"{row['span_s']:.2f} s; {claims} claim statements (mean {n / max(claims, 1):.1f} "
        f"tasks each), {completions} completion statements "
        f"(mean {n / max(completions, 1):.1f} each); max attempts per task {row['max_attempts']}"
    )
    print(cpu_line)
    if attempts != n:
        print(f"  ! expected {n} attempt rows, found {attempts}")
    return Figure("drain rate", f"{rate:,.0f} tasks/s", TARGETS["drain"], rate >= 5_000)


async def bench_paused(env: Env, opts: Options) -> Figure:
    """The drain again, while another queue holds a due backlog and is paused: the claims
    must not read through that backlog."""
    backlog = opts.drain_tasks * 5
    await PostgresQueueStore(env.store.pool).pause("held", "bench")
    await env.store.create_tasks(
        [NewTask(action="noop", payload={}, queue="held") for _ in range(backlog)]
    )
    # A settled database: the backlog is old, vacuumed and analysed, not being processed by
    # autovacuum during the measurement.
    await env.conn.execute("VACUUM ANALYZE tasks")
    n = opts.drain_tasks
    await env.store.create_tasks([NewTask(action="noop", payload={}) for _ in range(n)])
    cpu = env.cpu.snapshot()
    elapsed = await env.wait_completed(n, env.timeout_s, "paused")
    rate = n / elapsed
    held = await env.count(
        "SELECT count(*) FROM tasks WHERE queue = 'held' AND status = 'scheduled'"
    )
    print(
        f"paused: {n} tasks in {elapsed:.2f} s = {rate:.0f} tasks/s beside {backlog} due tasks "
        f"of a paused queue ({held} still scheduled)"
    )
    print(env.cpu.report(cpu))
    if held != backlog:
        print(f"  ! {backlog - held} tasks of the paused queue ran")
    return Figure(
        "drain beside a paused backlog", f"{rate:,.0f} tasks/s", TARGETS["paused"], rate >= 5_000
    )


async def bench_pickup(env: Env, opts: Options) -> Figure:
    n = opts.pickup_samples
    deadline = time.perf_counter() + env.timeout_s
    cpu = env.cpu.snapshot()
    for i in range(n):
        task, _ = await env.store.create_task(NewTask(action="noop", payload={}))
        while True:  # wait for it to finish, so every sample starts from an idle daemon
            status = await env.conn.fetchval("SELECT status FROM tasks WHERE id = $1", task.id)
            if status == "completed":
                break
            if time.perf_counter() > deadline:
                raise ScenarioFailed(
                    f"pickup: sample {i + 1} of {n} still {status} after {env.timeout_s:g} s"
                )
            env.daemon.check_alive()
            await asyncio.sleep(POLL_S)
    cpu_line = env.cpu.report(cpu)
    rows = await env.conn.fetch(
        """SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms
           FROM tasks WHERE status = 'completed'"""
    )
    samples = [float(r["ms"]) for r in rows]
    p50, p95, p99 = (percentile(samples, q) for q in (50, 95, 99))
    print(
        f"pickup: {len(samples)} samples, started_at - created_at "
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms, max {max(samples):.2f} ms"
    )
    print(cpu_line)
    return Figure("pick-up latency p99", f"{p99:.2f} ms", TARGETS["pickup"], p99 < 15)


async def bench_lag(env: Env, opts: Options) -> Figure:
    n = opts.lag_tasks
    window = opts.lag_window_s
    now = await env.conn.fetchval("SELECT clock_timestamp()")
    base = now + timedelta(seconds=opts.lag_lead_s)
    tasks = [
        NewTask(action="noop", payload={}, run_at=base + timedelta(seconds=window * i / n))
        for i in range(n)
    ]
    await env.store.create_tasks(tasks)
    committed = await env.conn.fetchval("SELECT clock_timestamp()")
    ahead_s = (base - committed).total_seconds()
    cpu = env.cpu.snapshot()
    await env.wait_completed(n, opts.lag_lead_s + window + env.timeout_s, "lag")
    cpu_line = env.cpu.report(cpu)
    rows = await env.conn.fetch(
        """SELECT extract(epoch FROM started_at - run_at)::float8 * 1000 AS ms
           FROM tasks WHERE status = 'completed'"""
    )
    raw = [float(r["ms"]) for r in rows]
    negatives = sum(1 for v in raw if v < 0)
    samples = [max(v, 0.0) for v in raw]
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    print(
        f"lag: {len(samples)} tasks over {window:g} s, started_at - run_at "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(samples):.2f} ms "
        f"(negative, clipped to 0: {negatives}; first run_at {ahead_s:.2f} s after the insert)"
    )
    print(cpu_line)
    if ahead_s < 1.0:
        print("  ! the first run_at was less than 1 s after the insert committed")
    return Figure("lag p99", f"{p99:.2f} ms", TARGETS["lag"], p99 < 25)


@dataclass(slots=True)
class PostRun:
    elapsed_s: float
    statuses: Counter[str]
    latencies_ms: list[float]


async def post_many(
    env: Env, path: str, body: bytes, count: int, concurrency: int, warmup: int
) -> PostRun:
    """POST ``body`` ``count`` times over one keep-alive session, ``concurrency`` in flight,
    after ``warmup`` untimed requests that open the connections."""
    headers = {"Content-Type": "application/json"}
    url = f"{env.daemon.base_url}{path}"
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post() -> None:
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - start)

        async def client(jobs: Any) -> None:
            for _ in jobs:  # one shared iterator: each job is taken by exactly one client
                await post()

        async def run(n: int) -> float:
            jobs = iter(range(n))
            start = time.perf_counter()
            async with asyncio.timeout(env.timeout_s):
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(concurrency, n)):
                        group.create_task(client(jobs))
            return time.perf_counter() - start

        try:
            if warmup:
                await run(warmup)
            statuses.clear()
            latencies.clear()
            elapsed = await run(count)
        except TimeoutError:
            raise ScenarioFailed(
                f"{path}: {sum(statuses.values())} of {count} requests done after "
                f"{env.timeout_s:g} s"
            ) from None
    return PostRun(elapsed, statuses, [v * 1000 for v in latencies])


async def bench_create(env: Env, opts: Options) -> Figure:
    n = opts.creates
    body = json.dumps({"action": "noop", "payload": {}, "delay_s": 3600}).encode()
    warmup = min(200, max(n // 10, 1))
    cpu = env.cpu.snapshot()
    run = await post_many(env, "/v1/tasks", body, n, opts.create_concurrency, warmup)
    cpu_line = env.cpu.report(cpu)
    rate = n / run.elapsed_s
    bad = n - run.statuses.get("201", 0)
    ms = run.latencies_ms
    stored = await env.count("SELECT count(*) FROM tasks")
    print(
        f"create: {n} POST /v1/tasks in {run.elapsed_s:.2f} s = {rate:.0f} requests/s "
        f"({opts.create_concurrency} in flight, keep-alive; non-201: {bad}; "
        f"latency p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms; "
        f"rows stored incl. {warmup} warm-up: {stored})"
    )
    print(cpu_line)
    if bad:
        print(f"  ! responses: {dict(run.statuses)}")
    return Figure("create rate", f"{rate:,.0f} requests/s", TARGETS["create"], rate >= 1_500)


async def bench_batch(env: Env, opts: Options) -> Figure:
    items = [
        {"action": "noop", "payload": {"n": i}, "delay_s": 3600, "queue": "bench"}
        for i in range(opts.batch_items)
    ]
    body = json.dumps({"tasks": items}).encode()
    cpu = env.cpu.snapshot()
    run = await post_many(env, "/v1/tasks/batch", body, opts.batches, opts.batch_concurrency, 2)
    cpu_line = env.cpu.report(cpu)
    tasks = opts.batches * opts.batch_items
    rate = tasks / run.elapsed_s
    bad = opts.batches - run.statuses.get("201", 0)
    ms = run.latencies_ms
    stored = await env.count("SELECT count(*) FROM tasks")
    print(
        f"batch: {opts.batches} POST /v1/tasks/batch of {opts.batch_items} tasks in "
        f"{run.elapsed_s:.2f} s = {rate:.0f} tasks/s ({opts.batch_concurrency} in flight; "
        f"non-201: {bad}; latency p50 {percentile(ms, 50):.0f} ms, "
        f"p99 {percentile(ms, 99):.0f} ms; rows stored incl. 2 warm-up batches: {stored})"
    )
    print(cpu_line)
    if bad:
        print(f"  ! responses: {dict(run.statuses)}")
    return Figure("batch create rate", f"{rate:,.0f} tasks/s", TARGETS["batch"], rate >= 20_000)


BENCHES = {
    "drain": ("drain rate", bench_drain),
    "paused": ("drain beside a paused backlog", bench_paused),
    "pickup": ("pick-up latency p99", bench_pickup),
    "lag": ("lag p99", bench_lag),
    "create": ("create rate", bench_create),
    "batch": ("batch create rate", bench_batch),
}


# -- main ---------------------------------------------------------------------------------


async def header(server: Server, opts: Options) -> None:
    machine = await machine_lines(server)
    print("# scheduler-daemon engine benchmark")
    print("\n".join(machine))
    print(
        f"daemon settings: executor.concurrency={opts.concurrency} "
        f"discovery.batch_size={opts.batch_size} database.pool_size={opts.pool_size} "
        f"discovery.poll_interval_s={_default(DiscoverySettings, 'poll_interval_s')} "
        f"log.level=warning"
    )
    print(
        f"workload: drain {opts.drain_tasks} tasks; pickup {opts.pickup_samples} samples; "
        f"lag {opts.lag_tasks} tasks over {opts.lag_window_s:g} s; creates {opts.creates} "
        f"with {opts.create_concurrency} in flight; batches {opts.batches} x "
        f"{opts.batch_items} with {opts.batch_concurrency} in flight; "
        f"scenarios: {', '.join(opts.only)}"
    )
    if opts.profile_dir is not None:
        print(f"profiling the daemon with cProfile into {opts.profile_dir} (figures are slower)")
    print()


def table(figures: list[Figure]) -> str:
    lines = ["| figure | measured | target | meets target |", "|---|---|---|---|"]
    for f in figures:
        meets = "n/a" if f.meets is None else ("yes" if f.meets else "no")
        lines.append(f"| {f.name} | {f.shown} | {f.target} | {meets} |")
    return "\n".join(lines)


async def main_async(opts: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sd-bench-"))
    figures: list[Figure] = []
    failed = False
    server: Server | None = None
    try:
        server = await open_server(workdir)
        await header(server, opts)
        for key in opts.only:
            name, bench = BENCHES[key]
            try:
                async with scenario_env(server, opts, workdir, key) as env:
                    figures.append(await bench(env, opts))
            except ScenarioFailed as exc:
                failed = True
                print(f"{key}: FAILED: {exc}")
                figures.append(Figure(name, "failed", TARGETS[key], None))
        print()
        print(table(figures))
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    configure_logging(LogSettings(level="warning", format="console"))  # quiet migrations
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        return runner.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
