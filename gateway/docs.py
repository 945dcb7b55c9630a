"""The docs page, and the OpenAPI entries of the gateway's own routes (not from protos)."""

from __future__ import annotations

from typing import Any

from tally.audit.v1 import audit_pb2

from gateway.openapi import GatewayRoute, nullable, schema_ref
from services.kit.settings import SERVICE_NAMES

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


# --- the gateway's own routes -------------------------------------------------
# Every route of app.py that is not transcoded from a proto is documented here,
# with one document_route call each; gateway/openapi.py adds the security,
# the problem answers and the X-Request-Id header of its route group.

GATEWAY_ROUTES: list[GatewayRoute] = []


def document_route(
    method: str,
    path: str,
    *,
    operation_id: str,
    summary: str,
    response: dict[str, Any] | None,
    **more: Any,
) -> str:
    """Adds one gateway route to ``/openapi.json`` and answers its path.

    ``response`` is the JSON schema of the 200 answer (``schema_ref`` names a
    proto message or a component); ``more`` are :class:`GatewayRoute`'s other
    fields (``query``, ``example``, ``errors``, ``components``, ...).
    """
    GATEWAY_ROUTES.append(GatewayRoute(method, path, operation_id, summary, response, **more))
    return path


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required or properties),
        "properties": properties,
        "additionalProperties": False,
    }


def _parts_of(message: str) -> dict[str, Any]:
    return nullable({"type": "array", "items": schema_ref(message)})


_UNAVAILABLE = "gateway.UnavailablePart"
_COMPOSED_COMPONENTS = {
    _UNAVAILABLE: _object(
        {
            "part": {"type": "string", "description": "the key left null", "example": "usage"},
            "status": {"type": "integer", "description": "what its route answered"},
            "reason": {"type": "string", "example": "UNAVAILABLE"},
        }
    )
}
_UNAVAILABLE_LIST = {
    "type": "array",
    "items": schema_ref(_UNAVAILABLE),
    "description": "the parts left null because their service failed",
}
_SUBSCRIPTION = "tally.subscriptions.v1.Subscription"
_ACTIVE = {"subscriptionId": "sub_1", "orgId": "org_demo", "state": "SUBSCRIPTION_STATE_ACTIVE"}

_AUDIT_PAGE = audit_pb2.ListAuditEntriesResponse.DESCRIPTOR.full_name
AUDIT_PATH = document_route(
    "get",
    "/super-admin/billing/v1/audit",
    operation_id="adminGatewayListAuditEntries",
    summary="The services' audit trails, merged newest first",
    description="Every service's mutations (billing_admin or billing_support), one page.",
    request=audit_pb2.ListAuditEntriesRequest.DESCRIPTOR.full_name,
    query={
        "service": {
            "type": "array",
            "items": {"type": "string", "enum": list(SERVICE_NAMES)},
            "description": "only these services' trails (repeat it); all when absent",
        }
    },
    response=schema_ref(_AUDIT_PAGE),
)

WEBHOOK_PATH = document_route(
    "post",
    "/webhooks/stripe",
    operation_id="publicGatewayStripeWebhook",
    summary="Forwarded with its raw body to the payments service",
    description="No token: payments checks the `Stripe-Signature` of the raw body.",
    response=None,
    headers={"Stripe-Signature": {"type": "string"}},
    request_body={
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    secured=False,
    # What payments answers (a bad signature is its 400), or 503 when it is away.
    errors=(400, 503),
)

OVERVIEW_PATH = document_route(
    "get",
    "/portal/billing/v1/overview",
    operation_id="portalGatewayOverview",
    summary="Current subscription, upcoming invoice and usage this period, at once",
    description="A part whose service fails is null and named in `unavailable`.",
    response=schema_ref("gateway.PortalOverview"),
    components={
        **_COMPOSED_COMPONENTS,
        "gateway.PortalOverview": _object(
            {
                "orgId": {"type": "string"},
                "subscription": nullable(schema_ref(_SUBSCRIPTION)),
                "upcomingInvoice": nullable(schema_ref("tally.invoicing.v1.Invoice")),
                "usage": _parts_of("tally.usage.v1.UsageAggregate"),
                "unavailable": _UNAVAILABLE_LIST,
            }
        ),
    },
    example={
        "orgId": "org_demo",
        "subscription": _ACTIVE,
        "upcomingInvoice": None,
        "usage": [{"metricCode": "api_calls", "value": "42"}],
        "unavailable": [{"part": "upcomingInvoice", "status": 503, "reason": "UNAVAILABLE"}],
    },
)

CONTEXT_PATH = document_route(
    "get",
    "/super-admin/billing/v1/orgs/{org_id}/context",
    operation_id="adminGatewaySupportContext",
    summary="One org's subscriptions, usage, invoices, credit and payment methods",
    description="A part whose service fails is null and named in `unavailable`.",
    response=schema_ref("gateway.SupportContext"),
    components={
        **_COMPOSED_COMPONENTS,
        "gateway.SupportContext": _object(
            {
                "orgId": {"type": "string"},
                "subscriptions": _parts_of(_SUBSCRIPTION),
                "currentSubscription": nullable(schema_ref(_SUBSCRIPTION)),
                "usage": _parts_of("tally.usage.v1.UsageAggregate"),
                "invoices": _parts_of("tally.invoicing.v1.Invoice"),
                "creditBalance": nullable(
                    schema_ref("tally.invoicing.v1.GetCreditBalanceResponse")
                ),
                "paymentMethods": _parts_of("tally.payments.v1.PaymentMethod"),
                "unavailable": _UNAVAILABLE_LIST,
            }
        ),
    },
    example={
        "orgId": "org_demo",
        "subscriptions": [_ACTIVE],
        "currentSubscription": _ACTIVE,
        "usage": [],
        "invoices": [],
        "creditBalance": None,
        "paymentMethods": None,
        "unavailable": [
            {"part": "creditBalance", "status": 503, "reason": "UNAVAILABLE"},
            {"part": "paymentMethods", "status": 503, "reason": "UNAVAILABLE"},
        ],
    },
)

_GROUPS = ("portal", "admin", "internal")
FEATURES_PATH = document_route(
    "get",
    "/portal/billing/v1/features",
    operation_id="portalGatewayFeatures",
    summary="Which route groups are on for the token's org (answered even when off)",
    response=_object(
        {
            "orgId": {"type": "string"},
            "features": {
                "type": "object",
                "description": "each route group: true when it is on for this org; "
                "new keys may appear",
                "required": list(_GROUPS),
                "properties": {group: {"type": "boolean"} for group in _GROUPS},
                "additionalProperties": {"type": "boolean"},
            },
        }
    ),
    example={"orgId": "org_demo", "features": {"portal": True, "admin": False, "internal": True}},
    # Answered whatever the portal flag says, so never the flag's 404.
    errors=(401, 403, 429, 500),
)
