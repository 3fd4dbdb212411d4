"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Nothing here is written per route: every :class:`Route` the application registered becomes an
operation, so a route added to the table shows up in the document by itself. Schemas come from
``pydantic.json_schema.models_json_schema`` (JSON Schema 2020-12, the dialect of OpenAPI 3.1),
request models in validation mode and response models in serialization mode, in one call so
that a model used both ways and described differently gets two names (``Model-Input`` and
``Model-Output``) instead of one overwriting the other.
"""

from __future__ import annotations

import copy
import http
import importlib.metadata
import json
import re
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from scheduler_daemon.api.problems import PROBLEM_TYPE
from scheduler_daemon.api.routes import ROLE_RANK, ROUTE_SPEC, Response, Role, Route
from scheduler_daemon.api.schemas import ProblemDetails

OPENAPI_VERSION = "3.1.0"
TITLE = "scheduler-daemon"
REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"
NO_BODY_STATUSES = frozenset({204, 304})

_PROBLEM_DESCRIPTIONS = {
    400: "malformed request (for example, a body that is not JSON)",
    401: "missing or unknown bearer token",
    403: "the token's role does not allow this",
    404: "not found",
    409: "conflict with the current state",
    413: "request body larger than http.body_limit_bytes",
    422: "invalid request: the errors list names each invalid field",
    500: "internal error (logged)",
    503: "the database cannot be reached right now: nothing was done, retry after Retry-After",
}
_PATH_VARIABLE = re.compile(r"\{(\w+)(?::[^{}]*)?\}")  # aiohttp allows {name:regex}
_REF_PREFIX = REF_TEMPLATE.split("{", 1)[0]

ModelKey = tuple[type[BaseModel], JsonSchemaMode]
Refs = dict[ModelKey, dict[str, Any]]  # (model, mode) -> {"$ref": ...}


def openapi_path(path: str) -> str:
    """An aiohttp path as an OpenAPI path template: ``{name:regex}`` becomes ``{name}``."""
    return _PATH_VARIABLE.sub(r"{\1}", path)


def package_version() -> str:
    try:
        return importlib.metadata.version("scheduler-daemon")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def build_openapi(routes: Sequence[Route], version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes``."""
    _check_unique(routes)
    schemas, refs = _component_schemas(routes)
    problem_ref = refs[(ProblemDetails, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = openapi_path(route.path)
        operation = _operation(route, path, schemas, refs, problem_ref)
        paths.setdefault(path, {})[route.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": version if version is not None else package_version(),
            "description": (
                "Schedule tasks over HTTP and follow them through their attempts. "
                "Errors are RFC 9457 problem details (application/problem+json)."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": tag} for tag in dict.fromkeys(route.tag for route in routes)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A token from http.tokens. Roles rank read < write < admin; "
                        "each operation's x-required-role names the least it needs."
                    ),
                }
            },
        },
    }
    _prune_components(document)
    return document


def _check_unique(routes: Sequence[Route]) -> None:
    seen_ids: set[str] = set()
    seen_routes: set[tuple[str, str]] = set()
    for route in routes:
        key = (route.method.upper(), openapi_path(route.path))
        if route.operation_id in seen_ids:
            raise ValueError(f"operation id {route.operation_id!r} is used twice")
        if key in seen_routes:
            raise ValueError(f"route {key[0]} {key[1]} is declared twice")
        seen_ids.add(route.operation_id)
        seen_routes.add(key)


def _models(routes: Iterable[Route]) -> list[ModelKey]:
    wanted: dict[ModelKey, None] = {(ProblemDetails, "serialization"): None}
    for route in routes:
        for model in (route.body, route.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for response in route.responses.values():
            if response.model is not None:
                wanted[(response.model, "serialization")] = None
    return list(wanted)


def _component_schemas(routes: Sequence[Route]) -> tuple[dict[str, Any], Refs]:
    """Component schemas by name, and the ``$ref`` of each (model, mode) the routes use."""
    models = _models(routes)
    refs, top = models_json_schema(models, ref_template=REF_TEMPLATE)
    schemas = dict(sorted(top.get("$defs", {}).items()))
    return schemas, {key: dict(refs[key]) for key in models}


def _schema_name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).removeprefix(_REF_PREFIX)


