"""A Python client generated from the running gateway's ``/openapi.json`` works.

``openapi-python-client`` (dev dependency) generates a package into a temporary
directory once per module, from the document the app serves; the test imports
it from there and calls the gateway in front of the real catalog, subscriptions
and usage services: an admin POST with a body, a paged admin list (query
parameters), a portal GET with query parameters, and a composed route whose
answer is checked against its declared schema.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_python_client import generate
from openapi_python_client.config import Config, ConfigFile, MetaType

from tests.support.gateway import admin_headers, gateway_over_services, portal_headers

pytestmark = pytest.mark.integration

PACKAGE = "tally_client"


class _Through(httpx.AsyncBaseTransport):
    """The generated client's requests, sent by the harness's in-process client."""

    def __init__(self, harness: httpx.AsyncClient) -> None:
        self.harness = harness

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.harness.send(request)


@pytest.fixture(scope="module")
async def http(database_url: str, nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_over_services(database_url, nats_url) as client:
        yield client


@pytest.fixture(scope="module")
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    served = await http.get("/openapi.json")
    assert served.status_code == 200
    doc: dict[str, Any] = served.json()
    return doc


@pytest.fixture(scope="module")
def client_package(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("generated")
    source = root / "openapi.json"
    source.write_text(json.dumps(document))
    config = Config.from_sources(
        # The generator reads a document as bytes only when told its media
        # type is binary: how a client author configures it for the PDF routes.
        ConfigFile(
            package_name_override=PACKAGE,
            post_hooks=[],
            content_type_overrides={"application/pdf": "application/octet-stream"},
        ),
        MetaType.NONE,
        source,
        "utf-8",
        overwrite=True,
        output_path=root / PACKAGE,
    )
    errors = generate(config=config)
    # A warning is an operation or schema the generator could not read: a document bug.
    assert not errors, "\n".join(f"{e.header}: {e.detail}" for e in errors)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _unset() -> Any:
    return importlib.import_module(f"{PACKAGE}.types").UNSET


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def _client(package: ModuleType, http: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    token = headers["Authorization"].removeprefix("Bearer ")
    return package.AuthenticatedClient(
        base_url=str(http.base_url), token=token, httpx_args={"transport": _Through(http)}
    )


async def test_generated_client_creates_and_pages_metrics(
    client_package: ModuleType, http: httpx.AsyncClient
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    admin = _client(client_package, http, admin_headers(subject="generated-client"))
    create = _api("catalog.admin_catalog_create_metric")
    codes = [f"gen_{uuid.uuid4().hex[:8]}_{i}" for i in range(3)]
    for code in codes:
        body = models.TallyCatalogV1CreateMetricRequest.from_dict(
            {"metric": {"code": code, "name": code, "aggregation": "AGGREGATION_COUNT"}}
        )
        created = await create.asyncio_detailed(client=admin, body=body)
        assert created.status_code == 200, created.content
        assert created.parsed.metric.code == code
        assert created.parsed.metric.metric_id

    listing = _api("catalog.admin_catalog_list_metrics")
    seen: list[str] = []
    token: Any = _unset()
    pages = 0
    while True:
        page = await listing.asyncio_detailed(client=admin, page_size=2, page_token=token)
        assert page.status_code == 200, page.content
        metrics = page.parsed.metrics or []
        assert len(metrics) <= 2
        seen += [m.code for m in metrics]
        pages += 1
        token = page.parsed.next_page_token
        if not token:
            break
    assert set(codes) <= set(seen)
    assert len(seen) == len(set(seen))  # pages never overlap
    assert pages >= 2

    # A bad query value is the gateway's problem document, parsed as Problem.
    bad = await listing.asyncio_detailed(client=admin, page_size=-1)
    assert bad.status_code == 400
    assert bad.parsed.violations[0].field == "page_size"


async def test_generated_client_queries_usage_with_query_parameters(
    client_package: ModuleType, http: httpx.AsyncClient
) -> None:
    org = f"org_gen_{uuid.uuid4().hex[:6]}"
    portal = _client(client_package, http, portal_headers(org))
    query = _api("usage.portal_usage_query_usage")
    models = importlib.import_module(f"{PACKAGE}.models")
    code = f"gen_q_{uuid.uuid4().hex[:8]}"
    body = models.TallyCatalogV1CreateMetricRequest.from_dict(
        {
            "metric": {
                "code": code,
                "name": code,
                "aggregation": "AGGREGATION_SUM",
                "propertyKey": "n",
            }
        }
    )
    admin = _client(client_package, http, admin_headers(subject="generated-client"))
    created = await _api("catalog.admin_catalog_create_metric").asyncio_detailed(
        client=admin, body=body
    )
    assert created.status_code == 200, created.content
    start = datetime(2026, 11, 1, tzinfo=UTC)

    async def ask(metric_code: str) -> Any:
        return await query.asyncio_detailed(
            client=portal,
            metric_code=metric_code,
            start_time=start,
            end_time=start + timedelta(days=3),
            bucket=models.TallyUsageV1TimeBucket("TIME_BUCKET_DAY"),
        )

    unknown = await ask(f"{code}_nope")
    assert unknown.status_code == 404
    assert unknown.parsed.reason == "METRIC_NOT_FOUND"  # the query parameters reached usage
    # Usage learns of the metric from catalog's event a moment later.
    deadline = asyncio.get_running_loop().time() + 20
    answer = await ask(code)
    while answer.status_code == 404 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        answer = await ask(code)
    assert answer.status_code == 200, answer.content
    # Three daily buckets, as asked; nothing recorded for this org yet.
    buckets = answer.parsed.buckets
    assert [b.start_time for b in buckets] == [start + timedelta(days=d) for d in range(3)]
    assert [b.value for b in buckets] == ["0", "0", "0"]
    assert answer.parsed.aggregation.value == "AGGREGATION_SUM"


async def test_generated_client_reads_a_composed_route(
    client_package: ModuleType, http: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    org = f"org_gen_{uuid.uuid4().hex[:6]}"
    overview = _api("gateway.portal_gateway_overview")
    answer = await overview.asyncio_detailed(
        client=_client(client_package, http, portal_headers(org))
    )
    assert answer.status_code == 200, answer.content
    assert answer.parsed.org_id == org
    assert answer.parsed.subscription is None
    schema = document["paths"]["/portal/billing/v1/overview"]["get"]["responses"]["200"]
    declared = schema["content"]["application/json"]["schema"]
    Draft202012Validator({**declared, "components": document["components"]}).validate(
        json.loads(answer.content)
    )
