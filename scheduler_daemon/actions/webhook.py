"""The ``webhook`` action: an HTTP request; 2xx succeeds, 408/429/5xx and network errors retry."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, HttpUrl, model_validator
from yarl import URL

from scheduler_daemon.actions.base import ActionContext, ActionResult
from scheduler_daemon.actions.guard import (
    BlockedTarget,
    GuardedResolver,
    GuardPolicy,
    check_literal,
)

OUTPUT_LIMIT = 8192
RETRYABLE_STATUSES = frozenset({408, 429})


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(
        default=None, validation_alias=AliasChoices("json", "data"), serialization_alias="json"
    )
    body: str | None = Field(default=None, max_length=1_000_000)

    @model_validator(mode="after")
    def _one_body(self) -> WebhookPayload:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json (or data) or body, not both")
        if self.url.scheme not in ("http", "https"):
            raise ValueError("url must be http or https")
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


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    follow_redirects: bool = False


class WebhookAction:
    name: ClassVar[str] = "webhook"
    payload_model: ClassVar[type[BaseModel]] = WebhookPayload

    def __init__(self, options: Callable[[], WebhookOptions] | None = None) -> None:
        self._options = options or WebhookOptions
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
        assert self._session is not None
        options = self._options()
        method = payload.method
        url = URL(str(payload.url))
        kwargs: dict[str, Any] = {"headers": payload.headers, "allow_redirects": False}
        if payload.json_body is not None:
            kwargs["json"] = payload.json_body
        elif payload.body is not None:
            kwargs["data"] = payload.body
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                # Every hop is checked: IP literals here, names by the resolver.
                check_literal(url.host or "", options.guard)
                async with self._session.request(method, url, **kwargs) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in REDIRECTS and location and options.follow_redirects:
                        url = url.join(URL(location))
                        if url.scheme not in ("http", "https"):
                            return ActionResult.failure(
                                f"redirect to a {url.scheme!r} URL refused", retryable=False
                            )
                        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                            method = "GET"
                            kwargs.pop("json", None)
                            kwargs.pop("data", None)
                        continue
                    return await _outcome(resp, method, url)
            return ActionResult.failure(f"more than {MAX_REDIRECTS} redirects", retryable=False)
        except BlockedTarget as exc:
            return ActionResult.failure(str(exc), retryable=False)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedTarget):
                return ActionResult.failure(str(exc.os_error), retryable=False)
            return ActionResult.failure(f"{type(exc).__name__}: {exc}", retryable=True)
        except aiohttp.InvalidURL as exc:
            return ActionResult.failure(f"invalid target URL: {exc}", retryable=False)
        except aiohttp.ClientError as exc:
            return ActionResult.failure(f"{type(exc).__name__}: {exc}", retryable=True)


async def _outcome(resp: aiohttp.ClientResponse, method: str, url: URL) -> ActionResult:
    raw = await resp.content.read(OUTPUT_LIMIT)
    text = raw.decode("utf-8", errors="replace")
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
