"""The catalog editor in-process, against a fake gateway answering as the real one."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import httpx
import pytest
from google.protobuf import json_format
from tally.catalog.v1 import resources_pb2 as pb

from tests.support.console_app import form_value, production_settings
from tests.support.gateway import token
from tests.unit.console.conftest import MakeConsole

ADMIN = "/super-admin/billing/v1"
AUTH = {"Authorization": f"Bearer {token(roles=['billing_admin'])}"}
TIERS = "draft.charges[0].graduated.tiers"
DRAFT = {
    "packageVersionId": "pkv_1",
    "version": 1,
    "state": "PACKAGE_VERSION_STATE_DRAFT",
    "name": "UI Pro",
    "currencyCode": "USD",
    "billingInterval": "BILLING_INTERVAL_MONTHLY",
    "charges": [
        {
            "metricId": "met_1",
            "graduated": {"tiers": [{"upTo": "100", "unitAmount": "0"}, {"unitAmount": "0.0125"}]},
        }
    ],
}
PACKAGE = {
    "packageId": "pkg_1",
    "code": "ui_pro",
    "state": "PACKAGE_STATE_DRAFT",
    "draftVersion": DRAFT,
}


class FakeGateway:
    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []
        self.answers: dict[tuple[str, str], httpx.Response] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        path = request.url.path
        if (request.method, path) in self.answers:
            return self.answers[(request.method, path)]
        if path == f"{ADMIN}/packages/pkg_1":
            return httpx.Response(200, json={"package": PACKAGE})
        if path == f"{ADMIN}/packages/pkg_1/versions":
            return httpx.Response(200, json={"packageVersions": [DRAFT]})
        if path == f"{ADMIN}/metrics":
            metric = {"metricId": "met_1", "code": "ui_calls", "state": "METRIC_STATE_ACTIVE"}
            return httpx.Response(200, json={"metrics": [metric]})
        return httpx.Response(200, json={})

    def writes(self) -> list[httpx.Request]:
        return [r for r in self.sent if r.method != "GET"]


@pytest.fixture
def fake(make_console: MakeConsole) -> tuple[FakeGateway, httpx.AsyncClient]:
    gateway = FakeGateway()
    client = make_console(
        gateway, production_settings(), base_url="https://console.test", headers=AUTH
    )
    return gateway, client


async def editor_form(client: httpx.AsyncClient) -> dict[str, str]:
    page = await client.get("/admin/catalog/packages/pkg_1")
    assert page.status_code == 200
    return {
        "csrf_token": form_value(page.text, "csrf_token"),
        "request_id": form_value(page.text, "request_id"),
        "draft.name": "UI Pro",
        "draft.currency_code": "USD",
        "draft.billing_interval": "BILLING_INTERVAL_MONTHLY",
        "draft.charges[0].metric_id": "met_1",
        "draft.charges[0].model": "graduated",
        "draft.charges[0].rendered_model": "graduated",
        f"{TIERS}[0].up_to": "100",
        f"{TIERS}[0].unit_amount": "0",
        f"{TIERS}[1].up_to": "50",
        f"{TIERS}[1].unit_amount": "0.01",
        f"{TIERS}[2].unit_amount": "0.0125",
    }


async def test_a_refused_save_shows_the_violation_on_its_tier_and_keeps_the_request_id(
    fake: tuple[FakeGateway, httpx.AsyncClient],
) -> None:
    gateway, client = fake
    gateway.answers[("PATCH", f"{ADMIN}/packages/pkg_1")] = httpx.Response(
        400,
        json={
            "status": 400,
            "title": "Bad Request",
            "violations": [{"field": f"{TIERS}[1].up_to", "description": "increasing order <b>"}],
        },
    )
    form = await editor_form(client)
    answer = await client.post("/admin/catalog/packages/pkg_1", data={**form, "action": "save"})
    assert answer.status_code == 400
    (patch,) = gateway.writes()
    body = json.loads(patch.content)
    assert patch.headers["x-request-id"] == body["request_id"] == form["request_id"]
    assert [t.get("up_to") for t in body["draft"]["charges"][0]["graduated"]["tiers"]] == [
        "100",
        "50",
        None,
    ]
    tier = re.search(r'<tr data-tier="1">.*?</tr>', answer.text, re.S)
    assert tier and f'data-field="{TIERS}[1].up_to">increasing order &lt;b&gt;' in tier[0]
    assert form_value(answer.text, "request_id") == form["request_id"]
    assert form_value(answer.text, f"{TIERS}[1].up_to") == "50"


async def test_row_buttons_only_re_render(fake: tuple[FakeGateway, httpx.AsyncClient]) -> None:
    gateway, client = fake
    form = await editor_form(client)
    answer = await client.post(
        "/admin/catalog/packages/pkg_1", data={**form, "action": "add_tier:0"}
    )
    assert answer.status_code == 200
    assert gateway.writes() == []
    assert len(re.findall(r"<tr data-tier=", answer.text)) == 4
    assert form_value(answer.text, f"{TIERS}[3].unit_amount") == "0.0125"  # still the last


async def test_the_cost_box_rates_the_typed_charge_under_its_own_request_id(
    fake: tuple[FakeGateway, httpx.AsyncClient],
) -> None:
    gateway, client = fake
    rated = {
        "amount": "17.50",
        "amountMinor": "1750",
        "currencyCode": "USD",
        "unroundedAmount": "17.5000",
        "details": [{"description": "tier 2", "quantity": "1400", "amount": "17.5000"}],
    }
    gateway.answers[("POST", f"{ADMIN}/charges:preview")] = httpx.Response(200, json=rated)
    form = await editor_form(client)
    del form[f"{TIERS}[1].up_to"], form[f"{TIERS}[1].unit_amount"]
    data = {**form, "action": "preview", "preview.charge": "0", "preview.quantity": "1500"}
    answer = await client.post("/admin/catalog/packages/pkg_1", data=data)
    assert answer.status_code == 200
    (call,) = gateway.writes()
    body = json.loads(call.content)
    assert body["quantity"] == "1500" and body["currency_code"] == "USD"
    assert body["charge"]["graduated"]["tiers"][0] == {"up_to": "100", "unit_amount": "0"}
    assert call.headers["x-request-id"] != form["request_id"]
    assert 'data-amount-minor="1750"' in answer.text and "$17.50" in answer.text
    assert 'data-step="0"' in answer.text


async def test_a_refused_preview_lands_on_the_charges_inputs(
    fake: tuple[FakeGateway, httpx.AsyncClient],
) -> None:
    gateway, client = fake
    gateway.answers[("POST", f"{ADMIN}/charges:preview")] = httpx.Response(
        400,
        json={
            "status": 400,
            "violations": [
                {"field": "charge.graduated.tiers[1].up_to", "description": "out of order"},
                {"field": "quantity", "description": "not a decimal"},
            ],
        },
    )
    form = await editor_form(client)
    data = {**form, "action": "preview", "preview.quantity": "lots"}
    answer = await client.post("/admin/catalog/packages/pkg_1", data=data)
    assert answer.status_code == 400
    assert f'data-field="{TIERS}[1].up_to">out of order' in answer.text
    assert 'data-field="preview.quantity">not a decimal' in answer.text
    assert 'id="unplaced"' not in answer.text


async def test_support_sees_no_buttons_and_its_forged_save_is_the_403_message(
    fake: tuple[FakeGateway, httpx.AsyncClient],
) -> None:
    gateway, client = fake
    client.headers["Authorization"] = f"Bearer {token(roles=['billing_support'])}"
    gateway.answers[("PATCH", f"{ADMIN}/packages/pkg_1")] = httpx.Response(
        403, json={"status": 403, "detail": "billing_support may read, not change"}
    )
    form = await editor_form(client)
    page = await client.get("/admin/catalog/packages/pkg_1")
    assert 'name="action"' not in page.text and "Publish draft" not in page.text
    answer = await client.post("/admin/catalog/packages/pkg_1", data={**form, "action": "save"})
    assert answer.status_code == 403
    assert "Not allowed: your role may view the catalog but not change it" in answer.text


class EditorFields(HTMLParser):
    """What a browser submits from the editor form: inputs, checked boxes, selected options."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.inside = False
        self.select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == "editor"
        if not self.inside or "disabled" in a:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") != "checkbox" or "checked" in a:
                self.fields[a["name"]] = a.get("value", "")
        elif tag == "select":
            self.select = a.get("name")
        elif (
            tag == "option" and self.select and ("selected" in a or self.select not in self.fields)
        ):
            self.fields[self.select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        if tag == "select":
            self.select = None


EVERY_MODEL = {
    **DRAFT,
    "baseFeeAmount": "49.00",
    "baseFeeTiming": "BASE_FEE_TIMING_IN_ARREARS",
    "trialDays": 14,
    "charges": [
        {"metricId": "met_1", "standard": {"unitAmount": "0.25"}, "minimumAmount": "10"},
        {
            "metricId": "met_1",
            "graduated": {
                "tiers": [
                    {"upTo": "100", "unitAmount": "0", "flatAmount": "5"},
                    {"unitAmount": "1"},
                ]
            },
        },
        {
            "metricId": "met_1",
            "volume": {"tiers": [{"upTo": "10", "unitAmount": "2"}, {"unitAmount": "1"}]},
        },
        {
            "metricId": "met_1",
            "package": {"packageSize": "100", "packageAmount": "5", "freeUnits": "50"},
        },
        {
            "metricId": "met_1",
            "percentage": {
                "rate": "2.9",
                "fixedAmount": "0.30",
                "freeUnitsPerEvents": "3",
                "freeUnitsPerTotalAggregation": "100",
                "perTransactionMinAmount": "0.50",
                "perTransactionMaxAmount": "20",
            },
        },
        {
            "metricId": "met_1",
            "displayName": "Payments <i>",
            "graduatedPercentage": {
                "tiers": [{"upTo": "1000", "rate": "3", "flatAmount": "1"}, {"rate": "2"}]
            },
        },
    ],
    "featureLimits": [
        {
            "featureKey": "ui_calls",
            "limit": "5000",
            "enforcement": "LIMIT_ENFORCEMENT_SOFT",
            "resetsEachPeriod": True,
            "metricCode": "ui_calls",
        },
        {"featureKey": "sso", "unlimited": True},
    ],
}


async def test_the_editor_saved_as_shown_sends_back_the_same_version_for_every_model(
    fake: tuple[FakeGateway, httpx.AsyncClient],
) -> None:
    gateway, client = fake
    stored = {**PACKAGE, "draftVersion": EVERY_MODEL}
    gateway.answers[("GET", f"{ADMIN}/packages/pkg_1")] = httpx.Response(
        200, json={"package": stored}
    )
    page = await client.get("/admin/catalog/packages/pkg_1")
    assert page.status_code == 200
    parser = EditorFields()
    parser.feed(page.text)
    answer = await client.post(
        "/admin/catalog/packages/pkg_1", data={**parser.fields, "action": "save"}
    )
    assert answer.status_code == 303
    (patch,) = gateway.writes()
    sent = json.loads(patch.content)["draft"]
    keep = {"name", "currencyCode", "billingInterval", "baseFeeAmount", "baseFeeTiming"}
    expected = {
        k: v
        for k, v in EVERY_MODEL.items()
        if k in keep | {"trialDays", "charges", "featureLimits"}
    }
    as_sent = json_format.MessageToDict(json_format.ParseDict(sent, pb.PackageVersion()))
    assert as_sent == json_format.MessageToDict(
        json_format.ParseDict(expected, pb.PackageVersion())
    )
