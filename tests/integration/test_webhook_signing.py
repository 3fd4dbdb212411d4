"""Webhook signing and redaction against a real HTTP receiver on loopback.

The receiver checks signatures with a verifier written here from the Standard Webhooks
specification (base64, hmac and hashlib only), never with the daemon's own signing code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web
from multidict import CIMultiDict
from structlog.testing import capture_logs

from scheduler_daemon.actions.base import ActionContext, ActionResult
from scheduler_daemon.actions.guard import GuardPolicy
from scheduler_daemon.actions.webhook import WebhookAction, WebhookOptions, WebhookPayload

LOOPBACK = GuardPolicy(allow_private_networks=True)
TOLERANCE_S = 300  # the specification's suggested tolerance for webhook-timestamp


# --- an independent verifier --------------------------------------------------------------


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """A receiver's check, from the specification: the timestamp is recent, and one of the
    space-separated ``v1,<base64>`` entries is HMAC-SHA256 keyed with the base64-decoded part
    after ``whsec_``, over ``{webhook-id}.{webhook-timestamp}.{raw body}``."""
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return True
    return False


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def test_the_verifier_rejects_what_it_should() -> None:
    secret = new_secret()
    now = int(time.time())
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"msg_1.{now}.".encode() + b"{}"
    good = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": good}
    assert verify(secret, headers, b"{}", now)
    assert not verify(secret, headers, b"{ }", now)  # another body
    assert not verify(new_secret(), headers, b"{}", now)  # another secret
    assert not verify(secret, {**headers, "webhook-id": "msg_2"}, b"{}", now)
    assert not verify(secret, headers, b"{}", now + TOLERANCE_S + 1)  # too old
    assert not verify(secret, {**headers, "webhook-signature": "v2" + good[2:]}, b"{}", now)


# --- the receiver -------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every request; answers ``status`` with ``reply(request)`` as the body."""

    port: int = 0
    status: int = 200
    reply: Callable[[Received], str] = lambda _r: "ok"
    response_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(
            method=request.method,
            path_qs=request.path_qs,
            headers=CIMultiDict(request.headers),
            body=await request.read(),
            at=time.time(),
        )
        self.requests.append(received)
        return web.Response(
            status=self.status, text=self.reply(received), headers=self.response_headers
        )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook.port = runner.addresses[0][1]
    try:
        yield hook
    finally:
        await runner.cleanup()


# --- the action ---------------------------------------------------------------------------


@asynccontextmanager
async def no_transaction() -> AsyncIterator[None]:
    raise AssertionError("the webhook action does not open a transaction")
    yield  # pragma: no cover


def context(task_id: uuid.UUID | None = None, attempt: int = 1) -> ActionContext:
    return ActionContext(
        task_id=task_id or uuid.uuid4(),
        attempt=attempt,
        max_attempts=3,
        action="webhook",
        log=structlog.get_logger(),
        _transaction=no_transaction,
    )


Run = Callable[..., Awaitable[ActionResult]]


@pytest.fixture
async def make_run() -> AsyncIterator[Callable[..., Run]]:
    """``make_run(**options)``: a function that runs one webhook payload (a dict, validated
    as the API does) with those WebhookOptions (loopback allowed)."""
    actions: list[WebhookAction] = []

    def make(**options: Any) -> Run:
        opts = WebhookOptions(guard=LOOPBACK, **options)
        action = WebhookAction(lambda: opts)
        actions.append(action)

        async def run(payload: dict[str, Any], ctx: ActionContext | None = None) -> ActionResult:
            parsed = WebhookPayload.model_validate(payload)
            return await action.run(parsed, ctx or context())

        return run

    try:
        yield make
    finally:
        for action in actions:
            await action.close()


def signing_headers_of(request: Received) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower().startswith("webhook-")}


# --- signing ------------------------------------------------------------------------------


