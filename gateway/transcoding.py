"""HTTP <-> gRPC, generically, from the protos' ``google.api.http`` bindings.

Each binding becomes a :class:`Route`: a compiled path template (variables,
nested ``{metric.metric_id}`` included, and the custom ``:verb`` suffix) plus
the generic multicallable that calls the RPC. Nothing here knows any RPC by
name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tally.api.v1 import options_pb2

from gateway import problems
from gateway.descriptors import HttpBinding
from services.kit.rpc.channels import ROUND_ROBIN

# Template variable: {field.path} or {field.path=pattern}
_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
HTTP_BODY = "google.api.HttpBody"

PORTAL_PREFIX = "/portal/billing/"
ADMIN_PREFIX = "/super-admin/billing/"
INTERNAL_PREFIX = "/internal/billing/"


def group_of(path: str) -> str | None:
    for prefix, group in (
        (PORTAL_PREFIX, "portal"),
        (ADMIN_PREFIX, "admin"),
        (INTERNAL_PREFIX, "internal"),
    ):
        if path.startswith(prefix):
            return group
    return None


@dataclass(frozen=True)
class Route:
    binding: HttpBinding
    pattern: re.Pattern[str]
    variables: tuple[str, ...]  # field paths, in the order of the regex groups
    verb_suffix: str  # ":render" or ""
    request_class: type[Message]
    response_class: type[Message]
    rpc_path: str  # /tally.catalog.v1.CatalogService/CreateMetric

    @property
    def http_method(self) -> str:
        return self.binding.verb.upper()

    @property
    def group(self) -> str | None:
        return group_of(self.binding.path)

    @property
    def action(self) -> str:
        return self.binding.method.full_name

    @property
    def streaming(self) -> bool:
        method = self.binding.method
        return bool(method.client_streaming or method.server_streaming)


def _segment_regex(pattern: str | None) -> str:
    # "*" (or no pattern) is one segment; "**" is the rest of the path.
    if pattern in (None, "", "*"):
        return "[^/]+"
    if pattern == "**":
        return ".+"
    parts = []
    for piece in pattern.split("/"):
        parts.append("[^/]+" if piece == "*" else ".+" if piece == "**" else re.escape(piece))
    return "/".join(parts)


def compile_route(binding: HttpBinding) -> Route:
    template = binding.path
    verb_suffix = ""
    # The verb follows the last segment: a ':' after the last '/' and after any '}'.
    tail = template[template.rfind("/") + 1 :]
    if ":" in tail and not tail.endswith("}"):
        colon = template.rfind(":")
        if colon > template.rfind("}"):
            verb_suffix = template[colon:]
            template = template[:colon]
    regex = ""
    variables: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        regex += re.escape(template[position : match.start()])
        regex += f"({_segment_regex(match.group(2))})"
        variables.append(match.group(1).strip())
        position = match.end()
    regex += re.escape(template[position:]) + re.escape(verb_suffix)
    method = binding.method
    return Route(
        binding=binding,
        pattern=re.compile(f"^{regex}$"),
        variables=tuple(variables),
        verb_suffix=verb_suffix,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
        rpc_path=f"/{method.containing_service.full_name}/{method.name}",
    )


class Router:
    """Finds the route of a request; verb routes are tried before plain ones.

    ``/invoices/{invoice_id}`` would otherwise swallow ``/invoices/in_1:render``
    with ``invoice_id = "in_1:render"``.
    """

    def __init__(self, bindings: Iterable[HttpBinding]) -> None:
        routes = [compile_route(b) for b in bindings]
        self.routes: list[Route] = sorted(routes, key=lambda r: (r.verb_suffix == "",))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and its path variables; raises 405 when only the verb is wrong."""
        path_matched = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.http_method != method:
                path_matched = True
                continue
            return route, dict(zip(route.variables, found.groups(), strict=True))
        if path_matched:
            raise problems.Problem(405, f"{method} is not allowed on {path}", "METHOD_NOT_ALLOWED")
        return None


# --- building the request message ---------------------------------------


def field_at(descriptor: Descriptor, path: str) -> FieldDescriptor | None:
    """The field a dotted path names; proto names or JSON names are both accepted."""
    current: Descriptor | None = descriptor
    found: FieldDescriptor | None = None
    for part in path.split("."):
        if current is None:
            return None
        found = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if found is None:
            return None
        current = found.message_type
    return found


def _json_path(descriptor: Descriptor, path: str) -> list[str]:
    names: list[str] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        assert current is not None
        f = current.fields_by_name.get(part) or current.fields_by_camelcase_name[part]
        names.append(f.name)
        current = f.message_type
    return names


# Messages whose JSON form is one scalar, so a path or query value can hold one.
TEXT_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.Int64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.DoubleValue",
    }
)


