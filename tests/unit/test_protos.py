"""The protobuf API keeps the conventions the gateway and the services rely on.

Runs on the generated code (gen/, produced by `python protos/generate.py`):
every service is importable, every RPC is reachable over HTTP under one of the
three route groups, lists paginate, mutations are idempotent, enums start at
*_UNSPECIFIED = 0, instants are *_time Timestamps, and every event message
names its NATS subject. `buf lint` (python protos/generate.py lint) checks the
Buf style rules; this test checks what buf cannot.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import tally
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from tally.events.v1 import options_pb2

SERVICES = {
    "tally.catalog.v1.CatalogService": "tally.catalog.v1.catalog_pb2",
    "tally.subscriptions.v1.SubscriptionsService": "tally.subscriptions.v1.subscriptions_pb2",
    "tally.usage.v1.UsageService": "tally.usage.v1.usage_pb2",
    "tally.invoicing.v1.InvoicingService": "tally.invoicing.v1.invoicing_pb2",
    "tally.payments.v1.PaymentsService": "tally.payments.v1.payments_pb2",
    "tally.audit.v1.AuditService": "tally.audit.v1.audit_pb2",
}
# Served by every service's process; the gateway merges the five itself
# (GET /super-admin/billing/v1/audit), so no binding routes it to one service.
UNROUTED = {"tally.audit.v1.AuditService"}
EVENT_FILES = {
    "catalog_events": "tally.catalog.",
    "subscriptions_events": "tally.subscriptions.",
    "usage_events": "tally.usage.",
    "invoicing_events": "tally.invoicing.",
    "payments_events": "tally.payments.",
    "kit_events": "tally.kit.",
}
ROUTE_PREFIXES = ("/portal/billing/v1/", "/super-admin/billing/v1/", "/internal/billing/v1/")
MUTATING_PREFIXES = (
    "Create", "Update", "Delete", "Publish", "Archive", "Cancel", "Change", "Pause",
    "Resume", "Record", "Finalize", "Void", "Mark", "Issue", "Attach", "Detach", "Set",
    "Pay", "Refund", "Run", "Sync", "Backfill", "Close",
)  # fmt: skip
SUBJECT = re.compile(r"^tally\.[a-z]+(\.[a-z][a-z_]*)+$")


def _modules() -> list[ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(tally.__path__, "tally.")
        if info.name.endswith("_pb2")
    ]


MODULES = _modules()
FILES: list[FileDescriptor] = [m.DESCRIPTOR for m in MODULES]


def _messages(container: FileDescriptor | Descriptor) -> Iterator[Descriptor]:
    types = (
        container.message_types_by_name.values()
        if isinstance(container, FileDescriptor)
        else container.nested_types
    )
    for message in types:
        if message.GetOptions().map_entry:
            continue
        yield message
        yield from _messages(message)


def _enums() -> Iterator[EnumDescriptor]:
    for file in FILES:
        yield from file.enum_types_by_name.values()
        for message in _messages(file):
            yield from message.enum_types


def _methods() -> list[MethodDescriptor]:
    return [
        method
        for file in FILES
        for service in file.services_by_name.values()
        for method in service.methods
    ]


METHODS = _methods()
ROUTED = [m for m in METHODS if m.containing_service.full_name not in UNROUTED]


def _rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def _verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    assert kind is not None and kind != "custom", "HTTP rules use get/post/patch/put/delete"
    return kind, getattr(rule, kind)


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    return message.fields_by_name.get(name)


def _ids(methods: list[MethodDescriptor]) -> list[str]:
    return [m.full_name for m in methods]


def test_every_service_is_importable_with_its_stub() -> None:
    for full_name, module_name in SERVICES.items():
        module = importlib.import_module(module_name)
        grpc_module = importlib.import_module(module_name + "_grpc")
        service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]
        assert service.full_name == full_name
        assert service.methods, full_name
        assert hasattr(grpc_module, service.name + "Stub")
        assert hasattr(grpc_module, service.name + "Servicer")
        assert hasattr(grpc_module, "add_" + service.name + "Servicer_to_server")
    declared = {s.full_name for f in FILES for s in f.services_by_name.values()}
    assert declared == set(SERVICES), "one service per package, and only these"


@pytest.mark.parametrize("method", ROUTED, ids=_ids(ROUTED))
def test_rpc_has_http_rules_under_the_route_groups(method: MethodDescriptor) -> None:
    options = method.GetOptions()
    assert options.HasExtension(annotations_pb2.http), "every RPC needs google.api.http"
    request = method.input_type
    assert request.name == method.name + "Request"
    assert method.output_type.name == method.name + "Response"
    for rule in _rules(method):
        verb, path = _verb_and_path(rule)
        assert path.startswith(ROUTE_PREFIXES), path
        assert not rule.additional_bindings or rule is _rules(method)[0]
        if verb == "get":
            assert rule.body == "", f"GET {path} has a body"
        else:
            assert rule.body == "*", f"{verb.upper()} {path}: bodies map the whole request"
        for variable in re.findall(r"{([^}=]+)", path):
            message: Descriptor | None = request
            for part in variable.split("."):
                assert message is not None, f"{path}: {variable} is not a message field"
                field = _field(message, part)
                assert field is not None, f"{path}: no field {variable} in {request.name}"
                message = field.message_type
        if path.startswith("/portal/"):
            # The org comes from the token, never from a portal path; the
            # request must have an org_id for the gateway to fill.
            assert "{org_id}" not in path
            org_id = _field(request, "org_id")
            assert org_id is not None, f"{request.name} needs org_id for portal routes"
            assert org_id.type == FieldDescriptor.TYPE_STRING


def test_http_routes_are_unique() -> None:
    seen: dict[tuple[str, str], str] = {}
    for method in ROUTED:
        for rule in _rules(method):
            verb, path = _verb_and_path(rule)
            template = re.sub(r"{[^}]+}", "{}", path)
            key = (verb, template)
            assert key not in seen, f"{verb.upper()} {path}: {method.full_name} and {seen[key]}"
            seen[key] = method.full_name


LISTS = [m for m in METHODS if m.name.startswith("List")]


@pytest.mark.parametrize("method", LISTS, ids=_ids(LISTS))
def test_list_rpcs_paginate(method: MethodDescriptor) -> None:
    size = _field(method.input_type, "page_size")
    token = _field(method.input_type, "page_token")
    next_token = _field(method.output_type, "next_page_token")
    assert size is not None and size.type == FieldDescriptor.TYPE_INT32
    assert token is not None and token.type == FieldDescriptor.TYPE_STRING
    assert next_token is not None and next_token.type == FieldDescriptor.TYPE_STRING
    assert method.output_type.fields[0].is_repeated, "the listed resources come first"


MUTATIONS = [
    m
    for m in METHODS
    if m.name.startswith(MUTATING_PREFIXES) and not (m.client_streaming or m.server_streaming)
]


@pytest.mark.parametrize("method", MUTATIONS, ids=_ids(MUTATIONS))
def test_mutating_rpcs_take_a_request_id(method: MethodDescriptor) -> None:
    field = _field(method.input_type, "request_id")
    assert field is not None, f"{method.input_type.name} needs request_id (AIP-155)"
    assert field.type == FieldDescriptor.TYPE_STRING
    assert not any(rule.WhichOneof("pattern") == "get" for rule in _rules(method))


def test_every_enum_starts_with_unspecified_zero() -> None:
    enums = list(_enums())
    assert enums
    for enum in enums:
        first = enum.values[0]
        assert first.number == 0, enum.full_name
        assert first.name.endswith("_UNSPECIFIED"), enum.full_name
        prefix = first.name.removesuffix("UNSPECIFIED")
        assert all(v.name.startswith(prefix) for v in enum.values), enum.full_name


def test_instants_are_timestamps_named_time() -> None:
    for file in FILES:
        for message in _messages(file):
            for field in message.fields:
                is_timestamp = (
                    field.message_type is not None
                    and field.message_type.full_name == "google.protobuf.Timestamp"
                )
                if is_timestamp:
                    assert field.name.endswith("_time") or field.name == "now", field.full_name
                elif field.name.endswith("_time"):
                    pytest.fail(f"{field.full_name} is named like an instant but is no Timestamp")


def test_org_id_is_a_string_everywhere() -> None:
    for file in FILES:
        for message in _messages(file):
            field = _field(message, "org_id")
            if field is not None:
                assert field.type == FieldDescriptor.TYPE_STRING, field.full_name
            assert "organization_id" not in message.fields_by_name, message.full_name


def test_money_amounts_are_money_or_minor_units() -> None:
    for file in FILES:
        for message in _messages(file):
            for field in message.fields:
                if field.name.endswith("_minor"):
                    assert field.type == FieldDescriptor.TYPE_INT64, field.full_name
                if field.message_type is not None and field.message_type.name == "Money":
                    assert field.message_type.full_name == "tally.type.v1.Money"


def test_every_event_names_its_subject() -> None:
    subjects: dict[str, str] = {}
    for file in FILES:
        if file.package != "tally.events.v1" or file.name.endswith("/options.proto"):
            continue
        stem = file.name.rsplit("/", 1)[1].removesuffix(".proto")
        assert stem in EVENT_FILES, f"unexpected event file {file.name}"
        assert file.message_types_by_name, file.name
        for message in file.message_types_by_name.values():
            assert message.name.endswith("Event"), message.full_name
            options = message.GetOptions()
            assert options.HasExtension(options_pb2.event_subject), message.full_name
            subject = options.Extensions[options_pb2.event_subject]
            assert subject.startswith("tally."), subject
            assert subject.startswith(EVENT_FILES[stem]), f"{subject} is not from {stem}"
            assert SUBJECT.match(subject), subject
            assert subject not in subjects, f"{subject}: {message.name} and {subjects[subject]}"
            subjects[subject] = message.name
    for subject in (
        "tally.catalog.package.published",
        "tally.catalog.package.archived",
        "tally.catalog.metric.created",
        "tally.subscriptions.subscription.created",
        "tally.subscriptions.subscription.changed",
        "tally.subscriptions.subscription.canceled",
        "tally.subscriptions.subscription.renewed",
        "tally.subscriptions.subscription.period_closed",
        "tally.usage.usage.aggregated",
        "tally.usage.usage.threshold_crossed",
        "tally.invoicing.invoice.finalized",
        "tally.invoicing.invoice.paid",
        "tally.invoicing.invoice.voided",
        "tally.invoicing.credit_memo.issued",
        "tally.payments.payment.succeeded",
        "tally.payments.payment.failed",
        "tally.payments.payment.refunded",
        "tally.kit.probe.recorded",
    ):
        assert subject in subjects, f"no event publishes {subject}"


def test_kit_probe_event_shape() -> None:
    from tally.events.v1 import kit_events_pb2

    probe = kit_events_pb2.KitProbeEvent(probe_id="p-1", note="hello", sequence=3)
    assert kit_events_pb2.KitProbeEvent.FromString(probe.SerializeToString()) == probe
    fields = {f.name: f.type for f in kit_events_pb2.KitProbeEvent.DESCRIPTOR.fields}
    assert fields == {
        "probe_id": FieldDescriptor.TYPE_STRING,
        "note": FieldDescriptor.TYPE_STRING,
        "sequence": FieldDescriptor.TYPE_INT64,
    }


def _source_comments(tmp_dir: str) -> dict[str, str]:
    """Full field name -> its leading and trailing comments, from protoc's source info.

    The generated modules keep no comments, so the protos are compiled once
    more, in process, into a descriptor set with ``--include_source_info``.
    """
    from pathlib import Path

    import grpc_tools
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    root = Path(__file__).resolve().parents[2]
    protos = root / "protos"
    wkt = Path(next(iter(grpc_tools.__path__))) / "_proto"
    out = Path(tmp_dir) / "protos.binpb"
    files = sorted(p.relative_to(protos).as_posix() for p in protos.rglob("*.proto"))
    status = protoc.main(
        [
            "protoc",
            f"--proto_path={protos}",
            f"--proto_path={root / 'gen' / 'protodeps'}",
            f"--proto_path={wkt}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *files,
        ]
    )
    assert status == 0, "protoc failed on protos/"
    comments: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        located = {
            tuple(loc.path): loc.leading_comments + loc.trailing_comments
            for loc in file.source_code_info.location
        }

        for i, message in enumerate(file.message_type):
            _visit_comments(message, file.package, (4, i), located, comments)
    return comments


def _visit_comments(
    message: Any,
    scope: str,
    path: tuple[int, ...],
    located: dict[tuple[int, ...], str],
    comments: dict[str, str],
) -> None:
    """Record the comments of a DescriptorProto's fields, nested messages included."""
    name = f"{scope}.{message.name}"
    for i, field in enumerate(message.field):
        comments[f"{name}.{field.name}"] = located.get((*path, 2, i), "")
    for i, nested in enumerate(message.nested_type):
        _visit_comments(nested, name, (*path, 3, i), located, comments)


