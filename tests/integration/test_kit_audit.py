"""The audit trail on real PostgreSQL: one entry per committed mutation, in its transaction.

The first half drives ``run_mutation`` over the kit probe's schema (no gRPC),
so a commit can be made to fail after the entry was written; the second half
calls a real catalog service over gRPC, directly and through the CLI's
channels, and reads the trail back with ``tally.audit.v1.AuditService``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from tally.audit.v1 import audit_pb2, audit_pb2_grpc
from tally.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog_resources

from services.kit import migrations
from services.kit.audit import AuditLog
from services.kit.db import Database
from services.kit.errors import FailedPrecondition
from services.kit.idempotency import RequestLog, run_mutation
from services.kit.outbox import Outbox
from services.kit.rpc.actor import cli_actor, cli_aio_channel, cli_channel
from services.kit.uow import UnitOfWork
from tests.support.catalog import metric
from tests.support.kit_probe import PROBE_SCHEMA, probe_databases, probe_metadata, probe_table
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration

AUDIT = probe_metadata.tables[f"{PROBE_SCHEMA}.audit_entry"]
OUTBOX = probe_metadata.tables[f"{PROBE_SCHEMA}.outbox_event"]
METHOD = "CreateMetric"


class CommitLost(UnitOfWork):
    """A unit whose commit never happens, after everything was written in it."""

    async def commit(self) -> None:
        raise ConnectionResetError("the connection dropped during COMMIT")


@dataclass
class Kit:
    database: Database
    requests: RequestLog

    def uow(self) -> UnitOfWork:
        return UnitOfWork(
            self.database, Outbox(probe_metadata.tables[f"{PROBE_SCHEMA}.outbox_event"])
        )

    def lost(self) -> UnitOfWork:
        return CommitLost(
            self.database, Outbox(probe_metadata.tables[f"{PROBE_SCHEMA}.outbox_event"])
        )

    async def entries(self, request_id: str) -> list[tuple[str, str, str]]:
        async with self.database.session() as session:
            rows = await session.execute(
                select(AUDIT.c.action, AUDIT.c.outcome, AUDIT.c.status_code)
                .where(AUDIT.c.request_id == request_id)
                .order_by(AUDIT.c.create_time)
            )
            return [tuple(r) for r in rows.all()]

    async def probes(self, probe_id: str) -> int:
        async with self.database.session() as session:
            count = await session.scalar(
                select(func.count()).where(probe_table.c.probe_id == probe_id)
            )
            return int(count or 0)

    async def mutate(
        self, request_id: str, *, how: str = "ok", audited: bool = True
    ) -> catalog_pb2.CreateMetricResponse:
        """One mutation that writes a probe row named by its request id."""

        async def work(uow: UnitOfWork) -> catalog_pb2.CreateMetricResponse:
            await uow.session.execute(probe_table.insert().values(probe_id=request_id))
            if how == "refuse":
                raise FailedPrecondition(message="refused", reason="PROBE_REFUSED")
            if how == "crash":
                raise RuntimeError("a bug in the use case")
            response = catalog_pb2.CreateMetricResponse()
            response.metric.metric_id = f"met_{request_id}"
            return response

        request = catalog_pb2.CreateMetricRequest(request_id=request_id)
        request.metric.code = "api_calls"
        return await run_mutation(
            self.lost if how == "lost" else self.uow,
            self.requests,
            METHOD,
            request,
            catalog_pb2.CreateMetricResponse,
            work,
            audited=audited,
        )


@pytest.fixture(scope="module")
async def kit(database_url: str) -> AsyncIterator[Kit]:
    async with probe_databases(database_url) as (producer, _):
        requests = RequestLog(
            probe_metadata.tables[f"{PROBE_SCHEMA}.idempotent_request"],
            audit=AuditLog(AUDIT, "probe"),
        )
        yield Kit(producer, requests)


def new_id() -> str:
    return f"req-{uuid.uuid4().hex[:10]}"


async def test_a_committed_mutation_leaves_exactly_one_entry_and_a_replay_none(kit: Kit) -> None:
    rid = new_id()
    first = await kit.mutate(rid)
    again = await kit.mutate(rid)
    assert again == first
    assert await kit.entries(rid) == [(METHOD, "OK", "OK")]
    assert await kit.probes(rid) == 1


async def test_a_transaction_that_rolls_back_leaves_no_entry(kit: Kit) -> None:
    # The entry was written before COMMIT failed: only one transaction holds
    # both, so neither the change nor its entry survives.
    rid = new_id()
    with pytest.raises(ConnectionResetError):
        await kit.mutate(rid, how="lost")
    assert await kit.probes(rid) == 0
    assert await kit.entries(rid) == []
    crashed = new_id()
    with pytest.raises(RuntimeError):
        await kit.mutate(crashed, how="crash")
    assert await kit.entries(crashed) == []


async def test_a_refusal_is_recorded_apart_while_its_change_rolls_back(kit: Kit) -> None:
    rid = new_id()
    with pytest.raises(FailedPrecondition):
        await kit.mutate(rid, how="refuse")
    assert await kit.probes(rid) == 0
    assert await kit.entries(rid) == [(METHOD, "PROBE_REFUSED", "FAILED_PRECONDITION")]


async def test_unaudited_mutations_write_no_entry(kit: Kit) -> None:
    rid = new_id()
    await kit.mutate(rid, audited=False)
    assert await kit.probes(rid) == 1
    assert await kit.entries(rid) == []


OUTCOMES = st.sampled_from(["ok", "replay", "refuse", "crash", "lost"])
OK_ENTRY = (METHOD, "OK", "OK")
REFUSED_ENTRY = (METHOD, "PROBE_REFUSED", "FAILED_PRECONDITION")


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(OUTCOMES, min_size=1, max_size=6))
async def test_entries_follow_what_committed(kit: Kit, steps: list[str]) -> None:
    """Whatever the mix, one OK entry per applied change and one per refusal;
    nothing for replays, crashes and lost commits."""
    expected: dict[str, tuple[list[tuple[str, str, str]], int]] = {}
    applied = ""
    for step in steps:
        if step == "replay" and applied:
            await kit.mutate(applied)  # answered from the request log
            continue
        how = "ok" if step == "replay" else step
        rid = new_id()
        with contextlib.suppress(FailedPrecondition, RuntimeError, ConnectionResetError):
            await kit.mutate(rid, how=how)
        entries = {"ok": [OK_ENTRY], "refuse": [REFUSED_ENTRY]}.get(how, [])
        expected[rid] = (entries, 1 if how == "ok" else 0)
        applied = rid if how == "ok" else applied
    for rid, (entries, probes) in expected.items():
        assert await kit.entries(rid) == entries, rid
        assert await kit.probes(rid) == probes, rid


# -- a real service over gRPC ---------------------------------------------------


@dataclass
class Catalog:
    address: str
    channel: grpc.aio.Channel

    @property
    def stub(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel)

    async def trail(self, **filters: object) -> list[audit_pb2.AuditEntry]:
        stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        reply = await stub.ListAuditEntries(
            audit_pb2.ListAuditEntriesRequest(**filters),
            timeout=10,  # type: ignore[arg-type]
        )
        return list(reply.entries)


@pytest.fixture(scope="module")
async def catalog(database_url: str, nats_url: str) -> AsyncIterator[Catalog]:
    await migrations.upgrade_async("catalog", database_url)
    async with service_in_process("catalog", database_url, nats_url) as rt:
        address = f"127.0.0.1:{rt.port}"
        async with grpc.aio.insecure_channel(address) as channel:
            yield Catalog(address, channel)


def create(code: str, request_id: str = "") -> catalog_pb2.CreateMetricRequest:
    return catalog_pb2.CreateMetricRequest(
        metric=metric(code, catalog_resources.AGGREGATION_COUNT), request_id=request_id
    )


async def test_a_direct_grpc_call_is_recorded_with_its_peer(catalog: Catalog) -> None:
    code = f"direct_{uuid.uuid4().hex[:8]}"
    rid = new_id()
    made = await catalog.stub.CreateMetric(create(code, rid), timeout=10)
    await catalog.stub.CreateMetric(create(code, rid), timeout=10)  # a replay
    [entry] = await catalog.trail(target=made.metric.metric_id)
    assert entry.service == "catalog"
    assert entry.action == "tally.catalog.v1.CatalogService.CreateMetric"
    assert entry.actor.startswith("grpc:") and "127.0.0.1" in entry.actor
    assert entry.actor_role == ""
    assert (entry.request_id, entry.outcome, entry.status_code) == (rid, "OK", "OK")

    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await catalog.stub.CreateMetric(create(code), timeout=10)
    refusals = [e for e in await catalog.trail(actor=entry.actor) if e.outcome != "OK"]
    assert [e.status_code for e in refusals] == [taken.value.code().name]


async def test_the_clis_channels_name_the_operator(catalog: Catalog) -> None:
    async with cli_aio_channel(catalog.address) as channel:
        code = f"cli_{uuid.uuid4().hex[:8]}"
        made = await catalog_pb2_grpc.CatalogServiceStub(channel).CreateMetric(
            create(code), timeout=10
        )

    def blocking() -> str:
        with cli_channel(catalog.address) as sync_channel:
            reply = catalog_pb2_grpc.CatalogServiceStub(sync_channel).CreateMetric(
                create(f"cli_sync_{uuid.uuid4().hex[:8]}"), timeout=10
            )
        return str(reply.metric.metric_id)

    sync_made = await asyncio.to_thread(blocking)
    for metric_id in (made.metric.metric_id, sync_made):
        [entry] = await catalog.trail(target=metric_id)
        assert (entry.actor, entry.actor_role) == (cli_actor(), "cli")
    assert cli_actor().startswith("cli:") and "@" in cli_actor()


async def test_the_trail_pages_newest_first_and_binds_tokens_to_filters(
    catalog: Catalog,
) -> None:
    async with cli_aio_channel(catalog.address) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for n in range(3):
            await stub.CreateMetric(create(f"page_{n}_{uuid.uuid4().hex[:8]}"), timeout=10)
    audit = audit_pb2_grpc.AuditServiceStub(catalog.channel)
    request = audit_pb2.ListAuditEntriesRequest(
        actor=cli_actor(), action="CreateMetric", page_size=2
    )
    first = await audit.ListAuditEntries(request, timeout=10)
    assert len(first.entries) == 2 and first.next_page_token
    request.page_token = first.next_page_token
    rest = await audit.ListAuditEntries(request, timeout=10)
    everything = [*first.entries, *rest.entries]
    keys = [(e.create_time.ToDatetime(), e.entry_id) for e in everything]
    assert keys == sorted(keys, reverse=True)
    assert len({e.entry_id for e in everything}) == len(everything) >= 3
    request.actor = "someone-else"
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await audit.ListAuditEntries(request, timeout=10)
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
