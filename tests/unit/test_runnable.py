"""Which actions a daemon claims: its registry's, with ``sqs`` only when AWS is set up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler_daemon.app import build_actions, runnable_actions
from scheduler_daemon.settings import Settings

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def test_without_aws_a_daemon_leaves_sqs_tasks_to_one_that_has_it(
    no_aws: pytest.MonkeyPatch,
) -> None:
    names = runnable_actions(build_actions(), Settings())
    assert "sqs" not in names
    assert {"webhook", "log", "message", "noop"} <= set(names)


@pytest.mark.parametrize(
    "setup",
    ["endpoint", "credentials-variable", "ecs-task-role", "shared-file"],
)
def test_with_aws_set_up_a_daemon_runs_sqs(
    no_aws: pytest.MonkeyPatch, tmp_path: Path, setup: str
) -> None:
    settings = Settings()
    if setup == "endpoint":
        settings = Settings(aws={"endpoint_url": "http://127.0.0.1:5000"})
    elif setup == "credentials-variable":
        no_aws.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    elif setup == "ecs-task-role":
        no_aws.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")
    else:
        (tmp_path / ".aws").mkdir()
        (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert "sqs" in runnable_actions(build_actions(), settings)


_STARTS_WITHOUT_AWS = """
import asyncio, sys
from scheduler_daemon.app import build_actions, runnable_actions
from scheduler_daemon.settings import Settings

async def main():
    settings = Settings()
    actions = build_actions()
    await actions.start(runnable_actions(actions, settings))
    await actions.close()

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiobotocore", "botocore.session"))
print(",".join(loaded))
"""


def test_a_daemon_without_aws_does_not_load_the_aws_sdk(
    no_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SDK's session and service models cost memory (RSS) in every daemon that loads them;
    # the built-in sqs action opens its client only where this daemon runs sqs tasks.
    done = subprocess.run(
        [sys.executable, "-c", _STARTS_WITHOUT_AWS],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        | {"HOME": str(tmp_path)},
    )
    assert done.stdout.strip() == "", done.stdout