def _portal_request_fields() -> Iterator[FieldDescriptor]:
    """Every field of every request bound to a portal route, nested messages included."""
    seen: set[str] = set()

    def walk(message: Descriptor) -> Iterator[FieldDescriptor]:
        if message.full_name in seen or message.full_name.startswith("google."):
            return
        seen.add(message.full_name)
        for field in message.fields:
            yield field
            if field.message_type is not None:
                yield from walk(field.message_type)

    for method in ROUTED:
        if any(_verb_and_path(r)[1].startswith("/portal/") for r in _rules(method)):
            yield from walk(method.input_type)


def test_fields_documented_staff_only_are_marked_staff_only(tmp_path: object) -> None:
    """A portal-bound request field documented "staff only" carries the option.

    Except ``org_id``: its "empty for all (staff only)" is about the empty
    value, which the gateway's tenant isolation already rules out (it always
    sets the token's org on portal routes); marking it would refuse the org's
    own id.
    """
    from tally.api.v1 import options_pb2 as api_options

    comments = _source_comments(str(tmp_path))
    documented: list[str] = []
    for field in _portal_request_fields():
        text = " ".join(comments.get(field.full_name, "").split())
        marked = field.GetOptions().Extensions[api_options.staff_only]
        if re.search(r"staff[ -]only", text, re.IGNORECASE) and field.name != "org_id":
            documented.append(field.full_name)
            assert marked, f"{field.full_name} is documented staff only but not marked"
        if marked:
            assert re.search(r"staff[ -]only", text, re.IGNORECASE), (
                f"{field.full_name} is marked staff_only; say so in its comment"
            )
    # The fields that started it all (a customer giving itself a free trial).
    for name in ("trial_days", "start_time", "allow_multiple"):
        assert f"tally.subscriptions.v1.CreateSubscriptionRequest.{name}" in documented
