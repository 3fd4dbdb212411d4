"""The ``webhook`` action: an HTTP request; 2xx succeeds, 408/429/5xx and network errors retry."""

from __future__ import annotations

import email.utils
import json
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aiohttp
from multidict import CIMultiDict
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)
from yarl import URL

from scheduler_daemon.actions.base import ActionContext, ActionResult
from scheduler_daemon.actions.guard import (
    BlockedTarget,
    GuardedResolver,
    GuardPolicy,
    check_literal,
)
from scheduler_daemon.actions.redact import Redactor, header_secrets, redact_url, url_secrets
from scheduler_daemon.actions.signing import (
    SECRET_PREFIX,
    SIGNING_HEADERS,
    InvalidSecret,
    parse_secret,
    signing_headers,
)

OUTPUT_LIMIT = 8192
RETRYABLE_STATUSES = frozenset({408, 429})


class WebhookPayload(BaseModel):
    # hide_input_in_errors: a ValidationError's text (e.g. the executor's "cannot run action")
    # never repeats the URL, the headers or the signing secret.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)

    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(
        default=None, validation_alias=AliasChoices("json", "data"), serialization_alias="json"
    )
    body: str | None = Field(default=None, max_length=1_000_000)
    # A Standard Webhooks secret ("whsec_" + base64) for this task; replaces the global ones.
    signing_secret: str | None = Field(default=None, repr=False)

    @field_validator("signing_secret")
    @classmethod
    def _valid_secret(cls, value: str | None) -> str | None:
        if value is not None:
            parse_secret(value, "signing_secret")  # InvalidSecret names the field, not the value
        return value

    @model_validator(mode="after")
    def _one_body(self) -> WebhookPayload:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json (or data) or body, not both")
        if self.url.scheme not in ("http", "https"):
            raise ValueError("url must be http or https")
        if (self.url.username or self.url.password) and any(
            name.lower() == "authorization" for name in self.headers
        ):
            # aiohttp refuses to send both; say so now rather than at every attempt.
            raise ValueError(
                "give credentials either in the url (user:password@) or in an Authorization "
                "header, not both"
            )
        return self


def classify(status: int) -> tuple[bool, bool]:
    """(ok, retryable) for an HTTP response status."""
    if 200 <= status < 300:
        return True, False
    return False, status in RETRYABLE_STATUSES or status >= 500


MAX_RETRY_AFTER_S = 24 * 3600.0


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    delta = (when - datetime.now(UTC)).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_S)


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


DEFAULT_REDACT_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
MAX_SIGNING_SECRETS = 2
READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    follow_redirects: bool = False
    # Standard Webhooks secrets ("whsec_" + base64): every request is signed with each.
    signing_secrets: Sequence[str] = field(default=(), repr=False)
    # Header names (any case) whose values never reach logs or attempt output and errors.
    redact_headers: Collection[str] = DEFAULT_REDACT_HEADERS
    # Most response-body bytes read; the first OUTPUT_LIMIT of them are the attempt's output.
    max_response_bytes: int = 65536
    signing_keys: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.signing_secrets, str):
            raise TypeError("webhook.signing_secrets must be a list of secrets, not one string")
        if len(self.signing_secrets) > MAX_SIGNING_SECRETS:
            raise ValueError(
                "webhook.signing_secrets: at most two secrets (the current one and, during a "
                "rotation, the next)"
            )
        if self.max_response_bytes < 0:
            raise ValueError("webhook.max_response_bytes must not be negative")
        keys = tuple(
            parse_secret(secret, f"webhook.signing_secrets[{i}]")
            for i, secret in enumerate(self.signing_secrets)
        )
        object.__setattr__(self, "signing_secrets", tuple(self.signing_secrets))
        object.__setattr__(
            self, "redact_headers", frozenset(h.lower() for h in self.redact_headers)
        )
        object.__setattr__(self, "signing_keys", keys)


