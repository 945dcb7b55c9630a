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

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway import cloudevents, transcoding
from gateway.descriptors import HttpBinding, http_bindings

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

# Their JSON mapping is not an object of their fields.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "uint32"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
}

# What a google.api.HttpBody answer of an RPC can be, the HTML first (the
# proto says HTML unless PDF is asked for); any other HttpBody is octet-stream.
HTTP_BODY_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "tally.invoicing.v1.InvoicingService.RenderInvoice": ("text/html", "application/pdf"),
    "tally.invoicing.v1.InvoicingService.RenderInvoicePdf": ("application/pdf",),
}

_PARAM = re.compile(r"\{([^}=]+)(=[^}]*)?\}")
SCHEMA_REF = "#/components/schemas/"
PROBLEM = "Problem"
_PROBLEM_MEDIA = "application/problem+json"
REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}

# What every route can answer by the gateway's policy (docs/gateway.md): a bad
# field, no or a bad token, a missing permission, a flag off or an unknown or
# other tenant's id, the rate limit, and a service failing, away or too slow.
COMMON_ERRORS = (400, 401, 403, 404, 429, 500, 503, 504)
_HEADERS_BY_STATUS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "seconds until the rate limit's window frees a slot",
        }
    },
}
_STATUS_MEANING = {
    400: "a request field is invalid (`violations` names it) or the state forbids the change",
    401: "no token, or a token that does not verify",
    403: "the token lacks the permission or role, or sets a staff-only field",
    404: "no such route or resource (a disabled route group and another tenant's ids too)",
    409: "already exists, or a concurrent change won",
    415: "a CloudEvents media type on a route that does not take it",
    429: "over the rate limit; retry after `Retry-After` seconds",
    500: "the service failed (no detail is given)",
    501: "not served over HTTP (a client-streaming RPC: use gRPC or the batch route)",
    503: "the service is not reachable",
    504: "the service did not answer within the gateway's deadline",
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "portal": [{"bearer": []}],
    "admin": [{"bearer": []}],
    # A service JWT or the static key, either one.
    "internal": [{"bearer": []}, {"apiKey": []}],
}


def parameter_name(field_path: str) -> str:
    """A path variable's OpenAPI name: the last segment of its field path.

    ``{metric.metric_id}`` and ``{metric_id}`` bind the same URL segment, and
    OpenAPI forbids two template-equivalent paths, so both are ``metric_id``
    and their operations share one path item.
    """
    return field_path.strip().rsplit(".", 1)[-1]


def openapi_path(template: str) -> str:
    """``/metrics/{metric.metric_id=*}`` as OpenAPI writes it: ``/metrics/{metric_id}``."""
    return _PARAM.sub(lambda m: "{" + parameter_name(m.group(1)) + "}", template)


def schema_ref(name: str) -> dict[str, Any]:
    """A reference to a component schema: a proto message's full name or a gateway one."""
    return {"$ref": SCHEMA_REF + name}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


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


def error_statuses(method: str, body: bool = False, streaming: bool = False) -> tuple[int, ...]:
    """The problem statuses a route can answer: the common ones, 409 for mutations, ..."""
    extra = []
    if method.lower() != "get":
        extra.append(409)
    if body:
        extra.append(415)
    if streaming:
        extra.append(501)
    return tuple(sorted({*COMMON_ERRORS, *extra}))


def _response_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"Status{status}"


