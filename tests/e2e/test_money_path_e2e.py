"""The money path as users drive it, against the suite's separate processes.

Admin (HTTP, staff token) builds and publishes a package; portal users (HTTP,
org tokens) attach cards through the local Stripe emulator and subscribe; a
product workload sends usage with the emitter client (duplicates and a
burst) and asks for entitlements; the billing clock closes periods; payments
collects by webhook, dunning walks a declined card to past_due and back; a
credit memo is consumed by the next invoice; plans change mid-period, at
period end, and a subscription cancels at period end. Every step reads the
same facts from the portal and from the admin side. At the end every Stripe
webhook is sent again, twice and out of order, and ``tally verify`` is clean.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.descriptors import http_bindings
from services.kit.devstack.suite import Suite
from services.usage.emitter import EmitterConfig, UsageEmitter
from services.verify.run import verify
from tests.support.e2e import replay_stripe_webhooks, running_suite
from tests.support.gateway import admin_headers, portal_headers, service_headers

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ADMIN = "/super-admin/billing/v1"
PORTAL = "/portal/billing/v1"
INTERNAL = "/internal/billing/v1"
BASIC_FEE, PRO_FEE = 2000, 5000  # minor units of the two plans' monthly fees
LIMIT = 150  # hard api_calls limit per period
FREE_CALLS = 100  # graduated: the first 100 calls cost nothing, then 0.10 each


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def minor(money: dict[str, Any] | None) -> int:
    return int((money or {}).get("amountMinor", 0))


@dataclass
class Http:
    client: httpx.AsyncClient

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> dict[str, Any]:
        r = await self.client.request(
            method, path, headers=headers, **({} if body is None else {"json": body})
        )
        assert r.status_code == 200, (method, path, r.status_code, r.text)
        return r.json()  # type: ignore[no-any-return]

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await self.call(method, f"{ADMIN}{path}", admin_headers(), body)

    async def portal(self, org: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await self.call(method, f"{PORTAL}{path}", portal_headers(org), body)

    async def internal(self, path: str, body: Any) -> dict[str, Any]:
        return await self.call("POST", f"{INTERNAL}{path}", service_headers(), body)


async def until(
    attempt: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], seconds: float = 30
) -> Any:
    """Views follow events a moment later: retry until the answer is the one wanted."""
    deadline = asyncio.get_running_loop().time() + seconds
    last: Any = None
    while True:
        try:
            last = await attempt()
            if ok(last):
                return last
        except AssertionError as exc:
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {seconds}s; last answer: {last}")
        await asyncio.sleep(0.3)


@dataclass
class World:
    suite: Suite
    http: Http
    packages: dict[str, str] = field(default_factory=dict)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    period_end: datetime | None = None


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(
        Path(tmp_path_factory.mktemp("money")),
        # Dunning retries at once, checked every second, so a test sees all of them.
        PAYMENTS_DUNNING_RETRY_DAYS="0,0",
        PAYMENTS_DUNNING_INTERVAL_SECONDS="1",
        PAYMENTS_DISPATCH_INTERVAL_SECONDS="0.5",
    ) as running:
        yield running


def payments_ready(suite: Suite) -> bool:
    return suite.stripe is not None


@pytest.fixture(scope="module")
async def world(suite: Suite) -> AsyncIterator[World]:
    if not payments_ready(suite):
        pytest.skip("payments has no Stripe settings or the emulator is missing")
    async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=30) as client:
        yield World(suite, Http(client))


# -------------------------------------------------------------- 1. the catalog


async def test_1_admin_publishes_packages(world: World) -> None:
    http = world.http
    metric = await http.admin(
        "POST",
        "/metrics",
        {"metric": {"code": "api_calls", "name": "API calls", "aggregation": "AGGREGATION_COUNT"}},
    )
    metric_id = metric["metric"]["metricId"]

    def draft(name: str, fee: int) -> dict[str, Any]:
        return {
            "name": name,
            "currencyCode": "USD",
            "billingInterval": "BILLING_INTERVAL_MONTHLY",
            "baseFeeAmount": str(Decimal(fee) / 100),
            "baseFeeTiming": "BASE_FEE_TIMING_IN_ADVANCE",
            "charges": [
                {
                    "metricId": metric_id,
                    "graduated": {
                        "tiers": [
                            {"upTo": str(FREE_CALLS), "unitAmount": "0"},
                            {"unitAmount": "0.10"},
                        ]
                    },
                }
            ],
            "featureLimits": [
                {
                    "featureKey": "api_calls",
                    "limit": str(LIMIT),
                    "enforcement": "LIMIT_ENFORCEMENT_HARD",
                    "resetsEachPeriod": True,
                    "metricCode": "api_calls",
                }
            ],
        }

    for code, fee in (("basic", BASIC_FEE), ("pro", PRO_FEE)):
        created = await http.admin("POST", "/packages", {"code": code, "draft": draft(code, fee)})
        package_id = created["package"]["packageId"]
        await http.admin("POST", f"/packages/{package_id}:publish", {})
        world.packages[code] = package_id

    # The portal's catalog and the admin's show the same published versions.
    portal = await http.portal("org_a", "GET", "/packages")
    admin = await http.admin("GET", "/packages")
    for package_id in world.packages.values():
        assert package_id in json.dumps(portal) and package_id in json.dumps(admin)


# -------------------------------------------- 2. cards, subscriptions, limits


async def attach_card(world: World, org: str, card: str) -> dict[str, Any]:
    attached = await world.http.portal(
        org,
        "POST",
        "/paymentMethods:attach",
        {"providerPaymentMethodId": card, "setDefault": True, "requestId": f"attach-{org}-{card}"},
    )
    method: dict[str, Any] = attached["paymentMethod"]
    assert method.get("isDefault") is True
    return method


async def subscribe(world: World, org: str, package: str) -> dict[str, Any]:
    http = world.http
    created = await until(
        lambda: http.portal(
            org,
            "POST",
            "/subscriptions",
            {
                "packageId": world.packages[package],
                # Whole periods from today: the amounts do not depend on the date.
                "billingAnchor": "BILLING_ANCHOR_ANNIVERSARY",
                "requestId": f"sub-{org}",
            },
        ),
        lambda r: bool(r["subscription"]["subscriptionId"]),
    )
    sub: dict[str, Any] = created["subscription"]
    world.subs[org] = sub
    return sub


async def entitlement(world: World, org: str, quantity: int = 1) -> dict[str, Any]:
    return await world.http.internal(
        "/entitlements:check",
        {"orgId": org, "featureKey": "api_calls", "quantity": str(quantity)},
    )


async def test_2_portal_attaches_cards_and_subscribes(world: World) -> None:
    http = world.http
    card = await attach_card(world, "org_a", "pm_card_visa")
    world.ids["payment_method_id"] = card["paymentMethodId"]
    await attach_card(world, "org_b", "pm_card_chargeDeclined")
    for org, package in (("org_a", "basic"), ("org_b", "basic"), ("org_c", "basic")):
        sub = await subscribe(world, org, package)
        admin_view = await http.admin("GET", f"/subscriptions/{sub['subscriptionId']}")
        assert admin_view["subscription"]["orgId"] == org
        assert admin_view["subscription"]["state"] == "SUBSCRIPTION_STATE_ACTIVE"
        methods = await http.admin("GET", f"/orgs/{org}/paymentMethods")
        mine = await http.portal(org, "GET", "/paymentMethods")
        assert methods == mine
    world.period_end = max(instant(s["currentPeriodEndTime"]) for s in world.subs.values())
    allowed = await until(lambda: entitlement(world, "org_a"), lambda r: r.get("allowed") is True)
    assert allowed.get("limit") == str(LIMIT)


# ------------------------------------------------ 3. usage from the workload


async def test_3_usage_with_duplicates_and_a_burst(world: World) -> None:
    address = world.suite.service_address("usage")
    async with UsageEmitter(EmitterConfig(address=address, flush_interval=0.05)) as emitter:
        for i in range(120):
            emitter.emit("org_a", "api_calls", idempotency_key=f"a-{i}")
        for i in range(20):  # a retrying client sends some again
            emitter.emit("org_a", "api_calls", idempotency_key=f"a-{i}")
        await emitter.flush(30)
        below = await until(lambda: entitlement(world, "org_a"), lambda r: r.get("used") == "120")
        assert below.get("allowed") is True
        for i in range(120, LIMIT):  # a burst up to the hard limit
            emitter.emit("org_a", "api_calls", idempotency_key=f"a-{i}")
        await emitter.flush(30)
    assert emitter.stats.accepted == LIMIT
    assert emitter.stats.duplicates == 20
    assert emitter.stats.rejected == emitter.stats.dropped == 0
    denied = await until(lambda: entitlement(world, "org_a"), lambda r: r.get("used") == str(LIMIT))
    assert denied.get("allowed", False) is False
    # The portal's usage chart and the admin's explorer agree on the count.
    sid = world.subs["org_a"]["subscriptionId"]
    portal = await world.http.portal("org_a", "GET", f"/subscriptions/{sid}/aggregates")
    admin = await world.http.admin("GET", f"/subscriptions/{sid}/aggregates")
    assert portal == admin
    assert str(LIMIT) in json.dumps(portal)


# --------------------------------------------------- 5a. plan changes (org C)


def prorated(fee_minor: int, seconds: int, period_seconds: int) -> int:
    exact = Decimal(fee_minor) * seconds / period_seconds
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def invoices_of(world: World, org: str) -> list[dict[str, Any]]:
    listed = await world.http.portal(org, "GET", "/invoices")
    admin = await world.http.admin("GET", f"/orgs/{org}/invoices")
    assert listed == admin  # the portal and the admin read the same invoices
    return sorted(listed.get("invoices", []), key=lambda i: i.get("sequenceNumber", "0"))


async def test_5_upgrade_now_then_downgrade_at_period_end(world: World) -> None:
    http = world.http
    sub = world.subs["org_c"]
    sid = sub["subscriptionId"]
    upgraded = await http.portal(
        "org_c",
        "POST",
        f"/subscriptions/{sid}:changePlan",
        {
            "packageId": world.packages["pro"],
            "timing": "PLAN_CHANGE_TIMING_IMMEDIATE",
            "requestId": "c-upgrade",
        },
    )
    effective = instant(upgraded["effectiveTime"])
    start, end = instant(sub["currentPeriodStartTime"]), instant(sub["currentPeriodEndTime"])
    period = int((end - start).total_seconds())
    rest = int((end - effective).total_seconds())
    # Nothing was billed in advance yet (the first period is invoiced at its
    # close), so the upgrade invoices the new fee for the rest of the period.
    [change] = await until(lambda: invoices_of(world, "org_c"), lambda i: len(i) == 1)
    assert change["reason"] == "INVOICE_REASON_PLAN_CHANGE"
    assert [(li["kind"], minor(li["amount"])) for li in change["lines"]] == [
        ("INVOICE_LINE_KIND_BASE_FEE", prorated(PRO_FEE, rest, period))
    ]
    assert minor(change["total"]) == prorated(PRO_FEE, rest, period)
    world.invoices["c_change"] = change

    downgraded = await http.portal(
        "org_c",
        "POST",
        f"/subscriptions/{sid}:changePlan",
        {
            "packageId": world.packages["basic"],
            "timing": "PLAN_CHANGE_TIMING_PERIOD_END",
            "requestId": "c-downgrade",
        },
    )
    assert instant(downgraded["effectiveTime"]) == end
    schedules = await http.admin("GET", f"/subscriptions/{sid}/schedules")
    assert schedules == await http.portal("org_c", "GET", f"/subscriptions/{sid}/schedules")
    assert world.packages["basic"] in json.dumps(schedules) or schedules.get("schedules")


# ------------------------------------- 4. the billing clock closes period one


async def close_periods(world: World, now: datetime) -> None:
    await world.http.admin("POST", "/subscriptions:closePeriods", {"now": iso(now)})


async def test_4_period_close_invoices_and_card_payment(world: World) -> None:
    assert world.period_end is not None
    await close_periods(world, world.period_end + timedelta(seconds=1))
    # Org A: 20.00 for the closed period, 20.00 in advance, 50 calls over 100 at 0.10.
    invoices = await until(
        lambda: invoices_of(world, "org_a"),
        lambda i: len(i) == 1 and i[0]["state"] == "INVOICE_STATE_PAID",
        60,
    )
    [invoice] = invoices
    usage_amount = (LIMIT - FREE_CALLS) * 10
    assert [(li["kind"], minor(li["amount"])) for li in invoice["lines"]] == [
        ("INVOICE_LINE_KIND_BASE_FEE", BASIC_FEE),
        ("INVOICE_LINE_KIND_BASE_FEE", BASIC_FEE),
        ("INVOICE_LINE_KIND_USAGE", usage_amount),
    ]
    assert minor(invoice["total"]) == 2 * BASIC_FEE + usage_amount
    assert minor(invoice["amountPaid"]) == minor(invoice["total"])
    assert minor(invoice.get("amountDue")) == 0
    world.invoices["a1"] = invoice
    # The payment as each side sees it: one, succeeded, for the invoice's total.
    portal = await world.http.portal("org_a", "GET", "/payments")
    admin = await world.http.admin("GET", f"/orgs/{'org_a'}/payments")
    assert portal == admin
    [payment] = portal["payments"]
    assert payment["state"] == "PAYMENT_STATE_SUCCEEDED"
    assert payment["invoiceId"] == invoice["invoiceId"]
    assert minor(payment["amount"]) == minor(invoice["total"])


# ----------------------------------------- 6. a declined card, dunning, recovery


async def test_6_declined_card_goes_past_due_and_recovers(world: World) -> None:
    http = world.http
    sid = world.subs["org_b"]["subscriptionId"]
    past_due = await until(
        lambda: http.admin("GET", f"/subscriptions/{sid}"),
        lambda r: r["subscription"]["state"] == "SUBSCRIPTION_STATE_PAST_DUE",
        60,
    )
    assert past_due == await http.portal("org_b", "GET", f"/subscriptions/{sid}")
    [invoice] = await invoices_of(world, "org_b")
    assert invoice["state"] == "INVOICE_STATE_FINALIZED"
    assert minor(invoice["amountDue"]) == 2 * BASIC_FEE
    [payment] = (await http.portal("org_b", "GET", "/payments"))["payments"]
    assert payment["state"] == "PAYMENT_STATE_FAILED"
    attempts = await http.admin("GET", f"/payments/{payment['paymentId']}/attempts")
    assert [a["state"] for a in attempts["attempts"]] == ["ATTEMPT_STATE_FAILED"] * 3

    # A new card, and the org pays from the portal.
    await attach_card(world, "org_b", "pm_card_visa")
    await http.portal(
        "org_b", "POST", f"/invoices/{invoice['invoiceId']}:pay", {"requestId": "b-pay"}
    )
    paid = await until(
        lambda: http.portal("org_b", "GET", f"/invoices/{invoice['invoiceId']}"),
        lambda r: r["invoice"]["state"] == "INVOICE_STATE_PAID",
        60,
    )
    assert minor(paid["invoice"]["amountPaid"]) == 2 * BASIC_FEE
    assert paid == await http.admin("GET", f"/invoices/{invoice['invoiceId']}")
    await until(
        lambda: http.portal("org_b", "GET", f"/subscriptions/{sid}"),
        lambda r: r["subscription"]["state"] == "SUBSCRIPTION_STATE_ACTIVE",
        60,
    )


# --------------------------- 5b. the downgrade lands; cancel at period end (org C)


async def test_5b_downgrade_applies_at_close_and_cancel_at_period_end(world: World) -> None:
    http = world.http
    sid = world.subs["org_c"]["subscriptionId"]
    invoices = await until(
        lambda: invoices_of(world, "org_c"),
        lambda i: len(i) == 2,
        60,
    )
    close = invoices[1]
    assert close["reason"] == "INVOICE_REASON_PERIOD_CLOSE"
    kinds = [(li["kind"], li.get("packageVersionId", "")) for li in close["lines"]]
    # The next period is billed in advance on the plan the schedule moved to.
    after = await http.admin("GET", f"/subscriptions/{sid}")
    assert after["subscription"]["packageId"] == world.packages["basic"]
    assert (
        "INVOICE_LINE_KIND_BASE_FEE",
        after["subscription"]["packageVersionId"],
    ) in kinds
    assert sum(minor(li["amount"]) for li in close["lines"]) == minor(close["total"])

    canceled = await http.portal(
        "org_c",
        "POST",
        f"/subscriptions/{sid}:cancel",
        {"timing": "CANCEL_TIMING_PERIOD_END", "requestId": "c-cancel"},
    )
    assert canceled["subscription"]["cancelAtPeriodEnd"] is True
    world.invoices["c_close"] = close


# ------------------------------------------------ 7. a credit memo, consumed


async def test_7_credit_memo_is_consumed_by_the_next_invoice(world: World) -> None:
    http = world.http
    first = world.invoices["a1"]
    memo = await http.admin(
        "POST",
        f"/invoices/{first['invoiceId']}/creditMemos",
        {
            "lines": [
                {
                    "description": "goodwill",
                    "amount": {"currencyCode": "USD", "amountMinor": "1000"},
                }
            ],
            "reason": "CREDIT_MEMO_REASON_PRODUCT_UNSATISFACTORY",
            "settlement": "CREDIT_MEMO_SETTLEMENT_CREDIT_BALANCE",
            "requestId": "a-memo",
        },
    )
    assert minor(memo["creditMemo"]["amount"]) == 1000
    world.ids["credit_memo_id"] = memo["creditMemo"]["creditMemoId"]
    balance = await http.portal("org_a", "GET", "/creditBalance")
    assert balance == await http.admin("GET", "/orgs/org_a/creditBalance")
    assert "1000" in json.dumps(balance)

    # Everyone's second period ends within a few seconds of the others'.
    ends = [
        instant(
            (await http.admin("GET", f"/subscriptions/{s['subscriptionId']}"))["subscription"][
                "currentPeriodEndTime"
            ]
        )
        for s in world.subs.values()
    ]
    await close_periods(world, max(ends) + timedelta(seconds=1))
    invoices = await until(
        lambda: invoices_of(world, "org_a"),
        lambda i: len(i) == 2 and i[1]["state"] == "INVOICE_STATE_PAID",
        60,
    )
    second = invoices[1]
    # 20.00 in advance, no usage, 10.00 of credit applied.
    assert minor(second["subtotal"]) == BASIC_FEE
    assert minor(second["creditApplied"]) == 1000
    assert minor(second["total"]) == BASIC_FEE - 1000
    after = await http.portal("org_a", "GET", "/creditBalance")
    assert "1000" not in json.dumps(after)

    # Org C's cancellation took effect at that same close.
    sid = world.subs["org_c"]["subscriptionId"]
    ended = await until(
        lambda: http.admin("GET", f"/subscriptions/{sid}"),
        lambda r: r["subscription"]["state"] == "SUBSCRIPTION_STATE_CANCELED",
        60,
    )
    assert ended == await http.portal("org_c", "GET", f"/subscriptions/{sid}")


# ------------------------------------- webhooks again, tenants, and the ledger


async def test_webhooks_twice_and_out_of_order_change_nothing(world: World) -> None:
    suite, http = world.suite, world.http
    assert suite.stripe is not None

    async def ledger() -> dict[str, Any]:
        invoices = {
            inv["number"]: (inv["state"], minor(inv.get("amountPaid")), minor(inv.get("amountDue")))
            for org in world.subs
            for inv in await invoices_of(world, org)
        }
        payments = {
            p["paymentId"]: (p["invoiceId"], p["state"], p.get("attemptCount", 0))
            for p in (await http.admin("GET", "/payments"))["payments"]
        }
        return {"invoices": invoices, "payments": payments}

    # Collection of the last close may still be under way: start from a still ledger.
    before = await ledger()
    for _ in range(60):
        await asyncio.sleep(1)
        now = await ledger()
        if now == before:
            break
        before = now
    assert await replay_stripe_webhooks(suite) > 0
    await asyncio.sleep(2)
    assert await ledger() == before


def valid_body(world: World, path: str) -> dict[str, Any]:
    """A body that would succeed for the owner, so only ownership can refuse it."""
    if path.endswith(":changePlan"):
        return {"packageId": world.packages["pro"], "timing": "PLAN_CHANGE_TIMING_IMMEDIATE"}
    if path.endswith(":cancel"):
        return {"timing": "CANCEL_TIMING_IMMEDIATE"}
    return {}


def valid_query(world: World, path: str) -> dict[str, str]:
    """Query parameters that make a GET valid but for whose resource it names."""
    if path.endswith(":previewPlanChange"):
        return {"packageId": world.packages["pro"]}
    return {}


async def test_other_orgs_resources_are_not_found(world: World) -> None:
    """Org B's token on org A's invoices, payments, memos and subscription: 404, no change."""
    http = world.http
    a_invoice = world.invoices["a1"]["invoiceId"]
    a_sub = world.subs["org_a"]["subscriptionId"]
    a_payment = (await http.portal("org_a", "GET", "/payments"))["payments"][0]["paymentId"]
    ids = {
        "invoice_id": a_invoice,
        "subscription_id": a_sub,
        "payment_id": a_payment,
        "credit_memo_id": world.ids["credit_memo_id"],
        "payment_method_id": world.ids["payment_method_id"],
    }
    before = await invoices_of(world, "org_a")
    checked = 0
    for binding in http_bindings():
        if not binding.path.startswith(PORTAL):
            continue
        names = [n.split(".")[-1] for n in re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", binding.path)]
        if not names or not all(n in ids for n in names):
            continue
        path = re.sub(
            r"\{([^}=]+)(?:=[^}]*)?\}", lambda m: ids[m.group(1).split(".")[-1]], binding.path
        )
        r = await http.client.request(
            binding.verb.upper(),
            path,
            headers=portal_headers("org_b"),
            params=valid_query(world, path),
            **({"json": valid_body(world, path)} if binding.body else {}),
        )
        assert r.status_code == 404, (binding.verb, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "org_a" not in r.text
        checked += 1
    assert checked >= 10
    assert await invoices_of(world, "org_a") == before
    methods = await http.portal("org_a", "GET", "/paymentMethods")
    assert [m["paymentMethodId"] for m in methods["paymentMethods"]] == [ids["payment_method_id"]]


async def test_the_ledger_verifies_clean(world: World) -> None:
    suite = world.suite
    report = await verify(
        suite.database_url, payments_addr=suite.service_address("payments"), settle_seconds=2
    )
    assert report.findings == [], report.render()
    assert report.checked["payments"] >= 3
