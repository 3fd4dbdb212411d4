"""AWS backend benchmark: the real daemon with ``scheduling.backend = "eventbridge"`` against a
real moto server (SQS and EventBridge Scheduler) on loopback.

Run it as ``.venv/bin/python benchmarks/aws.py``; ``--help`` lists the knobs. Two scenarios,
each on a fresh, migrated database, its own queue and schedule group, and its own daemon
subprocess (``python -m scheduler_daemon run``, started and ready before the measurement):

- ``throughput``: immediate ``noop`` tasks created through ``POST /v1/tasks/batch`` travel
  outbox -> SQS -> long-poll consumer -> executor; the figure is tasks/s from the first create
  to the last completion, plus the pick-up time (``started_at - created_at``, database clock).
- ``lag``: with ``eventbridge.schedule_after_s = 60``, tasks due in 90 s become EventBridge
  Scheduler at() schedules (fired ``eventbridge.lead_s`` ahead of run_at), and tasks due in 45 s
  SQS messages with DelaySeconds. moto never fires schedules, so ``EventBridgeEmulator`` runs
  in this process and delivers each schedule ``--early-s`` seconds before its at() time
  (EventBridge may fire anywhere in the minute); the daemon must hold every early message until
  run_at. The figure is the start lag ``started_at - run_at`` of each path.

The database server is the one named by ``SCHEDULER_BENCH_DATABASE_URL`` or an embedded
PostgreSQL, as for ``benchmarks/engine.py``. Figures only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks.common import (
    Server,
    fresh_database,
    local_postmaster,
    machine_lines,
    open_server,
    percentile,
    proc_stat,
)
from benchmarks.engine import CpuMeter, DaemonProcess, Env, Figure, ScenarioFailed, table
from benchmarks.engine import Options as EngineOptions
from benchmarks.engine import parse_args as engine_defaults
from scheduler_daemon.app import install_uvloop
from scheduler_daemon.aws.emulator import EventBridgeEmulator
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.settings import (
    EventBridgeSettings,
    ExecutorSettings,
    LogSettings,
    SqsSettings,
)
from scheduler_daemon.store.postgres import PostgresStore, create_pool
from tests.aws import CREDENTIALS, REGION, AwsResources, create_resources, moto_server

SCENARIOS = ("throughput", "lag")
BATCH_LIMIT = 1_000  # POST /v1/tasks/batch takes 1 to 1,000 tasks
SQS_WAIT_TIME_S = 1
LAG_SCHEDULE_AFTER_S = 60
LAG_EVENTBRIDGE_DUE_S = 90.0  # later than schedule_after_s: an at() schedule
LAG_SQS_DUE_S = 45.0  # sooner: an SQS message with DelaySeconds
LAG_TARGET_MS = 1_500.0
LAG_TARGET = "0 <= lag <= 1,500 ms (never early)"


def _default(model: Any, name: str) -> Any:
    return model.model_fields[name].default


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    tasks: int
    lag_tasks: int
    lag_spread_s: float
    early_s: float
    concurrency: int
    timeout_s: float
    only: tuple[str, ...]

    def daemon_options(self) -> EngineOptions:
        """The engine benchmark's options with this run's daemon settings (for DaemonProcess)."""
        return dataclasses.replace(
            engine_defaults([]),
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            profile_dir=None,
        )


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/aws.py",
        description="Benchmark the eventbridge backend (SQS + EventBridge Scheduler on moto): "
        "throughput and start lag.",
    )
    parser.add_argument(
        "--tasks", type=int, default=500, help="immediate tasks of 'throughput' (default 500)"
    )
    parser.add_argument(
        "--lag-tasks",
        type=int,
        default=20,
        help="tasks of 'lag' on each path, at() schedule and DelaySeconds (default 20)",
    )
    parser.add_argument(
        "--lag-spread-s",
        type=float,
        default=0.25,
        help="run_at step between consecutive 'lag' tasks (default 0.25 s)",
    )
    parser.add_argument(
        "--early-s",
        type=float,
        default=30.0,
        help="the emulator fires at() schedules this early (default 30 s)",
    )
    concurrency = _default(ExecutorSettings, "concurrency")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=concurrency,
        help=f"executor.concurrency of the daemon (default {concurrency})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="per-scenario wait limit, beyond the last run_at (default 120 s)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all)",
    )
    ns = parser.parse_args(argv)
    for name in ("tasks", "lag_tasks", "concurrency"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if ns.lag_spread_s < 0 or ns.early_s < 0:
        parser.error("--lag-spread-s and --early-s must not be negative")
    return Options(
        tasks=ns.tasks,
        lag_tasks=ns.lag_tasks,
        lag_spread_s=ns.lag_spread_s,
        early_s=ns.early_s,
        concurrency=ns.concurrency,
        timeout_s=ns.timeout,
        only=tuple(dict.fromkeys(ns.only)) if ns.only else SCENARIOS,
    )


# -- the daemon, on the eventbridge backend -----------------------------------------------


class AwsDaemonProcess(DaemonProcess):
    """The engine benchmark's daemon subprocess, with the AWS settings added to its
    environment (and the caller's own AWS_* variables removed: it only ever reaches moto)."""

    def __init__(
        self,
        dsn: str,
        opts: EngineOptions,
        workdir: Path,
        label: str,
        extra_env: dict[str, str],
    ) -> None:
        super().__init__(dsn, opts, workdir, label)
        self._extra_env = extra_env

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in super()._env().items() if not k.upper().startswith("AWS_")}
        env.update(self._extra_env)
        return env


