"""The audit trail's pure parts: what an entry names, and the gateway's merge of five pages.

The merge is checked against services modelled in memory with the kit's own
page tokens and the order PostgreSQL lists in (create_time, then the uuid),
so paging through the gateway must give every entry exactly once, newest
first, however the times tie across services.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tally.audit.v1 import audit_pb2
from tally.catalog.v1 import catalog_pb2
from tally.subscriptions.v1 import subscriptions_pb2

from gateway.audit import merge, split_services
from gateway.problems import Problem
from services.kit.audit import action_of, actor_of, describe, list_filters
from services.kit.pagination import PageToken
from services.kit.protoconv import to_timestamp

SERVICES = ["catalog", "invoicing", "payments", "subscriptions", "usage"]
EPOCH = datetime(2026, 11, 24, tzinfo=UTC)


def test_the_target_is_the_answered_resource_else_the_requests_id() -> None:
    create = catalog_pb2.CreateMetricRequest(request_id="r1")
    made = catalog_pb2.CreateMetricResponse()
    made.metric.metric_id = "met_1"
    assert describe(create, made) == ("", "met_1")
    # Refused: no answer, so the id the request named, nested or not.
    update = catalog_pb2.UpdateMetricRequest()
    update.metric.metric_id = "met_2"
    assert describe(update, None) == ("", "met_2")
    subscribe = subscriptions_pb2.CreateSubscriptionRequest(org_id="org_a", package_id="pkg_1")
    created = subscriptions_pb2.CreateSubscriptionResponse()
    created.subscription.subscription_id = "sub_1"
    created.subscription.org_id = "org_a"
    created.subscription.package_id = "pkg_1"
    assert describe(subscribe, created) == ("org_a", "sub_1")
    assert describe(subscribe, None) == ("org_a", "pkg_1")
    # An admin call names no org; the answered resource does.
    cancel = subscriptions_pb2.CancelSubscriptionRequest(subscription_id="sub_9")
    canceled = subscriptions_pb2.CancelSubscriptionResponse()
    canceled.subscription.subscription_id = "sub_9"
    canceled.subscription.org_id = "org_b"
    assert describe(cancel, canceled) == ("org_b", "sub_9")
    assert describe(subscriptions_pb2.ClosePeriodsRequest(), None) == ("", "")


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


def test_the_actor_is_the_callers_word_else_its_peer() -> None:
    told = FakeContext((("x-tally-actor", "finance-1"), ("x-tally-actor-role", "admin")), "p")
    assert actor_of(told) == ("finance-1", "admin")  # type: ignore[arg-type]
    assert actor_of(FakeContext((), "ipv4:10.0.0.7:5123")) == ("grpc:ipv4:10.0.0.7:5123", "")  # type: ignore[arg-type]
    assert actor_of(FakeContext((), "")) == ("unknown", "")  # type: ignore[arg-type]
    assert actor_of(None) == ("unknown", "")
    assert action_of("/tally.catalog.v1.CatalogService/CreateMetric") == (
        "tally.catalog.v1.CatalogService.CreateMetric"
    )


def test_services_are_named_or_all() -> None:
    assert split_services([("actor", "a")], SERVICES) == (SERVICES, [("actor", "a")])
    named, rest = split_services([("service", "usage"), ("service", "usage")], SERVICES)
    assert (named, rest) == (["usage"], [])
    with pytest.raises(Problem) as caught:
        split_services([("service", "ledger")], SERVICES)
    assert caught.value.status == 400


@dataclass
class ModelService:
    """A service's ListAuditEntries as the kit answers it, over entries in memory."""

    name: str
    entries: list[audit_pb2.AuditEntry]

    def list(self, request: audit_pb2.ListAuditEntriesRequest) -> Any:
        def key(e: audit_pb2.AuditEntry) -> tuple[datetime, str]:
            return e.create_time.ToDatetime(tzinfo=UTC), e.entry_id

        filters = list_filters(request)
        token = PageToken.decode(request.page_token, filters)
        rows = sorted(self.entries, key=key, reverse=True)
        if token is not None:
            after = (datetime.fromisoformat(token.after[0]), token.after[1])
            rows = [e for e in rows if key(e) < after]
        size = request.page_size
        reply = audit_pb2.ListAuditEntriesResponse(entries=rows[:size])
        if len(rows) > size:
            last = key(rows[size - 1])
            reply.next_page_token = PageToken(after=[last[0].isoformat(), last[1]]).encode(filters)
        return reply


def entry(service: str, offset_ms: int) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        entry_id=str(uuid.uuid4()),
        service=service,
        create_time=to_timestamp(EPOCH + timedelta(milliseconds=offset_ms)),
    )


@given(
    times=st.lists(
        st.tuples(st.sampled_from(SERVICES), st.integers(0, 5)), min_size=0, max_size=25
    ),
    size=st.integers(1, 4),
)
def test_paging_the_merge_gives_every_entry_once_newest_first(
    times: list[tuple[str, int]], size: int
) -> None:
    # Few distinct instants, so entries tie on time within and across services.
    services = [ModelService(name, []) for name in SERVICES]
    for service, offset in times:
        services[SERVICES.index(service)].entries.append(entry(service, offset))
    request = audit_pb2.ListAuditEntriesRequest(page_size=size)
    seen: list[audit_pb2.AuditEntry] = []
    for _ in range(len(times) + 2):
        page = merge([s.list(request) for s in services], request, size)
        assert len(page.entries) <= size
        seen.extend(page.entries)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    else:
        raise AssertionError("the pages never ended")
    everything = sorted(
        (e for s in services for e in s.entries),
        key=lambda e: (e.create_time.ToDatetime(tzinfo=UTC), e.entry_id),
        reverse=True,
    )
    assert [e.entry_id for e in seen] == [e.entry_id for e in everything]
