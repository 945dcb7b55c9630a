"""The docs page, and OpenAPI entries for the gateway's own routes (not from protos)."""

from __future__ import annotations

from typing import Any

DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tally billing API</title>
<style>body{font:15px system-ui;margin:2rem;max-width:70rem}code{background:#eee;padding:0 .3em}
td{padding:.2em .8em;vertical-align:top}</style></head>
<body><h1>Tally billing API</h1>
<p>Machine-readable: <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).</p>
<table id="ops"></table>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const rows = [];
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [verb, op] of Object.entries(ops))
      rows.push(`<tr><td><code>${verb.toUpperCase()}</code></td><td><code>${path}</code></td>`
              + `<td>${op.operationId}</td></tr>`);
  document.getElementById('ops').innerHTML = rows.join('');
});
</script></body></html>"""


def _audit_operation() -> dict[str, Any]:
    params = [
        {"name": n, "in": "query", "required": False, "schema": schema}
        for n, schema in (
            ("org_id", {"type": "string"}),
            ("actor", {"type": "string"}),
            ("action", {"type": "string"}),
            ("target", {"type": "string"}),
            ("start_time", {"type": "string", "format": "date-time"}),
            ("end_time", {"type": "string", "format": "date-time"}),
            ("page_size", {"type": "integer"}),
            ("page_token", {"type": "string"}),
            ("service", {"type": "array", "items": {"type": "string"}}),
        )
    ]
    return {
        "get": {
            "operationId": "Gateway_ListAuditEntries",
            "tags": ["gateway"],
            "summary": "Every service's audit trail, merged newest first",
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
        }
    }


def _webhook_operation() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "Gateway_StripeWebhook",
            "tags": ["gateway"],
            "summary": "Forwarded with its raw body to the payments service",
            "security": [],
            "responses": {"200": {"description": "OK"}, "503": {"description": "payments away"}},
        }
    }


def _overview_operation() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "Gateway_PortalOverview",
            "tags": ["gateway"],
            "summary": "Current subscription, upcoming invoice and usage this period, at once",
            "responses": {"200": {"description": "OK; parts that failed are named in unavailable"}},
        }
    }


def _features_operation() -> dict[str, Any]:
    groups = ("portal", "admin", "internal")
    features = {
        "type": "object",
        "description": "each route group: true when it is on for this org; new keys may appear",
        "required": list(groups),
        "properties": {group: {"type": "boolean"} for group in groups},
        "additionalProperties": {"type": "boolean"},
    }
    answer = {
        "type": "object",
        "required": ["orgId", "features"],
        "properties": {"orgId": {"type": "string"}, "features": features},
    }
    return {
        "get": {
            "operationId": "Gateway_PortalFeatures",
            "tags": ["gateway"],
            "summary": "Which route groups are on for the token's org (answered even when off)",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": answer}}}
            },
        }
    }


def _context_operation() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "Gateway_SupportContext",
            "tags": ["gateway"],
            "summary": "One org's subscriptions, usage, invoices, credit and payment methods",
            "parameters": [
                {"name": "org_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "OK; parts that failed are named in unavailable"}},
        }
    }


def gateway_operations(
    audit: str, webhook: str, overview: str, context: str, features: str
) -> dict[str, Any]:
    return {
        audit: _audit_operation(),
        webhook: _webhook_operation(),
        overview: _overview_operation(),
        context: _context_operation(),
        features: _features_operation(),
    }
