"""RFC 9457 problem details: every error the API returns has this shape."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from scheduler_daemon.actions.base import FieldError, field_errors
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.errors import describe, is_unavailable

PROBLEM_TYPE = "application/problem+json"
# What a client is told to wait before retrying when the database cannot be reached.
RETRY_AFTER_S = 5
# During an outage, one warning line per this many seconds (with the count of the others).
UNAVAILABLE_LOG_INTERVAL_S = 10.0
_log = get_logger("api")


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers
        self.extra = extra

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        body.update(self.extra)
        return web.Response(
            status=self.status,
            text=json.dumps(body),
            content_type=PROBLEM_TYPE,
            headers=self.headers,
        )


def unavailable(title: str = "Database unavailable", detail: str | None = None) -> Problem:
    """503 with ``Retry-After``: the database cannot be reached now; the request may be retried
    as it is (nothing it asked for was done)."""
    return Problem(
        503,
        title,
        detail or "the database cannot be reached; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def invalid(errors: Sequence[FieldError]) -> Problem:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(422, "Invalid request", detail, errors)


def from_validation(exc: ValidationError, prefix: str = "") -> Problem:
    return invalid(field_errors(exc, prefix))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Throttle:
    """Lets one line through per interval and counts the ones it held back."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self._held = 0

    def admit(self) -> int | None:
        """None: stay quiet; else the number of lines held back since the last one."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._interval_s
        return held


# Per application: each app (a daemon, a test) has its own outage to report.
_unavailable_logs: weakref.WeakKeyDictionary[web.Application, _Throttle] = (
    weakref.WeakKeyDictionary()
)


def _log_unavailable(request: web.Request, exc: BaseException) -> None:
    throttle = _unavailable_logs.get(request.app)
    if throttle is None:
        throttle = _unavailable_logs[request.app] = _Throttle(UNAVAILABLE_LOG_INTERVAL_S)
    suppressed = throttle.admit()
    if suppressed is not None:
        _log.warning(
            "database_unavailable",
            method=request.method,
            path=request.path,
            error=describe(exc),
            suppressed=suppressed,
        )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except web.HTTPRequestEntityTooLarge as exc:
        return Problem(
            413,
            "Request body too large",
            exc.text or None,
            [FieldError("body", "request body exceeds http.body_limit_bytes")],
        ).response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return Problem(exc.status, exc.reason, headers=headers).response(request.path)
    except Exception as exc:
        if is_unavailable(exc):
            _log_unavailable(request, exc)
            return unavailable(
                detail=f"the database cannot be reached ({type(exc).__name__}); retry later"
            ).response(request.path)
        _log.exception("request_failed", method=request.method, path=request.path)
        return Problem(500, "Internal error", "the error was logged").response(request.path)
