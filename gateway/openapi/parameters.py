"""Path and query parameters: what ``transcoding.build_request`` accepts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway import transcoding
from gateway.descriptors import HttpBinding
from gateway.openapi.schemas import Schemas

PATH_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


def parameter_name(field_path: str) -> str:
    """A path variable's OpenAPI name: the last segment of its field path.

    ``{metric.metric_id}`` and ``{metric_id}`` bind the same URL segment, and
    OpenAPI forbids two template-equivalent paths, so both are ``metric_id``
    and their operations share one path item.
    """
    return field_path.strip().rsplit(".", 1)[-1]


def openapi_path(template: str) -> str:
    """``/metrics/{metric.metric_id=*}`` as OpenAPI writes it: ``/metrics/{metric_id}``."""
    return PATH_VARIABLE.sub(lambda m: "{" + parameter_name(m.group(1)) + "}", template)


def query_fields(
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
            yield from query_fields(kind, excluded, path + ".", name + ".")


def query_parameters(
    message: Descriptor, excluded: set[str], schemas: Schemas
) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name, path, f in query_fields(message, excluded):
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


def route_parameters(binding: HttpBinding, schemas: Schemas) -> list[dict[str, Any]]:
    request = binding.method.input_type
    path_fields = [m.group(1).strip() for m in PATH_VARIABLE.finditer(binding.path)]
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
    return parameters + query_parameters(request, excluded, schemas)
