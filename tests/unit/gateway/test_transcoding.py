"""Route matching, request building and error mapping, without any server."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from tally.catalog.v1 import catalog_pb2
from tally.subscriptions.v1 import subscriptions_pb2

from gateway import problems
from gateway.descriptors import http_bindings
from gateway.transcoding import (
    Router,
    build_request,
    idempotent_methods,
    org_ids_in,
    response_payload,
)

ROUTER = Router(http_bindings())


def match(method: str, path: str) -> tuple[str, dict[str, str]]:
    found = ROUTER.match(method, path)
    assert found is not None, f"{method} {path} matched nothing"
    route, values = found
    return route.binding.method.name, values


def test_verb_routes_coexist_with_plain_ones() -> None:
    assert match("GET", "/portal/billing/v1/invoices/in_1") == (
        "GetInvoice",
        {"invoice_id": "in_1"},
    )
    assert match("GET", "/portal/billing/v1/invoices/in_1:render") == (
        "RenderInvoice",
        {"invoice_id": "in_1"},
    )
    assert match("GET", "/portal/billing/v1/invoices:preview") == ("PreviewInvoice", {})
    assert match("GET", "/portal/billing/v1/invoices") == ("ListInvoices", {})
    assert match("POST", "/super-admin/billing/v1/subscriptions:closePeriods") == (
        "ClosePeriods",
        {},
    )


def test_nested_path_variable() -> None:
    assert match("PATCH", "/super-admin/billing/v1/metrics/m_1") == (
        "UpdateMetric",
        {"metric.metric_id": "m_1"},
    )


def test_wrong_method_is_405_and_unknown_path_is_none() -> None:
    with pytest.raises(problems.Problem) as err:
        ROUTER.match("DELETE", "/portal/billing/v1/invoices/in_1")
    assert err.value.status == 405
    assert ROUTER.match("GET", "/portal/billing/v1/nothing-here") is None


def route_of(method: str, path: str):  # type: ignore[no-untyped-def]
    found = ROUTER.match(method, path)
    assert found is not None
    return found


def test_request_from_path_query_and_body() -> None:
    route, values = route_of("PATCH", "/super-admin/billing/v1/metrics/m_1")
    message = build_request(
        route,
        values,
        [],
        {"metric": {"name": "Calls"}, "updateMask": "name", "requestId": "r1"},
    )
    assert message.metric.metric_id == "m_1"
    assert message.metric.name == "Calls"
    assert list(message.update_mask.paths) == ["name"]

    route, values = route_of("GET", "/super-admin/billing/v1/metrics")
    message = build_request(
        route, values, [("pageSize", "5"), ("state", "METRIC_STATE_ACTIVE")], None
    )
    assert message.page_size == 5

    route, values = route_of("POST", "/super-admin/billing/v1/orgs/org_a/subscriptions")
    message = build_request(route, values, [], {"packageId": "p", "allowMultiple": True})
    assert isinstance(message, subscriptions_pb2.CreateSubscriptionRequest)
    assert (message.org_id, message.package_id, message.allow_multiple) == ("org_a", "p", True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metric": {"code": "x", "bogus": 1}}, "metric.bogus"),
        ({"metric": {"code": 5}}, "metric.code"),
        ({"metric": {"aggregation": "NOPE"}}, "metric.aggregation"),
        ({"nope": 1}, "nope"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(body: object, field: str) -> None:
    route, values = route_of("POST", "/super-admin/billing/v1/metrics")
    with pytest.raises(problems.Problem) as err:
        build_request(route, values, [], body)
    assert err.value.status == 400
    assert [v.field for v in err.value.violations] == [field]


def test_bad_query_parameters_are_400() -> None:
    route, values = route_of("GET", "/super-admin/billing/v1/metrics")
    for query, field in (
        ([("pageSize", "abc")], "page_size"),  # violations use proto names
        ([("unknown", "1")], "unknown"),
    ):
        with pytest.raises(problems.Problem) as err:
            build_request(route, values, query, None)
        assert err.value.status == 400
        assert err.value.violations[0].field == field


def test_malformed_json() -> None:
    from gateway.transcoding import parse_body

    with pytest.raises(problems.Problem) as err:
        parse_body(b"{not json")
    assert err.value.status == 400
    assert err.value.violations[0].field == "body"


def test_org_ids_found_anywhere() -> None:
    message = subscriptions_pb2.CreateSubscriptionRequest(org_id="a", package_id="p")
    assert org_ids_in(message) == [("org_id", "a")]


def test_every_portal_request_has_an_org_id() -> None:
    portal = [b for b in http_bindings() if b.path.startswith("/portal/")]
    assert portal
    for binding in portal:
        assert "org_id" in binding.method.input_type.fields_by_name, binding.path


def test_only_get_only_methods_are_retried() -> None:
    retried = idempotent_methods(ROUTER.routes)
    catalog = retried["tally.catalog.v1.CatalogService"]
    assert "GetPackage" in catalog
    assert "CreateMetric" not in catalog
    # CheckEntitlement is bound to POST only: never retried by the gateway.
    assert "CheckEntitlement" not in retried.get(
        "tally.subscriptions.v1.SubscriptionsService", set()
    )


def test_http_body_is_answered_raw() -> None:
    from google.api import httpbody_pb2
    from tally.invoicing.v1 import invoicing_pb2

    route, _ = route_of("GET", "/portal/billing/v1/invoices/in_1:render")
    reply = invoicing_pb2.RenderInvoiceResponse()
    document = getattr(reply, route.binding.response_body or "document")
    document.CopyFrom(httpbody_pb2.HttpBody(content_type="text/html", data=b"<h1>x</h1>"))
    assert response_payload(route, reply) == (b"<h1>x</h1>", "text/html")
    route, _ = route_of("GET", "/super-admin/billing/v1/metrics")
    assert response_payload(route, catalog_pb2.ListMetricsResponse(next_page_token="t")) == {
        "nextPageToken": "t"
    }


class _FakeError(grpc.aio.AioRpcError):
    """An AioRpcError as the channel raises it, rich details in the trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, details: list[object]) -> None:
        packed = []
        for d in details:
            a = any_pb2.Any()
            a.Pack(d)  # type: ignore[arg-type]
            packed.append(a)
        status = rpc_status.to_status(
            status_pb2.Status(code=code.value[0], message=message, details=packed)
        )
        super().__init__(
            code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), message
        )


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_status_table(code: grpc.StatusCode, http: int) -> None:
    assert problems.http_status_for(code) == http


