"""What the benchmarks share: the database server, fresh databases, CPU sampling, percentiles.

The database server is the one named by ``SCHEDULER_BENCH_DATABASE_URL`` (an admin DSN, allowed
to create databases) or, when that is unset, an embedded PostgreSQL started in a temporary
folder and stopped by ``Server.stop``.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from scheduler_daemon.store.migrate import migrate

BENCH_URL_ENV = "SCHEDULER_BENCH_DATABASE_URL"


# -- figures ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- database -----------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(slots=True)
class Server:
    admin_dsn: str
    description: str
    stop: Callable[[], None]


async def open_server(tmp: Path) -> Server:
    url = os.environ.get(BENCH_URL_ENV)
    if url:
        return Server(url, BENCH_URL_ENV, lambda: None)
    from scheduler_daemon.store.embedded import start_embedded

    embedded = await asyncio.to_thread(start_embedded, tmp / "pg")
    return Server(embedded.dsn, f"embedded in {embedded.pgdata}", embedded.stop)


@asynccontextmanager
async def fresh_database(admin_dsn: str, label: str = "bench") -> AsyncIterator[str]:
    """A new, migrated database named after ``label``; dropped afterwards."""
    name = f"sd_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# -- the machine --------------------------------------------------------------------------


async def machine_lines(server: Server) -> list[str]:
    """What a benchmark's figures depend on: interpreter, event loop, CPUs, PostgreSQL."""
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        pg_version = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return [
        f"python: {platform.python_implementation()} {platform.python_version()} ({loop})",
        f"cpus: {os.cpu_count()}  platform: {platform.platform()}",
        f"postgresql: {pg_version} ({server.description})",
    ]


# -- where the CPU went -------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process from /proc; None when unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def local_postmaster(backend_pid: int) -> int | None:
    """The postmaster of this backend when the server runs on this host (else None)."""
    try:
        comm = Path(f"/proc/{backend_pid}/comm").read_text().strip()
    except OSError:
        return None
    stat = proc_stat(backend_pid)
    return stat[0] if stat is not None and comm.startswith("postgres") else None


def postgres_cpu(postmaster: int | None) -> dict[int, float] | None:
    """CPU seconds of the postmaster and each of its children (backends, checkpointer, ...);
    None when there is no local postmaster or nothing could be read."""
    if postmaster is None:
        return None
    out: dict[int, float] = {}
    own = proc_stat(postmaster)
    if own is not None:
        out[postmaster] = own[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is not None and stat[0] == postmaster:
            out[int(entry.name)] = stat[1]
    return out or None


def postgres_used(start: dict[int, float] | None, end: dict[int, float] | None) -> float | None:
    """CPU seconds PostgreSQL used between two ``postgres_cpu`` samples (None if either is)."""
    if start is None or end is None:
        return None
    return sum(v - start.get(pid, 0.0) for pid, v in end.items())
