"""The OpenAPI document is complete enough for a generated client.

Query parameters are checked against the transcoder itself (each documented
one is accepted and changes the request), not against a second copy of the
rules; the gateway's own routes against the app's route table; the composed
answers against their declared schemas.
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway import openapi, overview, transcoding
from gateway.app import create_app
from gateway.descriptors import HttpBinding, http_bindings, service_descriptor
from gateway.docs import GATEWAY_ROUTES
from gateway.openapi import openapi_document, openapi_path
from gateway.openapi.parameters import route_parameters
from gateway.openapi.schemas import Schemas
from gateway.problems import Problem
from tests.support.gateway import gateway_client, gateway_settings

DOC = openapi_document(GATEWAY_ROUTES)
# Served by the app itself, not documented: infrastructure and the catch-all.
UNDOCUMENTED = {"/healthz", "/metrics", "/openapi.json", "/docs", "/{rest:path}"}


def _operation(path: str, verb: str) -> dict[str, Any]:
    operation: dict[str, Any] = DOC["paths"][path][verb]
    return operation


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _sample(schema: dict[str, Any]) -> list[str]:
    """Query text for a value of the schema (two values for an array)."""
    schema = _resolve(schema)
    if schema.get("type") == "array":
        return _sample(schema["items"]) * 2
    if "enum" in schema:
        return [schema["enum"][-1]]  # the last one: never *_UNSPECIFIED
    if schema.get("format") == "date-time":
        return ["2026-01-02T03:04:05Z"]
    if "pattern" in schema:  # Duration
        return ["1.5s"]
    return {"integer": ["7"], "boolean": ["true"]}.get(schema.get("type", ""), ["x1"])


def _query_of(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in operation["parameters"] if p["in"] == "query"]


async def test_the_served_document_is_valid_openapi_3_1() -> None:
    async with gateway_client(gateway_settings()) as client:
        served = (await client.get("/openapi.json")).json()
    validate(served)  # openapi-spec-validator: OpenAPI 3.1 and JSON Schema 2020-12
    assert served["openapi"] == "3.1.0"
    assert served["paths"] == DOC["paths"]


def test_operation_ids_are_unique_and_name_group_service_and_method() -> None:
    ids = [op["operationId"] for item in DOC["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert _operation("/super-admin/billing/v1/metrics", "get")["operationId"] == (
        "adminCatalogListMetrics"
    )
    assert _operation("/portal/billing/v1/packages/{package_id}", "get")["operationId"] == (
        "portalCatalogGetPackage"
    )
    by_org = _operation("/super-admin/billing/v1/orgs/{org_id}/subscriptions", "get")
    assert by_org["operationId"] == "adminSubscriptionsListSubscriptionsByOrgId"


def test_operation_ids_are_stable_when_a_binding_is_added() -> None:
    bindings = list(http_bindings())
    ids = openapi.operation_ids(bindings)
    extra = HttpBinding(
        "catalog", bindings[0].method, "post", "/super-admin/billing/v1/x/{org_id}/metrics", "*"
    )
    assert openapi.operation_ids([*bindings, extra])[: len(ids)] == ids
    assert openapi.operation_ids([*bindings, extra])[-1] == "adminCatalogCreateMetricByOrgId"


@pytest.mark.parametrize(
    "binding",
    [b for b in http_bindings() if b.body != "*"],
    ids=lambda b: f"{b.verb} {b.path}",
)
def test_every_query_parameter_is_accepted_by_the_transcoder(binding: HttpBinding) -> None:
    route = transcoding.compile_route(binding)
    path_values = {v: "id1" for v in route.variables}
    baseline = transcoding.build_request(route, path_values, [], None)
    documented = _query_of(_operation(openapi_path(binding.path), binding.verb))
    for parameter in documented:
        query = [(parameter["name"], text) for text in _sample(parameter["schema"])]
        built = transcoding.build_request(route, path_values, query, None)
        assert built != baseline, parameter["name"]  # it set something
    # Every plain field the request can take from a query is documented.
    names = {p["name"] for p in documented}
    request = binding.method.input_type
    portal = binding.path.startswith(transcoding.PORTAL_PREFIX)
    for f in request.fields:
        taken = f.name in route.variables or f.name == binding.body
        if f.message_type is None and not taken and not (portal and f.name == "org_id"):
            assert f.json_name in names, (binding.path, f.name)


def test_nested_fields_are_dotted_and_repeated_ones_exploded_arrays() -> None:
    # No GET of today's protos has either, so PreviewCharge's request bound to a GET.
    method = service_descriptor("invoicing").methods_by_name["PreviewCharge"]
    binding = HttpBinding("invoicing", method, "get", "/super-admin/billing/v1/charges:try", "")
    parameters = {p["name"]: p for p in route_parameters(binding, Schemas())}
    unit = parameters["charge.standard.unitAmount"]
    assert unit["schema"] == {"type": "string"}
    values = parameters["eventValues"]
    assert values["schema"]["type"] == "array"
    assert (values["explode"], values["style"]) == (True, "form")
    route = transcoding.compile_route(binding)
    query = [("charge.standard.unitAmount", "0.5"), ("eventValues", "1"), ("eventValues", "2")]
    built: Any = transcoding.build_request(route, {}, query, None)
    assert built.charge.standard.unit_amount == "0.5"
    assert list(built.event_values) == ["1", "2"]


def test_portal_query_parameters_leave_the_org_to_the_token() -> None:
    portal = _query_of(_operation("/portal/billing/v1/subscriptions", "get"))
    admin = _query_of(_operation("/super-admin/billing/v1/subscriptions", "get"))
    assert "orgId" not in {p["name"] for p in portal}
    assert {"orgId", "pageSize", "pageToken", "state"} <= {p["name"] for p in admin}
    page_size = next(p for p in admin if p["name"] == "pageSize")
    assert page_size["schema"] == {"type": "integer", "format": "int32"}


def test_path_parameters_are_typed_from_their_fields() -> None:
    operation = _operation("/super-admin/billing/v1/metrics/{metric_id}", "patch")
    (parameter,) = [p for p in operation["parameters"] if p["in"] == "path"]
    assert parameter["schema"] == {"type": "string"}
    assert parameter["description"] == "request field `metric.metric_id`"


def test_http_body_answers_declare_their_media_types() -> None:
    operation = _operation("/portal/billing/v1/invoices/{invoice_id}:render", "get")
    assert list(operation["responses"]["200"]["content"]) == ["text/html", "application/pdf"]


def test_errors_are_problem_documents_per_status_the_policy_can_answer() -> None:
    read = _operation("/super-admin/billing/v1/metrics", "get")["responses"]
    write = _operation("/super-admin/billing/v1/metrics", "post")["responses"]
    stream = _operation("/internal/billing/v1/usage/events:stream", "post")["responses"]
    assert set(read) == {"200", "400", "401", "403", "404", "429", "500", "503", "504"}
    assert set(write) - set(read) == {"409", "415"}
    assert "501" in stream and "501" not in write
    responses = DOC["components"]["responses"]
    for status, answer in read.items():
        if status != "200":
            name = answer["$ref"].rsplit("/", 1)[-1]
            content = responses[name]["content"]["application/problem+json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    problem = DOC["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "reason", "violations"} <= set(
        problem["properties"]
    )


def test_security_follows_the_route_group() -> None:
    def security(path: str, verb: str) -> list[dict[str, list[str]]]:
        found: list[dict[str, list[str]]] = _operation(path, verb)["security"]
        return found

    assert security("/portal/billing/v1/subscriptions", "get") == [{"bearer": []}]
    assert security("/super-admin/billing/v1/metrics", "get") == [{"bearer": []}]
    assert security("/internal/billing/v1/usage/events", "post") == [
        {"bearer": []},
        {"apiKey": []},
    ]
    assert security("/webhooks/stripe", "post") == []
    assert security("/portal/billing/v1/overview", "get") == [{"bearer": []}]
    api_key = DOC["components"]["securitySchemes"]["apiKey"]
    assert api_key == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}


def test_every_gateway_route_of_the_app_is_documented_and_only_those() -> None:
    app = create_app(gateway_settings())
    served = {
        (route.path, method.lower())
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if getattr(route, "path", "") not in UNDOCUMENTED and method != "HEAD"
    }
    documented = {(r.path, r.method.lower()) for r in GATEWAY_ROUTES}
    assert served == documented
    for path, verb in served:
        assert verb in DOC["paths"][path]


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    # The document's components beside the schema, so its #/components refs resolve.
    return Draft202012Validator({**schema, "components": DOC["components"]})


def test_the_hand_written_examples_match_their_schemas() -> None:
    checked = 0
    for route in GATEWAY_ROUTES:
        if route.example is not None and route.response is not None:
            _validator(route.response).validate(route.example)
            checked += 1
    assert checked >= 3


async def test_the_composed_answers_match_their_schemas() -> None:
    subscription = {"subscriptionId": "sub_1", "state": "SUBSCRIPTION_STATE_ACTIVE"}

    async def call(method: str, target: str) -> dict[str, Any]:
        if target.endswith("/subscriptions"):
            return {"subscriptions": [subscription]}
        if "aggregates" in target:
            return {"aggregates": [{"metricCode": "api_calls", "value": "3"}]}
        raise Problem(503, "away", "UNAVAILABLE")

    composed = await overview.compose("org_1", call)
    schema = _operation("/portal/billing/v1/overview", "get")["responses"]["200"]
    _validator(schema["content"]["application/json"]["schema"]).validate(composed)
    context = await overview.compose_support_context("org_1", call)
    path = "/super-admin/billing/v1/orgs/{org_id}/context"
    schema = _operation(path, "get")["responses"]["200"]["content"]["application/json"]["schema"]
    _validator(schema).validate(context)
    assert {p["part"] for p in context["unavailable"]} == {
        "invoices",
        "creditBalance",
        "paymentMethods",
    }
    with pytest.raises(Exception, match="is not valid"):
        _validator(schema).validate({**context, "usage": "not a list"})