def _operation(
    route: Route,
    path: str,
    schemas: dict[str, Any],
    refs: Refs,
    problem_ref: dict[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": _description(route),
        "tags": [route.tag],
    }
    parameters = list(_path_parameters(route, path))
    if route.query is not None:
        query_schema = schemas[_schema_name(refs[(route.query, "validation")])]
        parameters.extend(_query_parameters(query_schema))
    parameters.extend(
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in route.headers.items()
    )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    operation["responses"] = _responses(route, refs, problem_ref)
    if route.role is None:
        operation["security"] = []
    else:
        operation["security"] = [{SECURITY_SCHEME: []}]
        operation["x-required-role"] = route.role
    return operation


def _description(route: Route) -> str:
    parts = [route.description] if route.description else []
    if route.role is None:
        parts.append("No token needed.")
    else:
        parts.append(f"Needs a bearer token with role {_roles_at_least(route.role)}.")
    return "\n\n".join(parts)


def _roles_at_least(role: Role) -> str:
    higher = [r for r, rank in ROLE_RANK.items() if rank > ROLE_RANK[role]]
    return f"{role} or {' or '.join(higher)}" if higher else role


def _path_parameters(route: Route, path: str) -> Iterator[dict[str, Any]]:
    for name in _PATH_VARIABLE.findall(path):
        is_id = name == "id" or name.endswith("_id")
        schema: dict[str, Any] = (
            {"type": "string", "format": "uuid"} if is_id else {"type": "string"}
        )
        parameter: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if route.path_params.get(name):
            parameter["description"] = route.path_params[name]
        parameter["schema"] = schema
        yield parameter


def _query_parameters(model_schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One parameter per field of a query model, from the model's own JSON schema."""
    required = set(model_schema.get("required", ()))
    for name, field_schema in model_schema.get("properties", {}).items():
        schema = copy.deepcopy(field_schema)
        schema.pop("title", None)
        description = schema.pop("description", None)
        if name not in required:
            schema = _without_null(schema)  # an absent parameter is the null
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if description:
            parameter["description"] = description
        if schema.get("type") == "array":
            parameter["style"] = "form"
            parameter["explode"] = True  # ?status=a&status=b
        parameter["schema"] = schema
        yield parameter


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` as X: a query string cannot say null, only leave the key out."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    rest = [option for option in options if option != {"type": "null"}]
    if len(rest) == len(options):
        return schema
    outer = {k: v for k, v in schema.items() if k != "anyOf"}
    if outer.get("default", ...) is None:
        del outer["default"]
    if len(rest) == 1:
        return {**rest[0], **outer}
    return {**outer, "anyOf": rest}


def _responses(
    route: Route,
    refs: Refs,
    problem_ref: dict[str, Any],
) -> dict[str, Any]:
    responses: dict[int, dict[str, Any]] = {
        status: _response(status, response, refs) for status, response in route.responses.items()
    }
    # Every route behind a token reads or writes the database: 503 while it is unreachable.
    problems = [*route.errors, *((401, 403, 503) if route.role is not None else ()), 500]
    for status in problems:
        if status in responses:
            continue
        problem: dict[str, Any] = {
            "description": _problem_description(route, status),
            "content": {PROBLEM_TYPE: {"schema": problem_ref}},
        }
        if status == 401:
            problem["headers"] = {
                "WWW-Authenticate": {
                    "description": "the Bearer challenge",
                    "schema": {"type": "string"},
                }
            }
        if status == 503:
            problem["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            }
        responses[status] = problem
    return {str(status): responses[status] for status in sorted(responses)}


def _response(
    status: int,
    response: Response,
    refs: Refs,
) -> dict[str, Any]:
    described: dict[str, Any] = {"description": response.description}
    if status in NO_BODY_STATUSES:
        return described
    schema: dict[str, Any]
    if response.model is not None:
        schema = refs[(response.model, "serialization")]
    elif response.content_type.startswith("text/"):
        schema = {"type": "string"}
    else:
        schema = {}
    described["content"] = {response.content_type: {"schema": schema}}
    return described


def _problem_description(route: Route, status: int) -> str:
    if status == 403 and route.role is not None:
        return f"the token's role is below {route.role}"
    if status in _PROBLEM_DESCRIPTIONS:
        return _PROBLEM_DESCRIPTIONS[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _prune_components(document: dict[str, Any]) -> None:
    """Drop component schemas nothing refers to (a query model's own schema, once its fields
    became parameters), keeping whatever a kept schema refers to."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    reachable: set[str] = set()
    pending = list(_refs_in({k: v for k, v in document.items() if k != "components"}))
    while pending:
        name = pending.pop()
        if name in reachable or name not in schemas:
            continue
        reachable.add(name)
        pending.extend(_refs_in(schemas[name]))
    for name in list(schemas):
        if name not in reachable:
            del schemas[name]


def _refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                yield value.removeprefix(_REF_PREFIX)
            else:
                yield from _refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs_in(item)


_DOCUMENTS: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


def document_of(app: web.Application) -> bytes:
    """The app's document as JSON, generated from its registered routes on first use."""
    cached = _DOCUMENTS.get(app)
    if cached is None:
        specs: dict[object, Route] = app[ROUTE_SPEC]
        document = build_openapi(list(specs.values()))
        cached = _DOCUMENTS[app] = json.dumps(document, ensure_ascii=False).encode()
    return cached


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=document_of(request.app), content_type="application/json")


ROUTES = [
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        "getOpenApi",
        "This API's OpenAPI 3.1 document",
        "docs",
        None,
        {200: Response("the OpenAPI document", None, "application/json")},
        description="Generated from the route table; Swagger UI at /docs reads it.",
    ),
]