def test_rich_status_becomes_problem_with_reason_and_violations() -> None:
    error = _FakeError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad metric",
        [
            error_details_pb2.ErrorInfo(reason="INVALID_METRIC", domain="billing.tally.dev"),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="metric.code", description="required"
                    )
                ]
            ),
        ],
    )
    problem = problems.from_rpc_error(error)
    body = problem.body("rid")
    assert body["status"] == 400
    assert body["reason"] == "INVALID_METRIC"
    assert body["violations"] == [{"field": "metric.code", "description": "required"}]
    assert body["detail"] == "bad metric"
    assert body["type"].startswith("https://")
    assert body["requestId"] == "rid"


def test_internal_errors_do_not_leak_text() -> None:
    problem = problems.from_rpc_error(_FakeError(grpc.StatusCode.INTERNAL, "secret sql", []))
    assert problem.status == 500
    assert "secret" not in problem.detail


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": {"orgId": "o", "metricCode": "a\u0000b"}}, "event.metric_code"),
        ({"event": {"properties": {"k": "v\u0000"}}}, "event.properties.k"),
        ({"event": {"properties": {"k\u0000": "v"}}}, "event.properties"),
        ({"requestId": "\u0000"}, "request_id"),
    ],
)
def test_nul_in_any_string_is_a_400(body: dict[str, object], field: str) -> None:
    # Found by schemathesis: PostgreSQL text cannot hold U+0000, the service failed with a 500.
    route, values = route_of("POST", "/internal/billing/v1/usage/events")
    with pytest.raises(problems.Problem) as err:
        build_request(route, values, [], body)
    assert err.value.status == 400
    assert [v.field for v in err.value.violations] == [field]
