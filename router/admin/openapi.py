"""The admin API's OpenAPI 3.1 document, made from the routes as the app adds them.

Every admin route is added with :func:`add_route`, which takes the route's
:class:`Operation` (what it takes and what it answers, declared in
:mod:`router.admin.schemas_routes`) beside its handler, and keeps it in the app's registry;
:func:`document` turns the registry into the document, and ``GET /admin/openapi.json`` serves
it. A route added some other way is missing from the document, and the tests say so. Path
parameters (``{app}``, ``{id}``, ...) are declared once by name (:data:`PATH_PARAMETERS`). A
query parameter given empty counts as left out; one the route does not declare, or one given
twice that it takes once, is refused with 400 before the handler runs.

Every operation answers 401 without a known bearer token (except the document itself: it is
the same for every deployment and names nothing secret, see docs/security.md), 403 to a viewer
when it is an operator's, 400 with a reason for input it cannot take, and 503 when a database
or RabbitMQ it needs cannot be reached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from router.admin.responses import json_response
from router.admin.schemas import COMPONENTS, ERROR, PATH_PARAMETERS, Param, Schema
from router.errors import InvalidInput

#: Where the document is served.
DOCUMENT_PATH = "/admin/openapi.json"
#: The security scheme's name in the document.
BEARER = "bearer"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: A query parameter given empty is one left out (as an HTML form sends it).
_LEFT_OUT: Schema = {"type": "string", "maxLength": 0}


@dataclass(frozen=True, slots=True)
class Answer:
    """One status an operation answers with: what it means, and its JSON body's schema (None:
    no body)."""

    description: str
    schema: Schema | None = None
    #: The headers it always carries, and what each says.
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """What one route takes (query parameters, a JSON body) and answers, for the document."""

    summary: str
    tag: str
    answers: Mapping[int, Answer]
    query: tuple[Param, ...] = ()
    #: The JSON body's schema (an object); None: the route reads no body.
    body: Schema | None = None
    #: Whether the body may be left out (an empty body is ``{}``).
    body_optional: bool = False
    #: Only an operator may call it (a viewer gets 403).
    operator: bool = False
    #: A viewer may call it but not with every option (``reveal``): 403 is possible too.
    may_forbid: bool = False
    #: Whether a bearer token is needed.
    secured: bool = True

    def query_names(self) -> frozenset[str]:
        """The query parameters it takes: a handler refuses any other with 400."""
        return frozenset(param.name for param in self.query)

    def repeatable(self) -> frozenset[str]:
        """The query parameters it takes more than once (a list of values)."""
        return frozenset(param.name for param in self.query if param.schema.get("type") == "array")

    def body_fields(self) -> frozenset[str]:
        """The fields its JSON body may have: a handler refuses any other with 400."""
        return frozenset((self.body or {}).get("properties", {}))


@dataclass(slots=True)
class Registry:
    """The operations of an app's routes, by method and path, in the order they were added."""

    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)


OPERATIONS = web.AppKey("openapi_operations", Registry)


def add_route(
    app: web.Application, method: str, path: str, handler: _Handler, operation: Operation
) -> None:
    """Add ``method path`` to ``app``'s router (a ``GET`` answers ``HEAD`` too) and
    ``operation`` to its document; :class:`ValueError` for a path parameter that
    :data:`PATH_PARAMETERS` does not declare."""
    unknown = set(_PLACEHOLDER.findall(path)) - set(PATH_PARAMETERS)
    if unknown:
        raise ValueError(f"{path}: no declaration of the path parameter {sorted(unknown)[0]}")
    registry = app.setdefault(OPERATIONS, Registry())
    registry.operations[method.upper(), path] = operation
    checked = _query_checked(handler, operation)
    if method.upper() == "GET":
        app.router.add_get(path, checked)
    else:
        app.router.add_route(method.upper(), path, checked)


def _query_checked(handler: _Handler, operation: Operation) -> _Handler:
    """``handler``, refusing with 400 a query parameter the operation does not take (a typo
    would otherwise widen a list silently), or takes once and is given twice
    (``?limit=5&limit=7``: which one was meant?)."""
    known, repeatable = operation.query_names(), operation.repeatable()

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        for name in request.query:
            if name not in known:
                raise InvalidInput(f"unknown query parameter {name!r}")
            if name not in repeatable and len(request.query.getall(name)) > 1:
                raise InvalidInput("is given more than once", field=name)
        return await handler(request)

    return checked


