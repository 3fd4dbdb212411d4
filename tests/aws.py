"""A real moto server on loopback for the AWS paths (SQS and EventBridge Scheduler), reached
through aiobotocore exactly as the daemon reaches AWS, and a TCP proxy in front of it that a
test can take down and bring back (an AWS outage without losing moto's state)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from scheduler_daemon.aws.clients import scheduler_client, sqs_client

REGION = "us-east-1"
# moto accepts any credentials; these keep botocore's chain from looking any further.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
ROLE_ARN = "arn:aws:iam::123456789012:role/scheduler-daemon-eventbridge"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yield its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        _moto_command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start within 30 s") from None
                time.sleep(0.05)  # process start-up: no event to await across processes
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class AwsResources:
    """One test's own queue and schedule group on the shared moto server."""

    endpoint_url: str
    queue_url: str
    queue_arn: str
    group: str
    dlq_arn: str

    def daemon_env(self, endpoint_url: str | None = None) -> dict[str, str]:
        """Environment for a daemon using the eventbridge backend on these resources."""
        return {
            **CREDENTIALS,
            "SCHEDULER_SCHEDULING__BACKEND": "eventbridge",
            "SCHEDULER_AWS__REGION": REGION,
            "SCHEDULER_AWS__ENDPOINT_URL": endpoint_url or self.endpoint_url,
            "SCHEDULER_SQS__QUEUE_URL": self.queue_url,
            "SCHEDULER_EVENTBRIDGE__GROUP": self.group,
            "SCHEDULER_EVENTBRIDGE__ROLE_ARN": ROLE_ARN,
            "SCHEDULER_EVENTBRIDGE__DEAD_LETTER_ARN": self.dlq_arn,
        }


async def create_resources(endpoint_url: str, visibility_timeout_s: int = 30) -> AwsResources:
    suffix = uuid.uuid4().hex[:10]
    async with sqs_client(REGION, endpoint_url) as sqs:
        dlq = await sqs.create_queue(QueueName=f"tasks-dlq-{suffix}")
        dlq_attrs = await sqs.get_queue_attributes(
            QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]
        )
        queue = await sqs.create_queue(
            QueueName=f"tasks-{suffix}",
            Attributes={"VisibilityTimeout": str(visibility_timeout_s)},
        )
        attrs = await sqs.get_queue_attributes(
            QueueUrl=queue["QueueUrl"], AttributeNames=["QueueArn"]
        )
    group = f"group-{suffix}"
    async with scheduler_client(REGION, endpoint_url) as scheduler:
        await scheduler.create_schedule_group(Name=group)
    return AwsResources(
        endpoint_url=endpoint_url,
        queue_url=queue["QueueUrl"],
        queue_arn=attrs["Attributes"]["QueueArn"],
        group=group,
        dlq_arn=dlq_attrs["Attributes"]["QueueArn"],
    )


class OutageProxy:
    """A TCP proxy to the moto server; ``down()`` refuses and cuts every connection until
    ``up()``."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


async def queue_depth(resources: AwsResources) -> tuple[int, int]:
    """(visible, in flight) messages of the test's queue."""
    async with sqs_client(REGION, resources.endpoint_url) as sqs:
        attrs = await sqs.get_queue_attributes(
            QueueUrl=resources.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    a = attrs["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


async def reachable(endpoint_url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(endpoint_url) as resp:
            return resp.status < 500
    except aiohttp.ClientError:
        return False


@contextlib.asynccontextmanager
async def outage_proxy(endpoint_url: str) -> AsyncIterator[OutageProxy]:
    port = int(endpoint_url.rsplit(":", 1)[1])
    proxy = OutageProxy(port)
    await proxy.up()
    try:
        yield proxy
    finally:
        await proxy.down()
