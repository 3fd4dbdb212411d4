"""The OpenAPI document and Swagger UI, checked against the live API on loopback: the document
is valid OpenAPI 3.1, covers every route, and the server keeps to it under schemathesis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import BaseModel, computed_field
from schemathesis import Case
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler_daemon.api.app import all_routes
from scheduler_daemon.api.docs import SWAGGER_UI_DIR
from scheduler_daemon.api.openapi import build_openapi, openapi_path
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.postgres import PostgresStore
from tests.integration.serve import serve_url

TOKENS = {
    "read": "reader-token-0123456789",
    "write": "writer-token-0123456789",
    "admin": "admin-token-0123456789",
}
MAX_EXAMPLES = 25


@pytest.fixture
async def base_url(store: PostgresStore) -> AsyncIterator[str]:
    """The API with a token for each role, on a free loopback port."""
    settings = Settings(
        http={
            "body_limit_bytes": 262_144,
            "tokens": [
                {"name": f"{role}er", "token": token, "role": role}
                for role, token in TOKENS.items()
            ],
        },
    )
    async with serve_url(store, settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url) as session:
        yield session


async def fetch_document(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        document: dict[str, Any] = await resp.json()
    return document


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def test_document_is_valid_openapi_31(http: aiohttp.ClientSession) -> None:
    document = await fetch_document(http)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "scheduler-daemon"
    assert document["info"]["version"]
    validate(document)
    async with http.get("/openapi.json") as again:  # generated once, then served as it is
        assert await again.json() == document


async def test_every_route_is_an_operation(http: aiohttp.ClientSession) -> None:
    document = await fetch_document(http)
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    routes = all_routes()
    operations = [(m, p) for p, item in document["paths"].items() for m in item]
    assert len(operations) == len(routes)
    for route in routes:
        operation = document["paths"][openapi_path(route.path)][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        assert operation["summary"] == route.summary
        responses = operation["responses"]
        for status in route.responses:
            assert str(status) in responses
        for status in (*route.errors, 500):
            problem = responses[str(status)]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}
        if route.role is None:
            assert operation["security"] == []
            assert "401" not in responses
            assert "403" not in responses
            assert "x-required-role" not in operation
        else:
            assert operation["security"] == [{"bearerAuth": []}]
            assert {"401", "403"} <= responses.keys()
            assert operation["x-required-role"] == route.role
    listing = {p["name"]: p for p in document["paths"]["/v1/tasks"]["get"]["parameters"]}
    assert listing["status"]["style"] == "form"
    assert listing["status"]["explode"] is True
    assert listing["status"]["schema"]["type"] == "array"
    assert "commas" in listing["status"]["description"]
    assert listing["limit"]["schema"]["maximum"] == 500
    task_id = document["paths"]["/v1/tasks/{task_id}"]["get"]["parameters"][0]
    assert task_id["in"] == "path"
    assert task_id["schema"] == {"type": "string", "format": "uuid"}
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [c["schema"] for c in metrics.values()] == [{"type": "string"}]
    status_enum = document["components"]["schemas"]["TaskStatus"]["enum"]
    assert "scheduled" in status_enum


async def test_auth_failures_are_documented_problems(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/tasks") as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post("/v1/tasks", json={"action": "noop"}, headers=bearer("read")) as resp:
        assert resp.status == 403
        assert (await resp.json())["status"] == 403
    async with http.get("/openapi.json", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 200  # public: a token is neither needed nor checked


class Echo(BaseModel):
    text: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def length(self) -> int:
        return len(self.text)


async def _echo(request: web.Request) -> web.Response:  # pragma: no cover - never served
    raise NotImplementedError


def test_generator_picks_up_new_routes_and_keeps_both_modes() -> None:
    """A route added to the table appears by itself; a model used as a request and as a response
    and described differently each way keeps both descriptions."""
    extra = Route(
        "PUT",
        r"/v1/echo/{echo_id:[0-9a-f-]+}",
        _echo,
        "putEcho",
        "Echo",
        "echo",
        "admin",
        {200: Response("echoed", Echo)},
        body=Echo,
        path_params={"echo_id": "which"},
        errors=(404,),
    )
    document = build_openapi([*all_routes(), extra], version="9.9.9")
    validate(document)
    operation = document["paths"]["/v1/echo/{echo_id}"]["put"]
    assert operation["operationId"] == "putEcho"
    assert operation["x-required-role"] == "admin"
    schemas = document["components"]["schemas"]
    body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    out_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref != out_ref
    body_schema = schemas[body_ref.rsplit("/", 1)[1]]
    out_schema = schemas[out_ref.rsplit("/", 1)[1]]
    assert "length" not in body_schema["properties"]
    assert "length" in out_schema["properties"]
    assert "ListTasksQuery" not in schemas  # its fields became parameters
    with pytest.raises(ValueError, match="twice"):
        build_openapi([*all_routes(), extra, extra])


async def test_docs_page_and_its_assets(http: aiohttp.ClientSession) -> None:
    async with http.get("/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        page = await resp.text()
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert "unsafe-inline" not in csp
    assert "http:" not in page
    assert "https:" not in page  # no CDN
    scripts = re.findall(r'<script src="([^"]+)"></script>', page)
    assert "<script>" not in page  # nothing inline: the CSP would block it
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)">', page)
    assert "/docs/static/swagger-ui-bundle.js" in scripts
    assert "/docs/static/swagger-ui-standalone-preset.js" in scripts
    assert "/docs/static/swagger-ui.css" in styles
    for url in scripts:
        async with http.get(url) as asset:
            assert asset.status == 200, url
            assert asset.content_type in ("text/javascript", "application/javascript"), url
    for url in styles:
        async with http.get(url) as asset:
            assert asset.status == 200, url
            assert asset.content_type == "text/css", url
    [init] = [url for url in scripts if not url.startswith("/docs/static/")]
    async with http.get(init) as resp:
        script = await resp.text()
    assert 'url: "/openapi.json"' in script
    assert "persistAuthorization: true" in script
    async with http.get("/docs/static/no-such-file.js") as resp:
        assert resp.status == 404


def test_bundled_swagger_ui_renders_openapi_31() -> None:
    """Swagger UI reads OpenAPI 3.1 documents from version 5 on."""
    found = re.fullmatch(r"swagger-ui-(\d+)\.\d+\.\d+", SWAGGER_UI_DIR.name)
    assert found is not None, SWAGGER_UI_DIR
    assert int(found.group(1)) >= 5
    assert (SWAGGER_UI_DIR / "swagger-ui-bundle.js").is_file()


# What schemathesis checks, in two groups so that a known failure of one leaves the other
# checked: a 5xx answer, and answers the document does not declare. (An unexpected 500 still
# conforms: every operation declares 500 as a problem.)
CHECKS: dict[str, list[CheckFunction]] = {
    "no_server_error": [not_a_server_error],
    "conformance": [status_code_conformance, content_type_conformance, response_schema_conformance],
}

# Checks that fail for a known reason, by (operationId, group), marked xfail; none now.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


# Requests this test once found answered with 500, each reduced to one field: the answer is a
# 422 naming the field (dates outside what PostgreSQL stores, NUL characters, lone surrogates).
FOUND_SERVER_ERRORS = [
    ("POST", "/v1/tasks", '{"action": "noop", "run_at": "0001-01-01T00:10:00+05:00"}', "run_at"),
    ("POST", "/v1/tasks", '{"action": "noop", "run_at": "9999-12-31T23:00:00-05:00"}', "run_at"),
    ("POST", "/v1/tasks", '{"action": "noop", "payload": {"a": "x\\u0000y"}}', "payload"),
    ("POST", "/v1/tasks", '{"action": "noop", "metadata": {"\\u0000": 1}}', "metadata"),
    ("POST", "/v1/tasks", '{"action": "noop", "payload": {"a": "\\ud810"}}', "payload"),
    ("POST", "/v1/tasks", '{"action": "log", "payload": {"message": "\\u0000"}}', "payload"),
    ("POST", "/v1/tasks", '{"action": "noop", "idempotency_key": "a\\u0000"}', "idempotency_key"),
    (
        "POST",
        "/v1/tasks/batch",
        '{"tasks": [{"action": "noop", "run_at": "0001-01-01T00:10:00+05:00"}]}',
        "tasks[0].run_at",
    ),
    ("GET", "/v1/tasks?created_after=0001-01-01T00:00:00%2B05:00", None, "created_after"),
    ("GET", "/v1/tasks?run_before=9999-12-31T23:00:00-05:00", None, "run_before"),
    ("GET", "/v1/tasks?action=%00", None, "action"),
    ("GET", "/v1/tasks?queue=a%00b", None, "queue"),
]


async def test_found_server_errors_are_422(http: aiohttp.ClientSession) -> None:
    headers = bearer("admin") | {"Content-Type": "application/json"}
    wrong = []
    for method, url, body, field in FOUND_SERVER_ERRORS:
        async with http.request(method, url, data=body, headers=headers) as resp:
            problem = await resp.json()
        named = [e["field"] for e in problem.get("errors") or []]
        if resp.status != 422 or not any(f.startswith(field) for f in named):
            wrong.append(f"{method} {url} {body or ''} -> {resp.status} {named}")
    assert not wrong, "\n".join(wrong)


def _fuzz_params() -> list[Any]:
    params = []
    for route in all_routes():
        for group in CHECKS:
            reason = KNOWN_FAILURES.get((route.operation_id, group))
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            params.append(
                pytest.param(
                    route.operation_id, group, id=f"{route.operation_id}-{group}", marks=marks
                )
            )
    return params


@pytest.mark.parametrize(("operation_id", "checks"), _fuzz_params())
async def test_server_keeps_to_the_document(
    http: aiohttp.ClientSession, base_url: str, operation_id: str, checks: str
) -> None:
    """Schemathesis sends generated requests over loopback and checks the answers."""
    document = await fetch_document(http)
    task_ids = []
    for body in (
        {"action": "noop", "delay_s": 3600},
        {"action": "log", "payload": {"message": "x"}},
    ):
        async with http.post("/v1/tasks", json=body, headers=bearer("admin")) as resp:
            assert resp.status == 201
            task_ids.append((await resp.json())["id"])
    async with http.delete(f"/v1/tasks/{task_ids[1]}", headers=bearer("admin")) as resp:
        assert resp.status == 200  # a cancelled task: retry has something to do
    await asyncio.to_thread(_fuzz, document, base_url, operation_id, CHECKS[checks], task_ids)


def _fuzz(
    document: dict[str, Any],
    base_url: str,
    operation_id: str,
    checks: list[CheckFunction],
    task_ids: list[str],
) -> None:
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())
    schema.config.update(base_url=base_url, headers=bearer("admin"))
    [route] = [r for r in all_routes() if r.operation_id == operation_id]
    operation = schema[openapi_path(route.path)][route.method]
    strategy = operation.as_strategy()
    if "task_id" in route.path_params:
        # Random ids only ever find nothing (404): also use tasks that exist.
        known = st.sampled_from(task_ids)
        strategy = st.one_of(
            strategy,
            known.flatmap(lambda tid: operation.as_strategy(path_parameters={"task_id": tid})),
        )
    if route.body is not None:
        # Generated action names are almost never registered ones: make half of them noop, an
        # action that takes any payload, and drop what the schema cannot tell is invalid
        # together, so that creation gets past the 422 too.
        strategy = st.tuples(strategy, st.booleans()).map(_noop_action)

    with requests.Session() as session:

        def call(case: Case[Any]) -> None:
            case.call_and_validate(session=session, checks=checks, timeout=10)

        _given(strategy, call)


def _noop_action(pair: tuple[Case[Any], bool]) -> Case[Any]:
    case, replace = pair
    if replace and isinstance(case.body, dict):
        tasks = case.body.get("tasks")
        for task in [case.body, *(tasks if isinstance(tasks, list) else [])]:
            if isinstance(task, dict) and "action" in task:
                task["action"] = "noop"
                task.pop("depends_on", None)  # random ids: unknown tasks
                if task.get("run_at") is not None:
                    task.pop("delay_s", None)  # one or the other
    return case


def _given(strategy: st.SearchStrategy[Case[Any]], test: Callable[[Case[Any]], None]) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def run(case: Case[Any]) -> None:
        test(case)

    run()
