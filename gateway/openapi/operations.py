"""One OpenAPI operation per HTTP binding, and per gateway-own route."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool

from gateway import cloudevents, transcoding
from gateway.descriptors import HttpBinding
from gateway.openapi.parameters import PATH_VARIABLE, query_parameters, route_parameters
from gateway.openapi.problems import REQUEST_ID_HEADER, error_statuses, problem_refs
from gateway.openapi.schemas import Schemas

# What a google.api.HttpBody answer of an RPC can be, the HTML first (the
# proto says HTML unless PDF is asked for); any other HttpBody is octet-stream.
HTTP_BODY_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "tally.invoicing.v1.InvoicingService.RenderInvoice": ("text/html", "application/pdf"),
    "tally.invoicing.v1.InvoicingService.RenderInvoicePdf": ("application/pdf",),
}

SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "portal": [{"bearer": []}],
    "admin": [{"bearer": []}],
    # A service JWT or the static key, either one.
    "internal": [{"bearer": []}, {"apiKey": []}],
}


@dataclass(frozen=True)
class GatewayRoute:
    """One of the gateway's own routes, documented beside the transcoded ones.

    ``response`` is the JSON schema of the 200 answer; it may reference proto
    messages and ``components`` by :func:`schema_ref`. ``request`` names the
    proto message whose fields are the query parameters, as on a transcoded
    GET (``query`` adds others). ``errors`` defaults to
    the group's policy (:func:`error_statuses`); ``secured=False`` for a route
    that checks no token (the Stripe webhook: Stripe signs the body instead).
    """

    method: str
    path: str
    operation_id: str
    summary: str
    response: dict[str, Any] | None
    description: str = ""
    request: str | None = None
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    request_body: dict[str, Any] | None = None
    example: Any = None
    errors: tuple[int, ...] | None = None
    secured: bool = True
    components: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def ok_response(binding: HttpBinding, schemas: Schemas) -> dict[str, Any]:
    method = binding.method
    answer = method.output_type
    if binding.response_body:
        target = answer.fields_by_name[binding.response_body]
        answer = target.message_type if target.message_type is not None else answer
    if answer.full_name == transcoding.HTTP_BODY:
        kinds = HTTP_BODY_MEDIA_TYPES.get(method.full_name, ("application/octet-stream",))
        content = {kind: {"schema": {"type": "string", "contentMediaType": kind}} for kind in kinds}
        return {
            "description": "The document itself",
            "headers": REQUEST_ID_HEADER,
            "content": content,
        }
    return {
        "description": "OK",
        "headers": REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": schemas.ref(answer)}},
    }


def camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_.]", text) if part)


def base_operation_id(binding: HttpBinding) -> str:
    # portal + Catalog + GetPackage: a generator's portal_catalog_get_package.
    group = transcoding.group_of(binding.path) or "public"
    return f"{group}{binding.service.capitalize()}{binding.method.name}"


def operation_ids(bindings: Iterable[HttpBinding]) -> list[str]:
    """Unique and stable ids: group, service and method; a second binding of a
    method in the same group adds ``By`` and the path variables the first one has not."""
    ids: list[str] = []
    first: dict[str, HttpBinding] = {}
    for binding in bindings:
        base = base_operation_id(binding)
        if base not in first:
            first[base] = binding
            ids.append(base)
            continue
        known = {m.group(1).strip() for m in PATH_VARIABLE.finditer(first[base].path)}
        own = [m.group(1).strip() for m in PATH_VARIABLE.finditer(binding.path)]
        suffix = "".join(camel(v) for v in own if v not in known) or "Again"
        candidate = f"{base}By{suffix}"
        n = 2
        while candidate in ids:
            candidate, n = f"{base}By{suffix}{n}", n + 1
        ids.append(candidate)
    return ids


def operation(binding: HttpBinding, operation_id: str, schemas: Schemas) -> dict[str, Any]:
    method = binding.method
    group = transcoding.group_of(binding.path)
    streaming = bool(method.client_streaming or method.server_streaming)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [binding.service],
        "summary": method.name,
        "description": f"`{method.full_name}` ({group} route)",
        "parameters": route_parameters(binding, schemas),
        "responses": {
            "200": ok_response(binding, schemas),
            **problem_refs(error_statuses(binding.verb, bool(binding.body), streaming)),
        },
        "security": SECURITY.get(group or "", []),
    }
    if binding.body:
        body_type = (
            method.input_type
            if binding.body == "*"
            else method.input_type.fields_by_name[binding.body].message_type
        )
        schema = schemas.ref(body_type) if body_type is not None else {"type": "string"}
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        if binding.body == "*":
            # The usage routes also take CloudEvents JSON (see gateway/cloudevents.py).
            for kind in cloudevents.MEDIA_TYPES:
                if cloudevents.accepts(method.input_type, kind):
                    content[kind] = {"schema": cloudevents.schema(kind == cloudevents.SINGLE)}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def gateway_operation(route: GatewayRoute, schemas: Schemas) -> dict[str, Any]:
    group = transcoding.group_of(route.path)
    path_names = re.findall(r"\{([^}]+)\}", route.path)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_names
    ]
    if route.request is not None:
        request = descriptor_pool.Default().FindMessageTypeByName(route.request)
        parameters += query_parameters(request, set(path_names), schemas)
    for name, schema in route.query.items():
        parameter = {"name": name, "in": "query", "required": False, "schema": schema}
        if schema.get("type") == "array":
            parameter |= {"style": "form", "explode": True}
        parameters.append(parameter)
    parameters += [
        {"name": name, "in": "header", "required": True, "schema": schema}
        for name, schema in route.headers.items()
    ]
    ok: dict[str, Any] = {"description": "OK", "headers": REQUEST_ID_HEADER}
    if route.response is not None:
        media: dict[str, Any] = {"schema": route.response}
        if route.example is not None:
            media["example"] = route.example
        ok["content"] = {"application/json": media}
    errors = route.errors
    if errors is None:
        errors = error_statuses(route.method, route.request_body is not None)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": ["gateway"],
        "summary": route.summary,
        "parameters": parameters,
        "responses": {"200": ok, **problem_refs(errors)},
        "security": SECURITY.get(group or "", []) if route.secured else [],
    }
    if route.description:
        operation["description"] = route.description
    if route.request_body is not None:
        operation["requestBody"] = route.request_body
    return operation
