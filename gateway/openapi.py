"""OpenAPI 3.1 generated from the same descriptors the gateway transcodes.

Field names follow the protobuf JSON mapping (lowerCamelCase); 64-bit integers
are strings there, as ``json_format`` writes them.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from gateway import cloudevents
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

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
}

_PARAM = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


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


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder stops recursion
            self.components[message.full_name] = self._object(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def _object(self, message: Descriptor) -> dict[str, Any]:
        properties = {f.json_name: self._field(f) for f in message.fields}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return _enum(field.enum_type)
        return dict(_SCALARS[field.type])


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {"type": "string", "enum": [v.name for v in enum.values]}


def _operation(binding: HttpBinding, schemas: _Schemas) -> dict[str, Any]:
    method = binding.method
    path_params = [m.group(1).strip() for m in _PARAM.finditer(binding.path)]
    operation: dict[str, Any] = {
        "operationId": f"{method.containing_service.name}_{method.name}",
        "tags": [binding.service],
        "summary": method.name,
        "parameters": [
            {
                "name": parameter_name(p),
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": f"request field `{p}`",
            }
            for p in path_params
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": schemas.ref(method.output_type)}},
            },
            "default": {
                "description": "Error (RFC 9457 problem)",
                "content": {"application/problem+json": {"schema": {"type": "object"}}},
            },
        },
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


def openapi_document(title: str = "Tally billing API", version: str = "v1") -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for binding in http_bindings():
        path = openapi_path(binding.path)
        operation = _operation(binding, schemas)
        entry = paths.setdefault(path, {})
        if binding.verb in entry:  # same route bound twice: keep the first, name both
            continue
        entry[binding.verb] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearer": []}],
    }
