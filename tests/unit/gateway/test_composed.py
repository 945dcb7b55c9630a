"""The admin support view: parts, unavailable services, policy answers."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import overview
from gateway.problems import Problem

ADMIN = "/super-admin/billing/v1"


def fake_call(answers: dict[str, dict[str, Any] | Problem]) -> overview.RouteCall:
    async def call(method: str, target: str) -> dict[str, Any]:
        assert method == "GET"
        answer = answers[target]
        if isinstance(answer, Problem):
            raise answer
        return answer

    return call


async def test_support_context_with_payments_unimplemented() -> None:
    org = f"{ADMIN}/orgs/org_1"
    call = fake_call(
        {
            f"{org}/subscriptions": {
                "subscriptions": [
                    {"subscriptionId": "sub_old", "state": "SUBSCRIPTION_STATE_CANCELED"},
                    {"subscriptionId": "sub_1", "state": "SUBSCRIPTION_STATE_ACTIVE"},
                ]
            },
            f"{org}/invoices": {"invoices": [{"invoiceId": "in_1"}]},
            f"{org}/creditBalance": {"balance": {"amount": "5.00"}},
            f"{org}/paymentMethods": Problem(501, "not implemented", "UNIMPLEMENTED"),
            f"{ADMIN}/subscriptions/sub_1/aggregates": {"aggregates": [{"metricCode": "api"}]},
        }
    )
    context = await overview.compose_support_context("org_1", call)
    assert context["currentSubscription"]["subscriptionId"] == "sub_1"
    assert len(context["subscriptions"]) == 2
    assert context["usage"] == [{"metricCode": "api"}]
    assert context["invoices"] == [{"invoiceId": "in_1"}]
    assert context["creditBalance"] == {"balance": {"amount": "5.00"}}
    assert context["paymentMethods"] is None
    assert context["unavailable"] == [
        {"part": "paymentMethods", "status": 501, "reason": "UNIMPLEMENTED"}
    ]


async def test_support_context_quotes_the_org_and_lets_policy_answers_through() -> None:
    org = f"{ADMIN}/orgs/a%2Fb%3F"
    ok: dict[str, dict[str, Any] | Problem] = {
        f"{org}/subscriptions": {},
        f"{org}/invoices": {},
        f"{org}/creditBalance": {},
        f"{org}/paymentMethods": {},
    }
    context = await overview.compose_support_context("a/b?", fake_call(ok))
    assert context["subscriptions"] == [] and context["usage"] is None
    assert context["unavailable"] == []
    limited = {**ok, f"{org}/invoices": Problem(429, "slow down", "RATE_LIMITED")}
    with pytest.raises(Problem) as caught:
        await overview.compose_support_context("a/b?", fake_call(limited))
    assert caught.value.status == 429
