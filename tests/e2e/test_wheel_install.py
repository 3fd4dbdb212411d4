"""What the Dockerfile does, without a container engine: build the wheel, install only it (and
its dependencies, from the package index) into a fresh venv, and run the installed console
script with config/production.toml from a directory outside the source tree.

This catches what the editable dev install hides: files missing from the wheel (migrations,
static assets), dependencies missing from pyproject.toml (the dev extras are not there), and
imports that only work from the repository.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import STREAM_LIMIT, DaemonProcess, child_env, free_port
from tests.pg import PgServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_CONFIG = REPO_ROOT / "config" / "production.toml"
MIGRATIONS = sorted((REPO_ROOT / "scheduler_daemon" / "store" / "migrations").glob("*.sql"))
TOKEN = "wheel-test-token-0123456789"
BUILD_TIMEOUT_S = 480


@dataclass(frozen=True)
class InstalledVenv:
    wheel: Path
    venv: Path
    workdir: Path  # outside the source tree: the cwd of every command

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.venv / "bin" / "scheduler-daemon"


def _clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """child_env, without anything that would let the repo or the dev venv leak in."""
    env = child_env(overrides or {})
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"):
        env.pop(key, None)
    return env


def _step(what: str, args: Sequence[str | Path], cwd: Path, hint: str = "") -> None:
    try:
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: no exit within {BUILD_TIMEOUT_S}s{hint}\n{exc.stderr!s}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        pytest.fail(
            f"{what} failed (exit {proc.returncode}){hint}\n$ {' '.join(map(str, args))}\n{tail}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    """The wheel built from this checkout, installed into a fresh venv: once per session."""
    root = tmp_path_factory.mktemp("wheel-install").resolve()
    dist, venv, workdir = root / "dist", root / "venv", root / "work"
    workdir.mkdir()
    index_hint = (
        "; the build backend (hatchling) and the dependencies come from the package index: "
        "is it reachable (pip config, PIP_INDEX_URL, proxy)?"
    )
    _step(
        "building the wheel",
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, REPO_ROOT],
        workdir,
        index_hint,
    )
    wheels = sorted(dist.glob("scheduler_daemon-*.whl"))
    assert len(wheels) == 1, wheels
    _step("creating the venv", [sys.executable, "-m", "venv", venv], workdir)
    _step(
        "installing the wheel and its dependencies",
        [venv / "bin" / "python", "-m", "pip", "install", wheels[0]],
        workdir,
        index_hint,
    )
    return InstalledVenv(wheels[0], venv, workdir)


@pytest.fixture
async def empty_database_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A database with no tables (not the migrated template): the installed daemon migrates it
    from the SQL files in the wheel."""
    async with pg_server.database(migrated=False) as dsn:
        yield dsn


async def _run(
    installed: InstalledVenv, *args: str | Path, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, args),
        cwd=installed.workdir,
        env=_clean_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(map(str, args))}: no exit within 60s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_wheel_holds_the_package_and_its_data_files_only(installed: InstalledVenv) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"scheduler_daemon", installed.wheel.name.split("-py")[0] + ".dist-info"}, tops
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".sql"))
    assert shipped == [m.name for m in MIGRATIONS]
    assert "scheduler_daemon/api/static/docs-init.js" in names
    # The dashboard: its shell and every static file (scripts, style, icon).
    ui_dir = REPO_ROOT / "scheduler_daemon" / "ui"
    ui_files = {
        f"scheduler_daemon/ui/{p.relative_to(ui_dir).as_posix()}"
        for p in [ui_dir / "shell.html", *(ui_dir / "static").rglob("*")]
        if p.is_file()
    }
    assert {"scheduler_daemon/ui/static/app.js", "scheduler_daemon/ui/static/style.css"} <= ui_files
    assert ui_files <= set(names), sorted(ui_files - set(names))


