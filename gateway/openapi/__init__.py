"""OpenAPI 3.1 generated from the same descriptors the gateway transcodes.

Field names follow the protobuf JSON mapping (lowerCamelCase); 64-bit integers
are strings there, as ``json_format`` writes them. Query parameters are what
``transcoding.build_request`` accepts: every request field that is neither a
path variable nor in the body, nested ones dotted (``interval.startTime``).
Errors are the gateway's problem documents, per status its policy can answer.
The gateway's own routes (not from protos) come in as :class:`GatewayRoute`s
(``gateway/docs.py``), so one builder applies the same security and errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.descriptors import http_bindings
from gateway.openapi.operations import (
    HTTP_BODY_MEDIA_TYPES,
    SECURITY,
    GatewayRoute,
    gateway_operation,
    operation,
    operation_ids,
)
from gateway.openapi.parameters import openapi_path, parameter_name
from gateway.openapi.problems import PROBLEM_SCHEMAS, error_statuses, problem_components
from gateway.openapi.schemas import SCHEMA_REF, Schemas, nullable, schema_ref

__all__ = [
    "HTTP_BODY_MEDIA_TYPES",
    "SCHEMA_REF",
    "SECURITY",
    "GatewayRoute",
    "error_statuses",
    "nullable",
    "openapi_document",
    "openapi_path",
    "operation_ids",
    "parameter_name",
    "schema_ref",
]


def openapi_document(
    gateway_routes: Iterable[GatewayRoute] = (),
    title: str = "Tally billing API",
    version: str = "v1",
) -> dict[str, Any]:
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    bindings = list(http_bindings())
    for binding, operation_id in zip(bindings, operation_ids(bindings), strict=True):
        entry = paths.setdefault(openapi_path(binding.path), {})
        if binding.verb in entry:  # same route bound twice: keep the first
            continue
        entry[binding.verb] = operation(binding, operation_id, schemas)
    extra: dict[str, Any] = dict(PROBLEM_SCHEMAS)
    for route in gateway_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = gateway_operation(route, schemas)
        extra.update(route.components)
    schemas.components.update(extra)
    schemas.resolve(paths)
    schemas.resolve(extra)
    statuses = {
        int(status)
        for item in paths.values()
        for op in item.values()
        for status in op["responses"]
        if status != "200"
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": problem_components(statuses),
            "headers": {
                "RequestId": {
                    "schema": {"type": "string"},
                    "description": "the request's id (the caller's when sane), also in the logs",
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
        "security": [{"bearer": []}],
    }