def _field_behaviors(f: FieldDescriptor) -> list[int]:
    return list(f.GetOptions().Extensions[field_behavior_pb2.field_behavior])


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder stops recursion
            self.components[message.full_name] = self._object(message)
        return schema_ref(message.full_name)

    def _object(self, message: Descriptor) -> dict[str, Any]:
        properties = {f.json_name: self.field(f) for f in message.fields}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(f)
        schema = {"type": "array", "items": single} if f.is_repeated else single
        if field_behavior_pb2.OUTPUT_ONLY in _field_behaviors(f):
            schema = {**schema, "readOnly": True}
        return schema

    def single(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.message_type is not None:
            return self.ref(f.message_type)
        if f.enum_type is not None:
            # One component per enum: a generator makes one type of it, not one per use.
            self.components.setdefault(f.enum_type.full_name, _enum(f.enum_type))
            return schema_ref(f.enum_type.full_name)
        return dict(_SCALARS[f.type])

    def resolve(self, node: Any) -> None:
        """Adds the proto messages a hand-written schema references by name."""
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
                name = ref.removeprefix(SCHEMA_REF)
                if name not in self.components:
                    pool = descriptor_pool.Default()
                    try:
                        self.ref(pool.FindMessageTypeByName(name))
                    except KeyError:
                        self.components[name] = _enum(pool.FindEnumTypeByName(name))
            for value in node.values():
                self.resolve(value)
        elif isinstance(node, list):
            for item in node:
                self.resolve(item)


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {"type": "string", "enum": [v.name for v in enum.values]}


def _query_fields(
    message: Descriptor, excluded: set[str], prefix: str = "", json_prefix: str = ""
) -> Iterator[tuple[str, str, FieldDescriptor]]:
    """(JSON dotted name, proto dotted path, field) of every field a query can set."""
    for f in message.fields:
        path, name = prefix + f.name, json_prefix + f.json_name
        if path in excluded:
            continue
        kind = f.message_type
        if kind is None or kind.full_name in transcoding.TEXT_MESSAGES:
            yield name, path, f
        elif not f.is_repeated and not kind.GetOptions().map_entry and name.count(".") < 4:
            # Nested messages as dotted names; repeated messages and maps cannot be.
            yield from _query_fields(kind, excluded, path + ".", name + ".")


def _query_parameters(
    message: Descriptor, excluded: set[str], schemas: _Schemas
) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name, path, f in _query_fields(message, excluded):
        single = schemas.single(f)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"request field `{path}`",
        }
        if f.is_repeated:
            # Repeat the parameter once per value: ?state=A&state=B
            parameter |= {"schema": {"type": "array", "items": single}, "explode": True}
            parameter["style"] = "form"
        else:
            parameter["schema"] = single
        parameters.append(parameter)
    return parameters


def _parameters(binding: HttpBinding, schemas: _Schemas) -> list[dict[str, Any]]:
    request = binding.method.input_type
    path_fields = [m.group(1).strip() for m in _PARAM.finditer(binding.path)]
    parameters: list[dict[str, Any]] = []
    for p in path_fields:
        f = transcoding.field_at(request, p)
        parameters.append(
            {
                "name": parameter_name(p),
                "in": "path",
                "required": True,
                "schema": schemas.single(f) if f is not None else {"type": "string"},
                "description": f"request field `{p}`",
            }
        )
    if binding.body == "*":
        return parameters  # everything else is in the body
    excluded = set(path_fields)
    if binding.body:
        excluded.add(binding.body)
    if binding.path.startswith(transcoding.PORTAL_PREFIX):
        excluded.add("org_id")  # always the token's on portal routes
    return parameters + _query_parameters(request, excluded, schemas)


def _problems(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(s): {"$ref": f"#/components/responses/{_response_name(s)}"} for s in sorted(statuses)
    }


def _ok_response(binding: HttpBinding, schemas: _Schemas) -> dict[str, Any]:
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


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_.]", text) if part)


def _base_operation_id(binding: HttpBinding) -> str:
    # portal + Catalog + GetPackage: a generator's portal_catalog_get_package.
    group = transcoding.group_of(binding.path) or "public"
    return f"{group}{binding.service.capitalize()}{binding.method.name}"


