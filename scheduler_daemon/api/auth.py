"""Bearer tokens with roles: read < write < admin. Tokens are compared in constant time and
never logged; only the token's name is."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web

from scheduler_daemon.api.context import context
from scheduler_daemon.api.problems import Handler, Problem
from scheduler_daemon.api.routes import ROLE_RANK, spec_of
from scheduler_daemon.settings import TokenConfig

CALLER = web.RequestKey("caller", str)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scheduler-daemon"'}


def authenticate(header: str | None, tokens: Sequence[TokenConfig]) -> TokenConfig | None:
    """The token matching an ``Authorization: Bearer`` header, or None.

    Every configured token is compared, in constant time, whether or not one matched earlier.
    """
    if not header:
        return None
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    given = presented.strip().encode()
    found: TokenConfig | None = None
    for token in tokens:
        if hmac.compare_digest(given, token.token.get_secret_value().encode()):
            found = token
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    spec = spec_of(request)
    if spec is None or spec.role is None:
        return await handler(request)
    tokens = context(request).settings().http.tokens
    if not tokens:  # anonymous mode: loopback only, or explicitly allowed
        request[CALLER] = "anonymous"
        return await handler(request)
    token = authenticate(request.headers.get("Authorization"), tokens)
    if token is None:
        raise Problem(
            401,
            "Unauthorized",
            "send Authorization: Bearer <token> with a valid token",
            headers=_CHALLENGE,
        )
    if ROLE_RANK[token.role] < ROLE_RANK[spec.role]:
        raise Problem(
            403,
            "Forbidden",
            f"token {token.name!r} has role {token.role}; this needs {spec.role}",
        )
    request[CALLER] = token.name
    return await handler(request)