def add_document_route(app: web.Application) -> None:
    """Serve the document at :data:`DOCUMENT_PATH` (without a token: see the module's
    docstring)."""
    add_route(app, "GET", DOCUMENT_PATH, _serve_document, DOCUMENT)


async def _serve_document(request: web.Request) -> web.Response:
    return json_response(document(request.app))


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route added to ``app`` with :func:`add_route`."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), operation in app[OPERATIONS].operations.items():
        paths.setdefault(path, {})[method.lower()] = _operation_json(method, path, operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "attentive-router admin API",
            "version": "1",
            "description": (
                "Claims, applications, parked events (dead letters, unrouted, invalid), their "
                "replay and purge jobs, the audit log and the archive's history, behind named "
                "bearer tokens: a viewer reads, an operator also changes."
            ),
        },
        "paths": _named(paths),
        "components": {
            "securitySchemes": {BEARER: {"type": "http", "scheme": "bearer"}},
            "schemas": {name: _named(schema, own=schema) for name, schema in COMPONENTS.items()},
        },
        "security": [{BEARER: []}],
    }


_NAMES = {id(schema): name for name, schema in COMPONENTS.items()}


def _named(node: Any, own: Schema | None = None) -> Any:
    """``node`` with each schema of :data:`~router.admin.schemas.COMPONENTS` in it (but
    ``own``, the one being defined) given as a ``$ref`` to its name."""
    if isinstance(node, dict):
        name = _NAMES.get(id(node))
        if name is not None and node is not own:
            return {"$ref": f"#/components/schemas/{name}"}
        return {key: _named(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_named(item) for item in node]
    return node


def _operation_json(method: str, path: str, operation: Operation) -> dict[str, Any]:
    parameters = [_param_json(PATH_PARAMETERS[name], "path") for name in _placeholders(path)]
    parameters += [_param_json(param, "query") for param in operation.query]
    answers = dict(operation.answers)
    if operation.query or operation.body is not None or parameters:
        answers.setdefault(400, Answer("the input cannot be taken: the error says why", ERROR))
    if operation.operator or operation.may_forbid:
        answers.setdefault(403, Answer("a viewer's token: only an operator may", ERROR))
    if operation.secured:
        answers.setdefault(401, _UNAUTHORIZED)
        answers.setdefault(503, _UNAVAILABLE)
    body: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {str(status): _answer_json(answers[status]) for status in sorted(answers)},
    }
    if operation.operator:
        body["description"] = "An operator's: a viewer's token gets 403."
    if parameters:
        body["parameters"] = parameters
    if operation.body is not None:
        body["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": operation.body}},
        }
    if not operation.secured:
        body["security"] = []
    return body


def _param_json(param: Param, where: Literal["path", "query"]) -> dict[str, Any]:
    schema = param.schema
    if where == "query" and schema.get("type") not in ("string", "array"):
        schema = {"anyOf": [schema, _LEFT_OUT]}
    return {
        "name": param.name,
        "in": where,
        "required": where == "path" or param.required,
        "description": param.description,
        "schema": schema,
    } | ({"style": "form", "explode": True} if param.schema.get("type") == "array" else {})


def _answer_json(answer: Answer) -> dict[str, Any]:
    data: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        data["content"] = {"application/json": {"schema": answer.schema}}
    if answer.headers:
        data["headers"] = {
            name: {"description": said, "required": True, "schema": {"type": "string"}}
            for name, said in answer.headers.items()
        }
    return data


def _placeholders(path: str) -> list[str]:
    return _PLACEHOLDER.findall(path)


def _operation_id(method: str, path: str) -> str:
    words = [word.strip("{}") for word in path.split("/") if word and word != "admin"]
    return "_".join([method.lower(), *words]).replace("-", "_").replace(".", "_")


_UNAUTHORIZED = Answer(
    "no known bearer token", ERROR, {"WWW-Authenticate": "Bearer: the scheme it takes"}
)
_UNAVAILABLE = Answer(
    "a database or RabbitMQ it needs is unavailable",
    ERROR,
    {"Retry-After": "seconds to wait before asking again"},
)

#: The document's own route.
DOCUMENT = Operation(
    summary="This document (no token needed: it names nothing secret)",
    tag="document",
    answers={200: Answer("the OpenAPI 3.1 document", {"type": "object"})},
    secured=False,
)

__all__ = [
    "BEARER",
    "DOCUMENT",
    "DOCUMENT_PATH",
    "OPERATIONS",
    "Answer",
    "Operation",
    "Registry",
    "add_document_route",
    "add_route",
    "document",
]