def operation_ids(bindings: Iterable[HttpBinding]) -> list[str]:
    """Unique and stable ids: group, service and method; a second binding of a
    method in the same group adds ``By`` and the path variables the first one has not."""
    ids: list[str] = []
    first: dict[str, HttpBinding] = {}
    for binding in bindings:
        base = _base_operation_id(binding)
        if base not in first:
            first[base] = binding
            ids.append(base)
            continue
        known = {m.group(1).strip() for m in _PARAM.finditer(first[base].path)}
        own = [m.group(1).strip() for m in _PARAM.finditer(binding.path)]
        suffix = "".join(_camel(v) for v in own if v not in known) or "Again"
        candidate = f"{base}By{suffix}"
        n = 2
        while candidate in ids:
            candidate, n = f"{base}By{suffix}{n}", n + 1
        ids.append(candidate)
    return ids


def _operation(binding: HttpBinding, operation_id: str, schemas: _Schemas) -> dict[str, Any]:
    method = binding.method
    group = transcoding.group_of(binding.path)
    streaming = bool(method.client_streaming or method.server_streaming)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [binding.service],
        "summary": method.name,
        "description": f"`{method.full_name}` ({group} route)",
        "parameters": _parameters(binding, schemas),
        "responses": {
            "200": _ok_response(binding, schemas),
            **_problems(error_statuses(binding.verb, bool(binding.body), streaming)),
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


def _gateway_operation(route: GatewayRoute, schemas: _Schemas) -> dict[str, Any]:
    group = transcoding.group_of(route.path)
    path_names = re.findall(r"\{([^}]+)\}", route.path)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_names
    ]
    if route.request is not None:
        request = descriptor_pool.Default().FindMessageTypeByName(route.request)
        parameters += _query_parameters(request, set(path_names), schemas)
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
        "responses": {"200": ok, **_problems(errors)},
        "security": SECURITY.get(group or "", []) if route.secured else [],
    }
    if route.description:
        operation["description"] = route.description
    if route.request_body is not None:
        operation["requestBody"] = route.request_body
    return operation


def _problem_components(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        _response_name(s): {
            "description": f"{_response_name(s)}: {_STATUS_MEANING.get(s, 'an error')}",
            "headers": {**REQUEST_ID_HEADER, **_HEADERS_BY_STATUS.get(s, {})},
            "content": {_PROBLEM_MEDIA: {"schema": schema_ref(PROBLEM)}},
        }
        for s in sorted(statuses)
    }


# The body of every error answer (gateway/problems.py).
PROBLEM_SCHEMAS: dict[str, dict[str, Any]] = {
    PROBLEM: {
        "type": "object",
        "description": "An RFC 9457 problem document",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "reason": {
                "type": "string",
                "description": "stable: the service's ErrorInfo reason or the gateway's own",
                "example": "INVALID_REQUEST_FIELD",
            },
            "violations": {"type": "array", "items": schema_ref("Violation")},
            "requestId": {"type": "string"},
        },
    },
    "Violation": {
        "type": "object",
        "required": ["field", "description"],
        "properties": {
            "field": {
                "type": "string",
                "description": "proto names, dotted",
                "example": "metric.code",
            },
            "description": {"type": "string"},
        },
    },
}


def openapi_document(
    gateway_routes: Iterable[GatewayRoute] = (),
    title: str = "Tally billing API",
    version: str = "v1",
) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    bindings = list(http_bindings())
    for binding, operation_id in zip(bindings, operation_ids(bindings), strict=True):
        entry = paths.setdefault(openapi_path(binding.path), {})
        if binding.verb in entry:  # same route bound twice: keep the first
            continue
        entry[binding.verb] = _operation(binding, operation_id, schemas)
    extra: dict[str, Any] = dict(PROBLEM_SCHEMAS)
    for route in gateway_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _gateway_operation(route, schemas)
        extra.update(route.components)
    schemas.components.update(extra)
    schemas.resolve(paths)
    schemas.resolve(extra)
    statuses = {
        int(status)
        for item in paths.values()
        for operation in item.values()
        for status in operation["responses"]
        if status != "200"
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": _problem_components(statuses),
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
