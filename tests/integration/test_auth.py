"""Bearer tokens and roles: 401 without or with a wrong token, 403 for a role too low."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from scheduler_daemon.api.auth import authenticate
from scheduler_daemon.settings import ConfigError, Settings, TokenConfig, load_settings, masked
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_api

READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
ADMIN = "admin-token-0123456789"
TOKENS = [
    {"name": "dashboard", "token": READ, "role": "read"},
    {"name": "billing", "token": WRITE, "role": "write"},
    {"name": "ops", "token": ADMIN, "role": "admin"},
]


@pytest.fixture
async def api(store: PostgresStore) -> AsyncIterator[aiohttp.ClientSession]:
    async with serve_api(store, Settings(http={"tokens": TOKENS})) as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_or_wrong_token_is_401(api: aiohttp.ClientSession) -> None:
    for headers in (
        {},
        bearer("nope"),
        bearer(READ[:-1]),
        bearer(READ + "x"),
        {"Authorization": f"Basic {READ}"},
        {"Authorization": "Bearer"},
    ):
        async with api.get("/v1/tasks", headers=headers) as resp:
            assert resp.status == 401, headers
            assert resp.content_type == "application/problem+json"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert READ not in await resp.text()


async def test_roles(api: aiohttp.ClientSession) -> None:
    body = {"action": "noop", "delay_s": 600}
    async with api.post("/v1/tasks", json=body, headers=bearer(READ)) as resp:
        assert resp.status == 403
        problem = await resp.json()
        assert "dashboard" in problem["detail"]
        assert "write" in problem["detail"]
    for token in (WRITE, ADMIN):
        async with api.post("/v1/tasks", json=body, headers=bearer(token)) as resp:
            assert resp.status == 201
            task = await resp.json()
        for token_read in (READ, WRITE, ADMIN):
            async with api.get(f"/v1/tasks/{task['id']}", headers=bearer(token_read)) as resp:
                assert resp.status == 200
    async with api.delete(f"/v1/tasks/{task['id']}", headers=bearer(READ)) as resp:
        assert resp.status == 403
    async with api.delete(f"/v1/tasks/{task['id']}", headers=bearer(WRITE)) as resp:
        assert resp.status == 200


async def test_health_needs_no_token(api: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz"):
        async with api.get(path) as resp:
            assert resp.status == 200


async def test_auth_runs_before_validation(api: aiohttp.ClientSession) -> None:
    async with api.post("/v1/tasks", data=b"{garbage") as resp:
        assert resp.status == 401


def test_authenticate_compares_every_token() -> None:
    tokens = [TokenConfig.model_validate(t) for t in TOKENS]
    found = authenticate(f"Bearer {ADMIN}", tokens)
    assert found is not None
    assert found.name == "ops"
    assert authenticate(f"bearer  {WRITE} ", tokens) is not None
    assert authenticate(None, tokens) is None
    assert authenticate("Bearer ", tokens) is None


def test_tokens_from_env_json_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_CONFIG", raising=False)
    monkeypatch.setenv("SCHEDULER_HTTP__TOKENS", json.dumps(TOKENS))
    monkeypatch.setenv("SCHEDULER_HTTP__HOST", "0.0.0.0")
    settings = load_settings()
    assert [t.role for t in settings.http.tokens] == ["read", "write", "admin"]
    shown = json.dumps(masked(settings))
    assert READ not in shown
    assert WRITE not in shown
    assert "dashboard" in shown
    assert READ not in repr(settings)


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"host": "0.0.0.0"}, "http.tokens"),
        ({"tokens": [{"name": "a", "token": "short", "role": "read"}]}, "shorter than 16"),
        ({"tokens": [TOKENS[0], {**TOKENS[1], "name": "dashboard"}]}, "unique"),
        ({"tokens": [TOKENS[0], {**TOKENS[1], "token": READ}]}, "same value"),
        ({"tokens": [{**TOKENS[0], "role": "root"}]}, "role"),
    ],
)
def test_bad_token_config_is_refused(
    monkeypatch: pytest.MonkeyPatch, http: dict[str, object], message: str
) -> None:
    monkeypatch.delenv("SCHEDULER_CONFIG", raising=False)
    for key, value in http.items():
        env = value if isinstance(value, str) else json.dumps(value)
        monkeypatch.setenv(f"SCHEDULER_HTTP__{key.upper()}", env)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_non_loopback_without_tokens_needs_allow_anonymous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCHEDULER_CONFIG", raising=False)
    monkeypatch.setenv("SCHEDULER_HTTP__HOST", "0.0.0.0")
    monkeypatch.setenv("SCHEDULER_HTTP__ALLOW_ANONYMOUS", "true")
    assert load_settings().http.anonymous