async def test_a_signed_request_verifies_over_the_exact_body(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    secret = new_secret()
    run = make_run(signing_secrets=[secret])
    ctx = context()
    before = time.time()
    result = await run({"url": receiver.url(), "json": {"order": 42, "name": "caf\u00e9"}}, ctx)
    assert result.ok, result
    [request] = receiver.requests
    assert request.headers["webhook-id"] == f"msg_{ctx.task_id}"
    timestamp = int(request.headers["webhook-timestamp"])
    assert int(before) - 1 <= timestamp <= request.at + 1
    assert verify(secret, request.headers, request.body, now=request.at)
    assert json.loads(request.body) == {"order": 42, "name": "caf\u00e9"}
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers.getall("webhook-signature")) == 1
    assert len(request.headers["webhook-signature"].split(" ")) == 1


@pytest.mark.parametrize(
    ("payload", "body", "content_type"),
    [
        ({"body": "plain \u2603 text"}, "plain \u2603 text".encode(), "text/plain; charset=utf-8"),
        (
            {"body": "<a/>", "headers": {"content-type": "application/xml"}},
            b"<a/>",
            "application/xml",
        ),
        ({"method": "GET"}, b"", None),
        ({"method": "DELETE"}, b"", None),
        ({"method": "PUT", "json": [1, None, "x"]}, b'[1, null, "x"]', "application/json"),
    ],
)
async def test_every_kind_of_body_is_signed_as_sent(
    receiver: Receiver,
    make_run: Callable[..., Run],
    payload: dict[str, Any],
    body: bytes,
    content_type: str | None,
) -> None:
    secret = new_secret()
    result = await make_run(signing_secrets=[secret])({"url": receiver.url(), **payload})
    assert result.ok, result
    [request] = receiver.requests
    assert request.body == body
    assert request.headers.get("Content-Type") == content_type
    assert verify(secret, request.headers, request.body, now=request.at)