class WebhookAction:
    name: ClassVar[str] = "webhook"
    payload_model: ClassVar[type[BaseModel]] = WebhookPayload

    def __init__(
        self,
        options: Callable[[], WebhookOptions] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = options or WebhookOptions
        self._clock = clock  # Unix seconds, for webhook-timestamp
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            resolver = GuardedResolver(lambda: self._options().guard)
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, resolver=resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": "scheduler-daemon"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, payload: Any, ctx: ActionContext) -> ActionResult:
        assert isinstance(payload, WebhookPayload)
        await self.start()
        options = self._options()
        redact = _redactor(payload, options)
        try:
            return await self._send(payload, ctx, options, redact)
        except Exception as exc:
            return _failure(exc, redact, ctx)

    async def _send(
        self, payload: WebhookPayload, ctx: ActionContext, options: WebhookOptions, redact: Redactor
    ) -> ActionResult:
        """The request, and each redirect it is allowed to follow."""
        assert self._session is not None
        method, url = payload.method, URL(str(payload.url))
        if payload.signing_secret is not None:  # the task's own secret replaces the global
            keys: tuple[bytes, ...] = (parse_secret(payload.signing_secret),)
        else:
            keys = options.signing_keys
        body, content_type = _body(payload)
        msg_id = f"msg_{ctx.task_id}"  # the same for every attempt of the task
        for _hop in range(MAX_REDIRECTS + 1):
            # Every hop is checked: IP literals here, names by the resolver.
            check_literal(url.host or "", options.guard)
            headers = CIMultiDict(payload.headers)
            if keys:
                for name in SIGNING_HEADERS:
                    headers.popall(name, None)
                # Signed over the exact bytes sent, at each hop (a 303 drops the body).
                headers.update(signing_headers(keys, msg_id, int(self._clock()), body or b""))
            data = None if body is None else aiohttp.BytesPayload(body, content_type=content_type)
            async with self._session.request(
                method, url, headers=headers, data=data, allow_redirects=False
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECTS and location and options.follow_redirects:
                    url = url.join(URL(location))
                    if url.scheme not in ("http", "https"):
                        return ActionResult.failure(
                            f"redirect to a {url.scheme!r} URL refused", retryable=False
                        )
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                ctx.log.debug(
                    "webhook_response",
                    method=method,
                    url=redact_url(url),
                    status=resp.status,
                    signed=bool(keys),
                )
                return await _outcome(resp, method, url, options.max_response_bytes, redact)
        return ActionResult.failure(f"more than {MAX_REDIRECTS} redirects", retryable=False)


def _redactor(payload: WebhookPayload, options: WebhookOptions) -> Redactor:
    """What an error or output of this request must never show: the URL's and the headers'
    secrets, and the signing secrets (with and without their prefix)."""
    url = URL(str(payload.url))
    secrets = [*url_secrets(url), *header_secrets(payload.headers, options.redact_headers)]
    for secret in (*options.signing_secrets, payload.signing_secret):
        if secret:
            secrets += [secret, secret.removeprefix(SECRET_PREFIX)]
    return Redactor(secrets)


def _failure(exc: Exception, redact: Redactor, ctx: ActionContext) -> ActionResult:
    """A request that raised, as the attempt's outcome (redacted; retried when the cause may
    pass)."""
    if isinstance(exc, InvalidSecret):  # names the field, never the secret
        return ActionResult.failure(str(exc), retryable=False)
    if isinstance(exc, BlockedTarget):
        return ActionResult.failure(redact(str(exc)), retryable=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, BlockedTarget):
            return ActionResult.failure(redact(str(exc.os_error)), retryable=False)
        return ActionResult.failure(redact(f"{type(exc).__name__}: {exc}"), retryable=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return ActionResult.failure(redact(f"invalid target URL: {exc}"), retryable=False)
    if isinstance(exc, aiohttp.ClientError):
        # e.g. ClientResponseError, whose text holds the full URL: redacted.
        return ActionResult.failure(redact(f"{type(exc).__name__}: {exc}"), retryable=True)
    # Not left to the executor, which would log the message and traceback as they are.
    error = redact(f"{type(exc).__name__}: {exc}")
    ctx.log.error(
        "webhook_crashed", error=error, traceback=redact("".join(traceback.format_exception(exc)))
    )
    return ActionResult.failure(error, retryable=True)


def _body(payload: WebhookPayload) -> tuple[bytes | None, str]:
    """The request body as the bytes sent (and signed), with its default Content-Type (a
    Content-Type in the payload's headers wins, as before)."""
    if payload.json_body is not None:
        return json.dumps(payload.json_body).encode(), "application/json"
    if payload.body is not None:
        return payload.body.encode(), "text/plain; charset=utf-8"
    return None, "application/octet-stream"


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the response body."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await resp.content.read(min(remaining, READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def _outcome(
    resp: aiohttp.ClientResponse, method: str, url: URL, read_limit: int, redact: Redactor
) -> ActionResult:
    raw = await _read_body(resp, read_limit)
    # A receiver may echo the request (its URL, an Authorization header): redacted. The
    # output holds no response headers, so a Set-Cookie never reaches it.
    text = redact(raw[:OUTPUT_LIMIT].decode("utf-8", errors="replace"))
    ok, retryable = classify(resp.status)
    output = f"HTTP {resp.status}\n{text}"
    if ok:
        return ActionResult.success(output=output, result={"status": resp.status})
    error = f"HTTP {resp.status} from {method} {url.host}"
    if resp.status in REDIRECTS:
        error += " (redirects are not followed unless webhook.follow_redirects = true)"
    return ActionResult.failure(
        error,
        retryable=retryable,
        output=output,
        retry_after_s=retry_after(resp.headers.get("Retry-After")) if retryable else None,
    )
