"""Routes that answer a document (google.api.HttpBody): which they are and
which response metadata becomes an HTTP header."""

from __future__ import annotations

from gateway.descriptors import http_bindings
from gateway.docs import GATEWAY_ROUTES
from gateway.openapi import openapi_document
from gateway.transcoding import Router, answers_document, forwarded_headers

ROUTER = Router(http_bindings())


def route(method: str, path: str) -> tuple[str, bool, dict[str, str]]:
    found = ROUTER.match(method, path)
    assert found is not None, f"{method} {path} matched nothing"
    matched, values = found
    return matched.binding.method.name, answers_document(matched), values


def test_the_pdf_routes_are_their_own_rpc_and_answer_documents() -> None:
    for group in ("portal", "super-admin"):
        base = f"/{group}/billing/v1/invoices/in_1"
        assert route("GET", f"{base}:pdf") == ("RenderInvoicePdf", True, {"invoice_id": "in_1"})
        assert route("GET", f"{base}:render") == ("RenderInvoice", True, {"invoice_id": "in_1"})
        assert route("GET", base) == ("GetInvoice", False, {"invoice_id": "in_1"})
    assert route("GET", "/super-admin/billing/v1/metrics")[1] is False


def test_only_the_content_disposition_is_passed_on() -> None:
    metadata = (
        ("content-disposition", 'inline; filename="ACME-000001.pdf"'),
        ("set-cookie", "session=stolen"),
        ("location", "https://elsewhere.test"),
        ("x-trace-bin", b"\x00\x01"),
    )
    assert forwarded_headers(metadata) == {
        "content-disposition": 'inline; filename="ACME-000001.pdf"'
    }
    assert forwarded_headers(None) == {}
    assert forwarded_headers(()) == {}


def test_openapi_says_the_pdf_route_answers_a_pdf() -> None:
    paths = openapi_document(GATEWAY_ROUTES)["paths"]
    for group in ("portal", "super-admin"):
        get = paths[f"/{group}/billing/v1/invoices/{{invoice_id}}:pdf"]["get"]
        assert list(get["responses"]["200"]["content"]) == ["application/pdf"]