async def test_the_id_is_stable_across_attempts_of_a_task(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    secret = new_secret()
    run = make_run(signing_secrets=[secret])
    task_id = uuid.uuid4()
    payload = {"url": receiver.url(), "json": {"n": 1}}
    receiver.status = 503
    first = await run(payload, context(task_id, attempt=1))
    assert not first.ok
    assert first.retryable
    receiver.status = 200
    second = await run(payload, context(task_id, attempt=2))
    assert second.ok
    other = await run(payload, context(attempt=1))  # another task
    assert other.ok
    one, two, three = receiver.requests
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == f"msg_{task_id}"
    assert three.headers["webhook-id"] != one.headers["webhook-id"]
    for request in receiver.requests:
        assert verify(secret, request.headers, request.body, now=request.at)


async def test_a_rotation_signs_with_both_secrets(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    old, new = new_secret(), new_secret()
    result = await make_run(signing_secrets=[old, new])(
        {"url": receiver.url(), "json": {"rotating": True}}
    )
    assert result.ok, result
    [request] = receiver.requests
    entries = request.headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    # A receiver that knows either secret accepts the request; one that knows neither does not.
    assert verify(old, request.headers, request.body, now=request.at)
    assert verify(new, request.headers, request.body, now=request.at)
    assert not verify(new_secret(), request.headers, request.body, now=request.at)
    # Each entry is the signature of one secret, in the configured order.
    for secret, entry in zip((old, new), entries, strict=True):
        alone = {**request.headers, "webhook-signature": entry}
        assert verify(secret, alone, request.body, now=request.at)


async def test_a_task_secret_replaces_the_global_ones(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    global_secret, task_secret = new_secret(), new_secret()
    result = await make_run(signing_secrets=[global_secret])(
        {"url": receiver.url(), "json": {"a": 1}, "signing_secret": task_secret}
    )
    assert result.ok, result
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert verify(task_secret, request.headers, request.body, now=request.at)
    assert not verify(global_secret, request.headers, request.body, now=request.at)


async def test_a_task_secret_signs_without_global_secrets(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    task_secret = new_secret()
    result = await make_run()({"url": receiver.url(), "signing_secret": task_secret})
    assert result.ok, result
    [request] = receiver.requests
    assert verify(task_secret, request.headers, request.body, now=request.at)


async def test_without_a_secret_no_signing_headers_are_sent(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    result = await make_run()({"url": receiver.url(), "json": {"a": 1}})
    assert result.ok, result
    [request] = receiver.requests
    assert signing_headers_of(request) == {}
    assert json.loads(request.body) == {"a": 1}
    assert request.headers["Content-Type"] == "application/json"


async def test_signing_replaces_signing_headers_given_in_the_payload(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    secret = new_secret()
    forged = {"Webhook-Id": "msg_forged", "WEBHOOK-SIGNATURE": "v1,forged"}
    result = await make_run(signing_secrets=[secret])(
        {"url": receiver.url(), "json": {}, "headers": forged}
    )
    assert result.ok, result
    [request] = receiver.requests
    assert request.headers.getall("webhook-id") != ["msg_forged"]
    assert len(request.headers.getall("webhook-signature")) == 1
    assert "forged" not in request.headers["webhook-signature"]
    assert verify(secret, request.headers, request.body, now=request.at)


async def test_secrets_never_reach_the_attempt_text(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    global_secret, task_secret = new_secret(), new_secret()
    receiver.status = 500
    receiver.reply = lambda r: "failed: " + r.headers.get("webhook-signature", "")
    with capture_logs() as logs:
        result = await make_run(signing_secrets=[global_secret])(
            {"url": receiver.url(), "signing_secret": task_secret}
        )
    assert not result.ok
    text = f"{result.error}\n{result.output}\n{logs}"
    for secret in (global_secret, task_secret):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


# --- redaction ----------------------------------------------------------------------------


def echo(request: Received) -> str:
    """What an echo endpoint (httpbin's /anything) answers: the request as it arrived."""
    lines = [f"{request.method} {request.path_qs}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return "\n".join(lines)


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, (secret, text)


@pytest.mark.parametrize(
    ("path", "headers", "secrets"),
    [
        # Userinfo and a token in the URL, a key in a redacted header.
        ("/x?token=abc", {"X-Api-Key": "s3cret"}, ("pw", "abc", "s3cret")),
        # A token in the URL, a bearer token in Authorization.
        ("/x?token=abc", {"Authorization": "Bearer s3cret"}, ("abc", "s3cret")),
        # Header names match in any case; a cookie too.
        ("/x?api_key=abc&x=1", {"authorization": "Bearer s3cret", "COOKIE": "sid=c00kie"}, ()),
    ],
)
async def test_credentials_never_reach_the_attempt_text_or_logs(
    receiver: Receiver,
    make_run: Callable[..., Run],
    path: str,
    headers: dict[str, str],
    secrets: tuple[str, ...],
) -> None:
    userinfo = "user:pw@" if "pw" in secrets else ""
    url = f"http://{userinfo}127.0.0.1:{receiver.port}{path}"
    receiver.status = 500
    receiver.reply = echo  # the receiver repeats the request, credentials and all
    receiver.response_headers = {"Set-Cookie": "session=setc00kie; HttpOnly"}
    with capture_logs() as logs:
        result = await make_run()({"url": url, "headers": headers, "json": {"a": 1}})
    assert not result.ok
    assert result.retryable
    assert result.error is not None
    assert result.output is not None
    assert result.error.startswith("HTTP 500")
    assert result.output.startswith("HTTP 500\nPOST /x?")
    # The request did carry them: the receiver got every credential.
    [request] = receiver.requests
    assert "abc" in request.path_qs
    for name, value in headers.items():
        assert request.headers[name] == value
    assert any(entry["event"] == "webhook_response" for entry in logs)
    text = f"{result.error}\n{result.output}\n{logs}"
    assert_clean(text, *secrets, "abc", "s3cret", "c00kie", "setc00kie")
    assert "***" in result.output


async def test_basic_credentials_from_the_url_are_redacted_in_an_echo(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    receiver.status = 500
    receiver.reply = echo
    url = f"http://alice:wonderland-pw@127.0.0.1:{receiver.port}/x"
    result = await make_run()({"url": url})
    [request] = receiver.requests
    basic = base64.b64encode(b"alice:wonderland-pw").decode()
    assert request.headers["Authorization"] == f"Basic {basic}"
    assert_clean(f"{result.error}\n{result.output}", "wonderland-pw", basic)


def test_credentials_in_the_url_and_an_authorization_header_are_refused() -> None:
    """aiohttp cannot send both: refused when the task is created, naming neither secret."""
    with pytest.raises(ValueError, match="not both") as info:
        WebhookPayload.model_validate(
            {
                "url": "http://user:pw@127.0.0.1:1/x?token=abc",
                "headers": {"Authorization": "Bearer s3cret"},
            }
        )
    assert_clean(str(info.value), "pw@", "abc", "s3cret")


@pytest.fixture
async def malformed_server() -> AsyncIterator[int]:
    """A loopback server whose every answer is not valid HTTP: aiohttp raises an error whose
    text holds the full request URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_error_naming_the_url_is_redacted(
    malformed_server: int, make_run: Callable[..., Run]
) -> None:
    url = f"http://user:pw@127.0.0.1:{malformed_server}/x?token=abc&page=2"
    with capture_logs() as logs:
        result = await make_run()({"url": url, "headers": {"X-Api-Key": "s3cret"}})
    assert not result.ok
    assert result.retryable
    assert result.error is not None
    assert result.error.startswith("ClientResponseError")
    assert "page=2" in result.error  # the URL is there, redacted
    assert_clean(f"{result.error}\n{result.output}\n{logs}", "pw", "abc", "s3cret")


# --- the response body ----------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "stored"), [(1000, 1000), (65536, 8192), (0, 0)])
async def test_the_response_is_read_up_to_max_response_bytes(
    receiver: Receiver, make_run: Callable[..., Run], limit: int, stored: int
) -> None:
    receiver.reply = lambda _r: "x" * 200_000
    result = await make_run(max_response_bytes=limit)({"url": receiver.url()})
    assert result.ok, result.error
    assert result.output == "HTTP 200\n" + "x" * stored


# --- redirects and failures ---------------------------------------------------------------


async def test_a_followed_303_is_signed_again_at_its_hop_without_the_body(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    secret = new_secret()
    receiver.status = 303
    receiver.response_headers = {"Location": "/landed"}

    def reply(request: Received) -> str:
        receiver.status = 200  # this answer is still the 303 (its status was taken): the next, 200
        return "moved"

    receiver.reply = reply
    run = make_run(signing_secrets=[secret], follow_redirects=True)
    result = await run({"url": receiver.url(), "method": "POST", "json": {"a": 1}})
    first, second = receiver.requests
    assert (first.method, first.path_qs, second.method) == ("POST", "/hook", "GET")
    assert second.path_qs == "/landed"
    assert second.body == b""
    assert verify(secret, second.headers, second.body, now=second.at)
    assert result.ok, result


async def test_a_redirect_is_not_followed_unless_configured(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    receiver.status = 302
    receiver.response_headers = {"Location": "/elsewhere"}
    result = await make_run()({"url": receiver.url()})
    assert len(receiver.requests) == 1
    assert not result.ok
    assert "redirects are not followed" in (result.error or "")


async def test_a_redirect_to_another_scheme_is_refused(
    receiver: Receiver, make_run: Callable[..., Run]
) -> None:
    receiver.status = 302
    receiver.response_headers = {"Location": "ftp://127.0.0.1/x"}
    result = await make_run(follow_redirects=True)({"url": receiver.url()})
    assert (result.ok, result.retryable) == (False, False)
    assert result.error == "redirect to a 'ftp' URL refused"


async def test_an_unreachable_target_is_retried_and_its_url_secrets_redacted(
    make_run: Callable[..., Run],
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await make_run()({"url": f"http://user:hunter2@127.0.0.1:{port}/hook?token=s3cret"})
    assert (result.ok, result.retryable) == (False, True)
    assert "ClientConnectorError" in (result.error or "")
    assert "hunter2" not in (result.error or "")
