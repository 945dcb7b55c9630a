"""Route groups on for a cohort of orgs, and the portal's features route.

Through the real ASGI app with its lifespan; the services sit at a port nobody
listens on (``nowhere``), so a request the flags let through answers 503 and
one they stop answers 404, as if the route did not exist.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.kit.devstack import free_port
from tests.integration.gateway.test_gateway_policy import nowhere
from tests.integration.test_startup_errors import assert_one_error_line, tally
from tests.support.gateway import gateway_client, gateway_settings, portal_headers, token

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = "/portal/billing/v1/subscriptions"
ENTITLEMENT = "/internal/billing/v1/entitlements:check"
BATCH = "/internal/billing/v1/usage/events:batchRecord"
API_KEY = {"X-Api-Key": "test-internal-key"}


def _settings(**overrides: Any) -> Any:
    return gateway_settings(**nowhere(), audit_dir="", grpc_deadline_seconds=1, **overrides)


def _bearer(**claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**claims)}"}


def _portal(org: str, tags: list[str] | None = None) -> dict[str, str]:
    return _bearer(
        subject=f"user@{org}", org=org, permissions=["organization:billing"], org_tags=tags
    )


async def _status(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: Any = None
) -> int:
    return (await http.request(method, path, headers=headers, json=body)).status_code


async def test_portal_cohort_by_org_list_hides_every_portal_route_from_other_orgs() -> None:
    async with gateway_client(_settings(portal_billing_enabled="orgs:org_a")) as http:
        org_a, org_b = portal_headers("org_a"), portal_headers("org_b")
        assert await _status(http, "GET", SUBSCRIPTIONS, org_a) == 503  # past the policy
        outside = await http.get(SUBSCRIPTIONS, headers=org_b)
        assert outside.status_code == 404
        assert outside.headers["content-type"].startswith("application/problem+json")
        assert outside.json()["reason"] == "NOT_FOUND"
        # Nothing tells org B the group exists: a wrong method is 404, not 405,
        # and the composed overview is absent too.
        assert await _status(http, "DELETE", SUBSCRIPTIONS, org_a) == 405
        assert await _status(http, "DELETE", SUBSCRIPTIONS, org_b) == 404
        # (services away: the overview answers with its parts unavailable)
        assert await _status(http, "GET", "/portal/billing/v1/overview", org_a) == 200
        assert await _status(http, "GET", "/portal/billing/v1/overview", org_b) == 404
        # Credentials are still checked first: deciding needs the org.
        assert await _status(http, "GET", SUBSCRIPTIONS, {}) == 401


async def test_portal_cohort_by_tags_from_the_setting_or_the_token_claim() -> None:
    settings = _settings(portal_billing_enabled="tags:internal,beta", org_tags="internal:org_a")
    async with gateway_client(settings) as http:
        assert await _status(http, "GET", SUBSCRIPTIONS, _portal("org_a")) == 503
        assert await _status(http, "GET", SUBSCRIPTIONS, _portal("org_c", ["beta"])) == 503
        assert await _status(http, "GET", SUBSCRIPTIONS, _portal("org_c", ["gamma"])) == 404
        assert await _status(http, "GET", SUBSCRIPTIONS, _portal("org_c")) == 404


async def test_admin_cohort_is_the_staff_tokens_org() -> None:
    settings = _settings(admin_billing_enabled="tags:internal", org_tags="internal:org_staff")
    staff = _bearer(subject="finance-1", org="org_staff", roles=["billing_admin"])
    tagged = _bearer(subject="finance-2", roles=["billing_admin"], org_tags=["internal"])
    orgless = _bearer(subject="finance-3", roles=["billing_admin"])
    outsider = _bearer(subject="finance-4", org="org_b", roles=["billing_admin"])
    metrics = "/super-admin/billing/v1/metrics"
    async with gateway_client(settings) as http:
        assert await _status(http, "GET", metrics, staff) == 503
        assert await _status(http, "GET", metrics, tagged) == 503
        assert await _status(http, "GET", metrics, orgless) == 404
        assert await _status(http, "GET", metrics, outsider) == 404
        audit = "/super-admin/billing/v1/audit"
        # Past the flags: the trail itself (200), or 503 where it is read from the services.
        assert await _status(http, "GET", audit, staff) in (200, 503)
        assert await _status(http, "GET", audit, outsider) == 404
        context = "/super-admin/billing/v1/orgs/org_z/context"
        assert await _status(http, "GET", context, staff) == 200  # parts unavailable, not 404
        assert await _status(http, "GET", context, orgless) == 404


async def test_internal_cohort_is_every_org_the_request_names() -> None:
    def events(*orgs: str) -> dict[str, Any]:
        return {
            "events": [
                {"orgId": o, "metricCode": "api_calls", "value": "1", "idempotencyKey": f"k{i}"}
                for i, o in enumerate(orgs)
            ]
        }

    settings = _settings(internal_billing_enabled="tags:internal", org_tags="internal:org_a,org_b")
    async with gateway_client(settings) as http:
        check = {"orgId": "org_a", "featureKey": "seats"}
        assert await _status(http, "POST", ENTITLEMENT, API_KEY, check) == 503
        assert await _status(http, "POST", ENTITLEMENT, API_KEY, {**check, "orgId": "org_c"}) == 404
        # The usage batch (the codec's fast path): the whole batch is decided.
        assert await _status(http, "POST", BATCH, API_KEY, events("org_a", "org_b")) == 503
        assert await _status(http, "POST", BATCH, API_KEY, events("org_a", "org_c")) == 404
        # No org named: the service token's own org decides; an API key has none.
        assert await _status(http, "POST", ENTITLEMENT, API_KEY, {"featureKey": "seats"}) == 404
        own = _bearer(subject="service:p", service="p", org="org_b")
        assert await _status(http, "POST", ENTITLEMENT, own, {"featureKey": "seats"}) == 503
        # A service token's org_tags claim does not vouch for the orgs it names.
        claimed = _bearer(subject="service:p", service="p", org_tags=["internal"])
        assert await _status(http, "POST", ENTITLEMENT, claimed, {**check, "orgId": "org_c"}) == 404


async def test_features_answer_each_orgs_view_even_where_the_portal_is_off() -> None:
    settings = _settings(
        portal_billing_enabled="tags:beta",
        admin_billing_enabled="orgs:org_staff",
        internal_billing_enabled="true",
        org_tags="beta:org_a",
        rate_limit_per_subject="3/minute",
    )
    path = "/portal/billing/v1/features"
    async with gateway_client(settings) as http:
        a = await http.get(path, headers=_portal("org_a"))
        assert a.status_code == 200
        assert a.json() == {
            "orgId": "org_a",
            "features": {"portal": True, "admin": False, "internal": True},
        }
        b = await http.get(path, headers=_portal("org_b"))
        assert b.json() == {
            "orgId": "org_b",
            "features": {"portal": False, "admin": False, "internal": True},
        }
        staff = await http.get(path, headers=_portal("org_staff", ["beta"]))
        assert staff.json()["features"] == {"portal": True, "admin": True, "internal": True}
        # A portal call like the others: token, permission, rate limit.
        assert (await http.get(path)).status_code == 401
        no_permission = _bearer(subject="u", org="org_a")
        assert (await http.get(path, headers=no_permission)).status_code == 403
        alice = _portal("org_c")
        for _ in range(3):
            assert (await http.get(path, headers=alice)).status_code == 200
        limited = await http.get(path, headers=alice)
        assert limited.status_code == 429 and limited.json()["reason"] == "RATE_LIMITED"
        assert "200" in (await http.get("/openapi.json")).json()["paths"][path]["get"]["responses"]

    async with gateway_client(_settings(portal_billing_enabled=False)) as http:
        off = await http.get(path, headers=_portal("org_a"))
        assert off.status_code == 200
        assert off.json()["features"] == {"portal": False, "admin": True, "internal": True}
        assert await _status(http, "GET", SUBSCRIPTIONS, _portal("org_a")) == 404


def test_a_malformed_flag_fails_the_gateway_start_in_one_line() -> None:
    result = tally(
        "serve",
        "gateway",
        env={
            "GATEWAY_HTTP_PORT": str(free_port()),
            "GATEWAY_PORTAL_BILLING_ENABLED": "tag:internal",
        },
    )
    assert_one_error_line(
        result, "GATEWAY_PORTAL_BILLING_ENABLED or PORTAL_BILLING_ENABLED", "unknown kind 'tag'"
    )
