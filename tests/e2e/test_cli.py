"""The ``scheduler-daemon`` command line: check-config and healthcheck, as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import StartDaemon, free_port, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(60)
async def test_check_config_applies_an_env_override(tmp_path: Path) -> None:
    # Only lease_s is set: README's own example ("SCHEDULER_EXECUTOR__LEASE_S=6 sets
    # executor.lease_s"); heartbeat_s is left at its default.
    result = await run_cli("check-config", env={"SCHEDULER_EXECUTOR__LEASE_S": "6"}, cwd=tmp_path)
    assert result.code == 0, result
    assert '"lease_s": 6.0' in result.stdout, result.stdout
    config = json.loads(result.stdout)
    assert config["executor"]["lease_s"] == 6.0
    assert config["executor"]["heartbeat_s"] < 6.0
    # Untouched keys keep their defaults.
    assert config["executor"]["concurrency"] == 50
    assert config["http"]["port"] == 8080


@pytest.mark.timeout(60)
async def test_check_config_masks_the_database_password(tmp_path: Path) -> None:
    result = await run_cli(
        "check-config",
        env={
            "SCHEDULER_EXECUTOR__LEASE_S": "6",
            "SCHEDULER_EXECUTOR__HEARTBEAT_S": "2",
            "SCHEDULER_DATABASE__URL": "postgresql://u:pw-s3cr3t@h/db",
        },
        cwd=tmp_path,
    )
    assert result.code == 0, result
    assert '"lease_s": 6.0' in result.stdout, result.stdout
    assert "pw-s3cr3t" not in result.stdout, result.stdout
    assert "pw-s3cr3t" not in result.stderr, result.stderr
    config = json.loads(result.stdout)
    assert config["database"]["url"].startswith("postgresql://u:")
    assert config["database"]["url"].endswith("@h/db")


@pytest.mark.timeout(60)
async def test_check_config_rejects_an_invalid_value_naming_the_key(tmp_path: Path) -> None:
    result = await run_cli(
        "check-config", env={"SCHEDULER_EXECUTOR__CONCURRENCY": "0"}, cwd=tmp_path
    )
    assert result.code == 1, result
    assert "executor.concurrency" in result.stderr, result.stderr
    assert result.stdout == "", result.stdout


@pytest.mark.timeout(60)
async def test_healthcheck_against_running_daemon_and_closed_port(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = await start_daemon()
    healthy = await run_cli("healthcheck", "--url", daemon.base_url, cwd=tmp_path)
    assert healthy.code == 0, healthy
    assert "healthy" in healthy.stdout

    closed = await run_cli(
        "healthcheck", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2", cwd=tmp_path
    )
    assert closed.code == 1, closed
    assert "unhealthy" in closed.stderr, closed