def moto_pid(endpoint_url: str) -> int | None:
    """The pid of this process's moto_server child listening on ``endpoint_url``'s port."""
    port = endpoint_url.rsplit(":", 1)[1]
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is None or stat[0] != me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"moto" in a for a in argv) and port.encode() in argv:
            return int(entry.name)
    return None


@dataclass(slots=True)
class AwsEnv:
    """What a scenario gets: the engine benchmark's ``Env``, its AWS resources, the endpoint."""

    env: Env
    aws: AwsResources
    moto_pid: int | None

    def moto_cpu(self) -> float | None:
        stat = proc_stat(self.moto_pid) if self.moto_pid is not None else None
        return stat[1] if stat is not None else None

    async def metrics(self) -> dict[str, float]:
        """The daemon's eventbridge-backend samples of /metrics, by sample name and labels."""
        out: dict[str, float] = {}
        async with self.env.session.get(f"{self.env.daemon.base_url}/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            key, _, value = line.rpartition(" ")
            name = key.partition("{")[0]
            if name.startswith(("scheduler_outbox_", "scheduler_sqs_")) and name.endswith("_total"):
                out[key] = float(value)
        return out

    async def create(self, items: list[dict[str, Any]]) -> list[uuid.UUID]:
        """POST the tasks through /v1/tasks/batch (chunks of 1,000); return their ids."""
        url = f"{self.env.daemon.base_url}/v1/tasks/batch"
        ids: list[uuid.UUID] = []
        for start in range(0, len(items), BATCH_LIMIT):
            body = {"tasks": items[start : start + BATCH_LIMIT]}
            async with self.env.session.post(url, json=body) as resp:
                text = await resp.text()
                if resp.status != 201:
                    raise ScenarioFailed(f"POST /v1/tasks/batch: {resp.status} {text[:500]}")
            ids.extend(uuid.UUID(item["id"]) for item in json.loads(text)["items"])
        return ids


@asynccontextmanager
async def scenario_env(
    server: Server,
    opts: Options,
    workdir: Path,
    label: str,
    endpoint_url: str,
    settings: dict[str, str],
) -> AsyncIterator[AwsEnv]:
    aws = await create_resources(endpoint_url)
    extra = {**aws.daemon_env(), "SCHEDULER_SQS__WAIT_TIME_S": str(SQS_WAIT_TIME_S), **settings}
    async with fresh_database(server.admin_dsn, label) as dsn:
        pool = await create_pool(dsn, 2)
        try:
            conn = await asyncpg.connect(dsn)
            try:
                connector = aiohttp.TCPConnector(limit=4)
                async with aiohttp.ClientSession(connector=connector) as session:
                    daemon = AwsDaemonProcess(dsn, opts.daemon_options(), workdir, label, extra)
                    try:
                        await daemon.start(session)
                        backend = await conn.fetchval("SELECT pg_backend_pid()")
                        cpu = CpuMeter(daemon.pid, local_postmaster(int(backend)))
                        env = Env(
                            dsn, PostgresStore(pool), conn, daemon, session, opts.timeout_s, cpu
                        )
                        yield AwsEnv(env, aws, moto_pid(endpoint_url))
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


def metrics_line(metrics: dict[str, float]) -> str:
    def short(key: str) -> str:
        name, _, labels = key.partition("{")
        name = name.removeprefix("scheduler_").removesuffix("_total")
        label = labels.rstrip("}").partition("=")[2].strip('"')
        return f"{name}[{label}]" if label else name

    parts = [f"{short(k)}={v:g}" for k, v in sorted(metrics.items())]
    return "  daemon metrics: " + (", ".join(parts) if parts else "(none)")


def moto_cpu_line(aenv: AwsEnv, start: float | None) -> str | None:
    end = aenv.moto_cpu()
    if start is None or end is None:
        return None
    return f"  cpu: moto_server {end - start:.2f} s"


def ms(value: float) -> str:
    return f"{value:,.1f} ms"


# -- scenarios ----------------------------------------------------------------------------


async def bench_throughput(aenv: AwsEnv, opts: Options) -> list[Figure]:
    env = aenv.env
    n = opts.tasks
    items: list[dict[str, Any]] = [{"action": "noop", "payload": {}} for _ in range(n)]
    cpu = env.cpu.snapshot()
    moto_start = aenv.moto_cpu()
    start = time.perf_counter()
    await aenv.create(items)
    posted_s = time.perf_counter() - start
    await env.wait_completed(n, env.timeout_s, "throughput")
    elapsed = time.perf_counter() - start
    cpu_line = env.cpu.report(cpu)
    moto_line = moto_cpu_line(aenv, moto_start)
    rate = n / elapsed
    rows = await env.conn.fetch(
        """SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms
           FROM tasks WHERE status = 'completed'"""
    )
    pickup = [float(r["ms"]) for r in rows]
    p50, p99 = percentile(pickup, 50), percentile(pickup, 99)
    row = await env.conn.fetchrow(
        """SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8 AS span_s,
                  max(attempts) AS max_attempts
           FROM tasks"""
    )
    assert row is not None
    attempts = await env.count("SELECT count(*) FROM task_attempts")
    print(
        f"throughput: {n} immediate noop tasks in {elapsed:.2f} s = {rate:,.1f} tasks/s "
        f"(first POST -> last completion seen; {posted_s * 1000:.0f} ms to POST them)"
    )
    print(
        f"  started_at - created_at (database clock): p50 {ms(p50)}, p99 {ms(p99)}, "
        f"max {ms(max(pickup))}; database span first created_at -> last finished_at "
        f"{row['span_s']:.2f} s = {n / float(row['span_s']):,.1f} tasks/s; "
        f"attempts recorded {attempts}, max attempts per task {row['max_attempts']}"
    )
    print(metrics_line(await aenv.metrics()))
    print(cpu_line)
    if moto_line:
        print(moto_line)
    if attempts != n:
        print(f"  ! expected {n} attempt rows, found {attempts}")
    return [
        Figure(
            "throughput (first create -> last completion)", f"{rate:,.1f} tasks/s", "none set", None
        ),
        Figure("pick-up p50 (started_at - created_at)", ms(p50), "none set", None),
        Figure("pick-up p99 (started_at - created_at)", ms(p99), "none set", None),
    ]


async def bench_lag(aenv: AwsEnv, opts: Options) -> list[Figure]:
    env = aenv.env
    n = opts.lag_tasks
    step = opts.lag_spread_s
    now: datetime = await env.conn.fetchval("SELECT clock_timestamp()")

    def batch(due_s: float) -> list[dict[str, Any]]:
        return [
            {
                "action": "noop",
                "payload": {},
                "run_at": (now + timedelta(seconds=due_s + step * i)).isoformat(),
            }
            for i in range(n)
        ]

    paths: dict[str, list[uuid.UUID]] = {}
    async with EventBridgeEmulator(
        REGION, aenv.aws.endpoint_url, [aenv.aws.group], interval_s=0.5, early_s=opts.early_s
    ) as emulator:
        delivering = asyncio.create_task(emulator.run())
        try:
            cpu = env.cpu.snapshot()
            moto_start = aenv.moto_cpu()
            paths["EventBridge at()"] = await aenv.create(batch(LAG_EVENTBRIDGE_DUE_S))
            paths["SQS DelaySeconds"] = await aenv.create(batch(LAG_SQS_DUE_S))
            committed: datetime = await env.conn.fetchval("SELECT clock_timestamp()")
            last_due_s = LAG_EVENTBRIDGE_DUE_S + step * (n - 1)
            await env.wait_completed(2 * n, last_due_s + env.timeout_s, "lag")
            cpu_line = env.cpu.report(cpu)
            moto_line = moto_cpu_line(aenv, moto_start)
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
    print(
        f"lag: {n} tasks due in {LAG_EVENTBRIDGE_DUE_S:g} s (at() schedules, fired "
        f"{_default(EventBridgeSettings, 'lead_s')} s ahead by the schedule and "
        f"{opts.early_s:g} s earlier by the emulator) and {n} due in {LAG_SQS_DUE_S:g} s "
        f"(DelaySeconds), run_at {step:g} s apart; created in "
        f"{(committed - now).total_seconds() * 1000:.0f} ms; emulator delivered "
        f"{emulator.delivered_total}"
    )
    figures: list[Figure] = []
    for path, ids in paths.items():
        rows = await env.conn.fetch(
            """SELECT extract(epoch FROM started_at - run_at)::float8 * 1000 AS ms
               FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'completed'""",
            ids,
        )
        lag = [float(r["ms"]) for r in rows]
        if len(lag) != len(ids):
            raise ScenarioFailed(f"{path}: {len(lag)} of {len(ids)} tasks completed")
        p50, p99, worst, best = percentile(lag, 50), percentile(lag, 99), max(lag), min(lag)
        early = sum(1 for v in lag if v < 0)
        print(
            f"  {path}: {len(lag)} tasks, started_at - run_at p50 {ms(p50)}, p99 {ms(p99)}, "
            f"max {ms(worst)}, min {ms(best)} (started early: {early})"
        )
        meets = best >= 0 and worst <= LAG_TARGET_MS
        figures.append(
            Figure(
                f"{path} start lag p50 / p99 / max / min",
                f"{p50:,.1f} / {p99:,.1f} / {worst:,.1f} / {best:,.1f} ms",
                LAG_TARGET,
                meets,
            )
        )
    print(metrics_line(await aenv.metrics()))
    print(cpu_line)
    if moto_line:
        print(moto_line)
    return figures


BENCHES = {
    "throughput": (
        ("throughput (first create -> last completion)", "none set"),
        bench_throughput,
        {},
    ),
    "lag": (
        ("start lag", LAG_TARGET),
        bench_lag,
        {"SCHEDULER_EVENTBRIDGE__SCHEDULE_AFTER_S": str(LAG_SCHEDULE_AFTER_S)},
    ),
}


# -- main ---------------------------------------------------------------------------------


async def header(server: Server, opts: Options, endpoint_url: str) -> None:
    machine = await machine_lines(server)
    print("# scheduler-daemon AWS backend benchmark (eventbridge backend on moto)")
    print("\n".join(machine))
    print(f"moto: {importlib.metadata.version('moto')} server at {endpoint_url}")
    print(
        f"daemon settings: scheduling.backend=eventbridge executor.concurrency="
        f"{opts.concurrency} sqs.wait_time_s={SQS_WAIT_TIME_S} "
        f"sqs.pollers={_default(SqsSettings, 'pollers')} "
        f"eventbridge.lead_s={_default(EventBridgeSettings, 'lead_s')} "
        f"eventbridge.schedule_after_s={_default(EventBridgeSettings, 'schedule_after_s')} "
        f"({LAG_SCHEDULE_AFTER_S} in 'lag') log.level=warning"
    )
    print(
        f"workload: throughput {opts.tasks} immediate tasks; lag {opts.lag_tasks} tasks due in "
        f"{LAG_EVENTBRIDGE_DUE_S:g} s + {opts.lag_tasks} due in {LAG_SQS_DUE_S:g} s, "
        f"{opts.lag_spread_s:g} s apart, emulator early_s={opts.early_s:g}; "
        f"scenarios: {', '.join(opts.only)}"
    )
    print()


async def main_async(opts: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sd-bench-aws-"))
    figures: list[Figure] = []
    failed = False
    server: Server | None = None
    moto = contextlib.ExitStack()
    try:
        endpoint_url = await asyncio.to_thread(moto.enter_context, moto_server())
        server = await open_server(workdir)
        await header(server, opts, endpoint_url)
        for key in opts.only:
            (name, target), bench, settings = BENCHES[key]
            try:
                async with scenario_env(server, opts, workdir, key, endpoint_url, settings) as aenv:
                    figures.extend(await bench(aenv, opts))
            except ScenarioFailed as exc:
                failed = True
                print(f"{key}: FAILED: {exc}")
                figures.append(Figure(name, "failed", target, None))
        print()
        print(table(figures))
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(moto.close)
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    # moto's dummy credentials for this process's AWS clients (resources, emulator); every
    # client here is given moto's endpoint, so nothing reaches AWS.
    for key in [k for k in os.environ if k.upper().startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(CREDENTIALS)
    configure_logging(LogSettings(level="warning", format="console"))  # quiet migrations
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        return runner.run(main_async(opts))


if __name__ == "__main__":
    sys.exit(main())
