"""RFC 9457 problem details: every error the API returns has this shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from scheduler_daemon.actions.base import FieldError, field_errors
from scheduler_daemon.logs import get_logger

PROBLEM_TYPE = "application/problem+json"
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


def invalid(errors: Sequence[FieldError]) -> Problem:
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(422, "Invalid request", detail, errors)


def from_validation(exc: ValidationError, prefix: str = "") -> Problem:
    return invalid(field_errors(exc, prefix))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    except Exception:
        _log.exception("request_failed", method=request.method, path=request.path)
        return Problem(500, "Internal error", "the error was logged").response(request.path)
