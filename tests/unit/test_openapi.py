"""The OpenAPI document is generated from the same bindings the gateway serves."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.descriptors import http_bindings
from gateway.docs import GATEWAY_ROUTES
from gateway.openapi import openapi_document


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.add(value)
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def test_every_http_binding_is_documented() -> None:
    doc = openapi_document()
    bindings = list(http_bindings())
    assert len(bindings) > 50
    for b in bindings:
        path = re.sub(r"\{(?:[^}=]*\.)?([^}=.]+)(=[^}]*)?\}", r"{\1}", b.path)
        assert b.verb in doc["paths"][path], f"{b.verb.upper()} {path} missing"


def test_every_reference_resolves_and_the_document_is_json() -> None:
    doc = openapi_document(GATEWAY_ROUTES)
    for ref in _refs(doc):
        kind, _, name = ref.removeprefix("#/components/").partition("/")
        assert ref.startswith("#/components/"), ref
        assert name in doc["components"][kind], ref
    json.dumps(doc)  # serialisable as served


def test_json_names_and_64_bit_integers_follow_the_protobuf_json_mapping() -> None:
    schemas = openapi_document()["components"]["schemas"]
    money = schemas["tally.type.v1.Money"]["properties"]
    assert money["currencyCode"] == {"type": "string"}
    assert money["amountMinor"] == {"type": "string", "format": "int64"}


def test_no_two_paths_are_template_equivalent() -> None:
    shapes = [re.sub(r"\{[^}]+\}", "{}", path) for path in openapi_document()["paths"]]
    assert len(shapes) == len(set(shapes))


def test_path_parameters_are_required_strings() -> None:
    doc = openapi_document()
    for path, operations in doc["paths"].items():
        names = re.findall(r"\{([^}]+)\}", path)
        for operation in operations.values():
            params = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert params == set(names), path
