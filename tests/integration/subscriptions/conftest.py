"""Shared fixtures: the subscriptions service on real PostgreSQL and NATS,
with a small catalog published through real PackagePublishedEvents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from tally.catalog.v1 import resources_pb2 as catalog_pb2

from tests.support.subscriptions import Harness, package_version, running_service


@dataclass
class Catalog:
    basic: catalog_pb2.PackageVersion  # 10 USD/month, limits below
    pro: catalog_pb2.PackageVersion  # 30 USD/month: an upgrade from basic
    starter: catalog_pb2.PackageVersion  # 5 USD/month: a downgrade from basic
    euro: catalog_pb2.PackageVersion  # EUR: incompatible with basic
    trial: catalog_pb2.PackageVersion  # 14-day trial
    archived: catalog_pb2.PackageVersion  # published, then archived


LIMITS = [
    catalog_pb2.FeatureLimit(
        feature_key="api_calls",
        limit="100",
        enforcement=catalog_pb2.LIMIT_ENFORCEMENT_HARD,
        resets_each_period=True,
        metric_code="api_calls",
    ),
    catalog_pb2.FeatureLimit(
        feature_key="seats", limit="5", enforcement=catalog_pb2.LIMIT_ENFORCEMENT_SOFT
    ),
    catalog_pb2.FeatureLimit(
        feature_key="sso", unlimited=True, enforcement=catalog_pb2.LIMIT_ENFORCEMENT_HARD
    ),
]


@pytest.fixture(scope="module")
async def harness(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_service(database_url, nats_url) as h:
        yield h


@pytest.fixture(scope="module")
async def catalog(harness: Harness) -> Catalog:
    cat = Catalog(
        basic=package_version("basic", base_fee="10", limits=LIMITS),
        pro=package_version("pro", base_fee="30", limits=LIMITS),
        starter=package_version("starter", base_fee="5"),
        euro=package_version("euro", base_fee="10", currency="EUR"),
        trial=package_version("trial", base_fee="20", trial_days=14),
        archived=package_version("legacy", base_fee="10"),
    )
    for version in (cat.basic, cat.pro, cat.starter, cat.euro, cat.trial, cat.archived):
        await harness.publish_version(version)
    await harness.archive(cat.archived.package_id, cat.archived.package_code)
    return cat