def _scalar_from_text(field: FieldDescriptor, text: str, name: str) -> Any:
    """Path and query values are text; json_format wants JSON types for bools."""
    message = field.message_type.full_name if field.message_type is not None else None
    if field.type == FieldDescriptor.TYPE_BOOL or message == "google.protobuf.BoolValue":
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise problems.invalid(name, f"expected true or false, got {text!r}")
    if message is not None and message not in TEXT_MESSAGES:
        raise problems.invalid(name, "a message field cannot be given as a query parameter")
    return text


def _place(data: dict[str, Any], names: Sequence[str], value: Any, name: str) -> None:
    node = data
    for part in names[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise problems.invalid(name, "conflicts with another value for the same field")
        node = child
    node[names[-1]] = value


def _normalise_keys(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    """Top-level JSON names to proto names, so path/query values merge with the body."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        f = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        name = f.name if f is not None else key  # unknown: ParseDict names it
        if f is not None and f.message_type is not None and isinstance(value, dict):
            well_known = f.message_type.full_name.startswith("google.protobuf.")
            if not f.message_type.GetOptions().map_entry and not well_known:
                value = _normalise_keys(f.message_type, value)
        result[name] = value
    return result


def parse_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise problems.invalid("body", f"not valid JSON: {exc}", "MALFORMED_JSON") from None


def build_request(
    route: Route,
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: Any,
) -> Message:
    """Body, then query parameters, then path variables, as ``http.proto`` orders them."""
    descriptor: Descriptor = route.request_class.DESCRIPTOR  # type: ignore[assignment]
    body_field = route.binding.body
    data: dict[str, Any] = {}
    if body_field == "*":
        if not isinstance(body, dict):
            raise problems.invalid("body", "expected a JSON object")
        data = _normalise_keys(descriptor, body)
    elif body_field:
        target = descriptor.fields_by_name[body_field]
        if target.message_type is not None and not isinstance(body, dict):
            raise problems.invalid(body_field, "expected a JSON object")
        data[body_field] = (
            _normalise_keys(target.message_type, body) if target.message_type else body
        )

    # Query parameters fill fields the body does not carry (none when body is "*").
    for key, text in query:
        field = field_at(descriptor, key)
        if field is None:
            raise problems.invalid(key, "no such query parameter", "UNKNOWN_QUERY_PARAMETER")
        names = _json_path(descriptor, key)
        if body_field == "*" or (body_field and names[0] == body_field):
            raise problems.invalid(key, "this field belongs in the request body")
        value = _scalar_from_text(field, text, key)
        if field.is_repeated:
            current = data
            for part in names[:-1]:
                # Walk down, refusing a non-object on the way.
                child = current.setdefault(part, {})
                if not isinstance(child, dict):
                    raise problems.invalid(key, "conflicts with another value for the field")
                current = child
            values = current.setdefault(names[-1], [])
            if not isinstance(values, list):
                raise problems.invalid(key, "conflicts with another value for the field")
            values.append(value)
        else:
            _place(data, names, value, key)

    for path, text in path_values.items():
        field = field_at(descriptor, path)
        if field is None:  # a template naming a missing field is a proto bug
            raise problems.Problem(500, f"route variable {path} names no field")
        _place(data, _json_path(descriptor, path), _scalar_from_text(field, text, path), path)

    message = route.request_class()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise problems.from_parse_error(exc) from None
    _refuse_nul(message, "")
    if route.group == "portal":
        _refuse_staff_only(message)
    return message


def is_staff_only(field: FieldDescriptor) -> bool:
    """Whether the field carries ``[(tally.api.v1.staff_only) = true]``."""
    # protoc's .pyi types the extension as a plain FieldDescriptor.
    return bool(field.GetOptions().Extensions[options_pb2.staff_only])  # type: ignore[index]


def staff_only_fields_in(message: Message) -> list[str]:
    """Dotted proto paths of every set staff-only field, at any depth.

    "Set" is what ``ListFields`` reports: a field with presence that is
    present (``optional``, messages), or a scalar holding a non-default value.
    """
    found: list[str] = []

    def walk(msg: Message, prefix: str) -> None:
        for field, value in msg.ListFields():
            path = f"{prefix}{field.name}"
            if is_staff_only(field):
                found.append(path)
                continue
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for key, item in value.items():
                        walk(item, f"{path}.{key}.")
            else:
                for child in value if field.is_repeated else [value]:
                    walk(child, path + ".")

    walk(message, "")
    return found


def _refuse_staff_only(message: Message) -> None:
    """403 when a portal request sets a field only staff may set; never ignored."""
    fields = staff_only_fields_in(message)
    if fields:
        raise problems.Problem(
            403,
            f"only staff may set {', '.join(fields)}; not allowed on portal routes",
            "STAFF_ONLY_FIELD",
            [problems.Violation(f, "only staff may set this field") for f in fields],
        )


def _refuse_nul(message: Message, prefix: str) -> None:
    """A 400 for U+0000 in any string: PostgreSQL text cannot hold it.

    Valid protobuf and JSON, so json_format takes it, but every service stores
    or hashes its strings in PostgreSQL and would fail with INTERNAL (a 500).
    """
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = [(k, v) for k, v in value.items()]
            for key, item in entries:
                if isinstance(key, str) and "\x00" in key:
                    raise problems.invalid(f"{path}", "must not contain U+0000 (NUL)")
                if isinstance(item, str) and "\x00" in item:
                    raise problems.invalid(f"{path}.{key}", "must not contain U+0000 (NUL)")
                if isinstance(item, Message):
                    _refuse_nul(item, f"{path}.{key}.")
        elif field.message_type is not None:
            for child in value if field.is_repeated else [value]:
                _refuse_nul(child, path + ".")
        elif field.type == FieldDescriptor.TYPE_STRING:
            for text in value if field.is_repeated else [value]:
                if "\x00" in text:
                    raise problems.invalid(path, "must not contain U+0000 (NUL)")


# --- tenant isolation helpers ---------------------------------------------------


def org_ids_in(message: Message, field_name: str = "org_id") -> list[tuple[str, str]]:
    """Every non-empty ``org_id`` anywhere in the message, with its field path."""
    found: list[tuple[str, str]] = []

    def walk(msg: Message, prefix: str) -> None:
        for field, value in msg.ListFields():
            path = f"{prefix}{field.name}"
            if field.name == field_name and field.type == FieldDescriptor.TYPE_STRING:
                values = value if field.is_repeated else [value]
                found.extend((path, v) for v in values if v)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                children = value if field.is_repeated else [value]
                for child in children:
                    walk(child, path + ".")

    walk(message, "")
    return found


# --- calling and answering ------------------------------------------------------


def multicallable(
    channel: grpc.aio.Channel, route: Route
) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
    return channel.unary_unary(
        route.rpc_path,
        request_serializer=route.request_class.SerializeToString,
        response_deserializer=route.response_class.FromString,
    )


def response_payload(route: Route, response: Message) -> tuple[bytes, str] | dict[str, Any]:
    """Raw bytes and content type for ``google.api.HttpBody``, else the JSON mapping."""
    target: Message = response
    if route.binding.response_body:
        target = getattr(response, route.binding.response_body)
    if target.DESCRIPTOR.full_name == HTTP_BODY:
        data: bytes = target.data  # type: ignore[attr-defined]
        content_type: str = target.content_type or "application/octet-stream"  # type: ignore[attr-defined]
        return data, content_type
    payload: dict[str, Any] = json_format.MessageToDict(target, preserving_proto_field_name=False)
    return payload


def answers_document(route: Route) -> bool:
    """Whether the route answers a raw ``google.api.HttpBody`` rather than JSON."""
    message = route.response_class.DESCRIPTOR
    if route.binding.response_body:
        field = message.fields_by_name[route.binding.response_body]
        return field.message_type is not None and field.message_type.full_name == HTTP_BODY
    return bool(message.full_name == HTTP_BODY)


# Response metadata a service may send with a document, passed on as HTTP
# headers: HttpBody carries only a content type, not e.g. a file name. Only
# these, so a service cannot set arbitrary headers on the gateway's answer.
FORWARDED_HEADERS = ("content-disposition",)


def forwarded_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The ``FORWARDED_HEADERS`` among a call's initial metadata."""
    return {
        key: value
        for key, value in metadata or ()
        if key in FORWARDED_HEADERS and isinstance(value, str)
    }


def idempotent_methods(routes: Iterable[Route]) -> dict[str, set[str]]:
    """Per gRPC service, the methods bound only to GET: safe to retry on UNAVAILABLE."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for route in routes:
        method = route.binding.method
        key = (method.containing_service.full_name, method.name)
        verbs.setdefault(key, set()).add(route.http_method)
    result: dict[str, set[str]] = {}
    for (service, method_name), seen in verbs.items():
        if seen == {"GET"}:
            result.setdefault(service, set()).add(method_name)
    return result


def service_config(service_full_name: str, methods: Iterable[str]) -> str:
    """gRPC service config: round robin over replicas, idempotent reads retried on UNAVAILABLE."""
    names = [{"service": service_full_name, "method": m} for m in sorted(methods)]
    # Round robin over every replica the address resolves to, reads or not.
    config: dict[str, Any] = dict(ROUND_ROBIN)
    if names:
        config["methodConfig"] = [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)