async def test_installed_wheel_runs_the_production_config(
    installed: InstalledVenv,
    empty_database_url: str,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    # The installed package is what runs, not the source tree.
    code, out, err = await _run(
        installed,
        installed.python,
        "-c",
        "import os, scheduler_daemon; print(os.path.realpath(scheduler_daemon.__file__))",
    )
    assert code == 0, err
    imported = Path(out.strip())
    assert imported.is_relative_to(installed.venv), imported
    assert not imported.is_relative_to(REPO_ROOT), imported

    config = shutil.copy(PRODUCTION_CONFIG, tmp_path / "production.toml")
    port = free_port()
    env = {
        # What the image sets ...
        "SCHEDULER_CONFIG": str(config),
        "SCHEDULER_HTTP__PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        # ... what the task definition sets ...
        "SCHEDULER_DATABASE__URL": empty_database_url,
        "SCHEDULER_HTTP__TOKENS": json.dumps([{"name": "ops", "token": TOKEN, "role": "admin"}]),
        # ... and, for this test, loopback and no AWS.
        "SCHEDULER_HTTP__HOST": "127.0.0.1",
        "SCHEDULER_SCHEDULING__BACKEND": "postgres",
    }
    proc = await asyncio.create_subprocess_exec(
        str(installed.script),
        "run",
        cwd=installed.workdir,
        env=_clean_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=STREAM_LIMIT,
    )
    daemon = DaemonProcess(proc, port, "wheel-daemon")
    try:
        # JSON log lines (log.format from the file): DaemonProcess only understands those.
        await daemon.wait_for_log("daemon_started", timeout=60)
        # Every migration came from the wheel: the database started empty.
        migrated = await daemon.wait_for_log("database_migrated", timeout=1)
        assert migrated["applied"] == [int(m.name[:4]) for m in MIGRATIONS], migrated

        # The image's HEALTHCHECK (no --url: http.host/port from the config) ...
        code, out, err = await _run(installed, installed.script, "healthcheck", env=env)
        assert (code, out.strip()) == (0, "healthy"), (code, out, err)
        # ... and with an explicit URL.
        code, out, err = await _run(
            installed, installed.script, "healthcheck", "--url", daemon.base_url, env=env
        )
        assert (code, out.strip()) == (0, "healthy"), (code, out, err)

        # Packaged static assets: Swagger UI (from its package) and our start-up script.
        for path in ("/docs", "/openapi.json", "/docs/assets/docs-init.js", "/ui", "/ui/tasks"):
            async with http.get(f"{daemon.base_url}{path}") as resp:
                assert resp.status == 200, (path, resp.status, await resp.text())
                assert await resp.read(), path
        async with http.get(f"{daemon.base_url}/docs/static/swagger-ui-bundle.js") as resp:
            assert resp.status == 200, resp.status
        # The dashboard's scripts, from the wheel's package data.
        async with http.get(f"{daemon.base_url}/ui") as resp:
            shell = await resp.text()
        [app_js] = re.findall(r'src="(/ui/static/[^"]+/app\.js)"', shell)
        for asset in (app_js, app_js.replace("app.js", "pages/overview.js")):
            async with http.get(f"{daemon.base_url}{asset}") as resp:
                assert resp.status == 200, (asset, resp.status)

        # The tokens from SCHEDULER_HTTP__TOKENS are in force.
        async with http.get(f"{daemon.base_url}/v1/tasks") as resp:
            assert resp.status == 401, resp.status
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{daemon.base_url}/v1/tasks", headers=headers) as resp:
            assert resp.status == 200, (resp.status, await resp.text())

        daemon.send_signal(signal.SIGTERM)
        assert await daemon.wait(timeout=60) == 0, daemon.log_tail()
        assert daemon.events("daemon_stopped"), daemon.log_tail()
        assert TOKEN not in daemon.log_tail(10_000)
    finally:
        await daemon.close()
        print(f"--- {daemon.name} (exit {proc.returncode}) stderr ---")
        print(daemon.log_tail(400))


async def test_installed_wheel_without_a_database_url_exits_at_once(
    installed: InstalledVenv, tmp_path: Path
) -> None:
    # The image has no embedded PostgreSQL: a task definition that forgot the URL fails fast,
    # saying what is missing, instead of hanging.
    config = shutil.copy(PRODUCTION_CONFIG, tmp_path / "production.toml")
    env = {
        "SCHEDULER_CONFIG": str(config),
        "SCHEDULER_HTTP__TOKENS": json.dumps([{"name": "ops", "token": TOKEN, "role": "admin"}]),
        "SCHEDULER_HTTP__PORT": str(free_port()),
        "SCHEDULER_SCHEDULING__BACKEND": "postgres",
    }
    code, _, err = await _run(installed, installed.script, "run", env=env)
    assert code == 1, err
    assert "database.url is not set" in err, err
