"""The services the gateway fronts, found from the generated descriptors."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from services.kit.settings import SERVICE_NAMES


def service_descriptor(service: str) -> ServiceDescriptor:
    module = importlib.import_module(f"tally.{service}.v1.{service}_pb2")
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[
        f"{service.capitalize()}Service"
    ]
    return descriptor


@dataclass(frozen=True)
class HttpBinding:
    service: str  # our short name: "usage"
    method: MethodDescriptor
    verb: str  # get, post, patch, put, delete
    path: str  # the template as declared: /portal/billing/v1/invoices/{invoice_id}
    body: str  # "", "*" or a field name
    response_body: str = ""  # "" (the whole response) or the field to answer instead


def http_bindings() -> Iterator[HttpBinding]:
    """Every HTTP binding of every RPC, additional bindings included."""
    for service in SERVICE_NAMES:
        for method in service_descriptor(service).methods:
            rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]
            for r in [rule, *rule.additional_bindings]:
                verb = r.WhichOneof("pattern")
                if verb is None or verb == "custom":
                    continue
                yield HttpBinding(service, method, verb, getattr(r, verb), r.body, r.response_body)
