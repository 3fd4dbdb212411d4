"""The ``scheduler-daemon`` command: run, migrate, check-config, healthcheck, dev tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import Any

from scheduler_daemon.app import Daemon, install_uvloop, open_database
from scheduler_daemon.aws.emulator import EventBridgeEmulator, run_until_signalled
from scheduler_daemon.handlers import HandlerLoadError
from scheduler_daemon.logs import configure_logging
from scheduler_daemon.settings import ConfigError, Settings, load_settings, masked
from scheduler_daemon.store.embedded import EmbeddedUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduler-daemon", description="Schedule work over HTTP and run it reliably."
    )
    parser.add_argument(
        "--config", help="TOML config file (default: the SCHEDULER_CONFIG environment variable)"
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the daemon (the default)")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    sub.add_parser("check-config", help="validate the config and print it, secrets masked")
    health = sub.add_parser("healthcheck", help="exit 0 when a running daemon answers /healthz")
    health.add_argument("--url", help="base URL of the daemon (default: from http.host/port)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    dev = sub.add_parser("dev", help="development tools").add_subparsers(
        dest="dev_command", required=True
    )
    emulator = dev.add_parser(
        "eventbridge-emulator",
        help="fire due at() schedules on a local (moto) endpoint into their SQS queues",
    )
    emulator.add_argument("--endpoint-url", help="local endpoint (default: aws.endpoint_url)")
    emulator.add_argument("--region", help="AWS region (default: aws.region)")
    emulator.add_argument(
        "--group", action="append", help="schedule group, repeatable (default: every group)"
    )
    emulator.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    emulator.add_argument(
        "--early", type=float, default=0.0, help="deliver this many seconds before the at() time"
    )
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=install_uvloop()) as runner:
        return runner.run(coro)


def _healthcheck(settings: Settings, url: str | None, timeout: float) -> int:
    if url is None:
        host = settings.http.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{settings.http.port}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=timeout) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


def _eventbridge_emulator(settings: Settings, args: argparse.Namespace) -> int:
    endpoint_url = args.endpoint_url or settings.aws.endpoint_url
    if not endpoint_url:
        print(
            "scheduler-daemon dev eventbridge-emulator: error: no endpoint; pass --endpoint-url "
            "(or set aws.endpoint_url): the emulator never runs against real AWS",
            file=sys.stderr,
        )
        return 2
    try:
        emulator = EventBridgeEmulator(
            args.region or settings.aws.region,
            endpoint_url,
            args.group,
            interval_s=args.interval,
            early_s=args.early,
        )
    except ValueError as exc:
        print(f"scheduler-daemon dev eventbridge-emulator: error: {exc}", file=sys.stderr)
        return 2
    return _run(run_until_signalled(emulator))


async def _migrate(settings: Settings) -> int:
    db = await open_database(settings)
    await asyncio.to_thread(db.close)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    if command == "check-config":
        print(json.dumps(masked(settings), indent=2, sort_keys=True))
        return 0
    if command == "healthcheck":
        return _healthcheck(settings, args.url, args.timeout)
    configure_logging(settings.log)
    if command == "dev":
        return _eventbridge_emulator(settings, args)
    try:
        if command == "migrate":
            return _run(_migrate(settings))
        return _run(Daemon(settings, config_file=args.config).run())
    except (EmbeddedUnavailable, HandlerLoadError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
