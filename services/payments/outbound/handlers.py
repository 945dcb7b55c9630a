"""Use cases of outbound webhooks. They never commit: whoever opened the unit
of work (``run_mutation``, the kit consumer, the dispatcher) does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.message import Message

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.kit.events import EventEnvelope
from services.payments.outbound import domain as d
from services.payments.outbound.store import Delivery, Endpoint
from services.payments.repository import PaymentsUnitOfWork

# How long a rotated-out secret still signs, so receivers can switch over.
ROTATION_OVERLAP = timedelta(hours=24)
ENDPOINT_NOT_FOUND = "WEBHOOK_ENDPOINT_NOT_FOUND"
DELIVERY_NOT_FOUND = "WEBHOOK_DELIVERY_NOT_FOUND"


def _endpoint_missing(endpoint_id: str) -> NotFound:
    return NotFound(f"webhook endpoint {endpoint_id} not found", reason=ENDPOINT_NOT_FOUND)


@dataclass(frozen=True)
class NewEndpoint:
    org_id: str
    url: str
    event_types: Sequence[str]
    description: str = ""
    secret: str = ""  # empty: Tally generates one


@dataclass(frozen=True)
class EndpointChange:
    """Fields of an update; None leaves a field as it is."""

    url: str | None = None
    event_types: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def validate_endpoint(url: str | None, event_types: Sequence[str] | None) -> None:
    found = []
    if url is not None:
        found += d.url_violations(url)
    if event_types is not None:
        found += d.pattern_violations(event_types)
    if found:
        raise InvalidArgument.of(found)


async def create_endpoint(uow: PaymentsUnitOfWork, new: NewEndpoint, now: datetime) -> Endpoint:
    validate_endpoint(new.url, new.event_types)
    return await uow.webhooks.insert_endpoint(
        {
            "endpoint_id": f"we_{uuid.uuid4().hex[:20]}",
            "org_id": new.org_id,
            "url": new.url,
            "description": new.description,
            "event_types": list(dict.fromkeys(new.event_types)),
            "secret": new.secret or d.new_secret(),
            "create_time": now,
            "update_time": now,
        }
    )


async def get_endpoint(uow: PaymentsUnitOfWork, endpoint_id: str, org_id: str = "") -> Endpoint:
    found = await uow.webhooks.endpoint(endpoint_id, org_id)
    if found is None:
        raise _endpoint_missing(endpoint_id)
    return found


async def update_endpoint(
    uow: PaymentsUnitOfWork, endpoint_id: str, org_id: str, change: EndpointChange, now: datetime
) -> Endpoint:
    validate_endpoint(change.url, change.event_types)
    current = await uow.webhooks.endpoint(endpoint_id, org_id, lock=True)
    if current is None:
        raise _endpoint_missing(endpoint_id)
    values: dict[str, object] = {"update_time": now}
    if change.url is not None:
        values["url"] = change.url
    if change.event_types is not None:
        values["event_types"] = list(dict.fromkeys(change.event_types))
    if change.description is not None:
        values["description"] = change.description
    if change.enabled is not None:
        values["enabled"] = change.enabled
        if change.enabled:
            # Enabled again by hand: the failure streak starts over.
            values["disabled_reason"] = ""
            values["failing_since"] = None
        elif current.enabled:
            values["disabled_reason"] = "disabled by request"
    return await uow.webhooks.update_endpoint(endpoint_id, values)


async def delete_endpoint(
    uow: PaymentsUnitOfWork, endpoint_id: str, org_id: str, now: datetime
) -> Endpoint:
    """Soft delete: nothing more is sent, the API no longer shows it, and
    its delivery rows stay in the table for support."""
    current = await uow.webhooks.endpoint(endpoint_id, org_id, lock=True)
    if current is None:
        raise _endpoint_missing(endpoint_id)
    return await uow.webhooks.update_endpoint(
        endpoint_id, {"deleted": True, "enabled": False, "update_time": now}
    )


async def rotate_secret(
    uow: PaymentsUnitOfWork, endpoint_id: str, org_id: str, now: datetime, secret: str = ""
) -> Endpoint:
    current = await uow.webhooks.endpoint(endpoint_id, org_id, lock=True)
    if current is None:
        raise _endpoint_missing(endpoint_id)
    return await uow.webhooks.update_endpoint(
        endpoint_id,
        {
            "secret": secret or d.new_secret(),
            "previous_secret": current.secret,
            "previous_secret_expire_time": now + ROTATION_OVERLAP,
            "update_time": now,
        },
    )


async def record_deliveries(
    uow: PaymentsUnitOfWork, envelope: EventEnvelope, event: Message, now: datetime
) -> int:
    """One pending delivery per enabled endpoint of the event's org that
    selects its type, in the consumer's transaction (its inbox row makes a
    redelivered event add nothing; the unique (event, endpoint) is the second
    guard). Returns how many were added."""
    org_id = d.org_of(event)
    if not org_id:
        return 0
    event_type = d.event_type_of(envelope.subject)
    endpoints = await uow.webhooks.endpoints(org_id, None, 1000, enabled_only=True)
    rows = []
    for e in endpoints:
        if not d.selects(e.event_types, event_type):
            continue
        delivery = d.delivery_id(envelope.event_id, e.endpoint_id)
        body = d.payload(
            delivery=delivery,
            event_type=event_type,
            created=envelope.occurred_at,
            org_id=org_id,
            event=event,
        )
        rows.append(
            {
                "delivery_id": delivery,
                "endpoint_id": e.endpoint_id,
                "org_id": org_id,
                "event_id": envelope.event_id,
                "event_type": event_type,
                "payload": body.decode(),
                "state": d.DeliveryState.PENDING.value,
                "next_attempt_time": now,
                "create_time": now,
            }
        )
    return await uow.webhooks.insert_deliveries(rows)


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None
    response_ms: int
    error: str = ""


async def record_attempt(
    uow: PaymentsUnitOfWork,
    delivery_id: str,
    outcome: AttemptOutcome,
    at: datetime,
    policy: d.RetryPolicy,
) -> Delivery:
    """The answer to one send: the delivery's next attempt (or its end) and
    the endpoint's failure streak, which disables it once sustained."""
    current = await uow.webhooks.delivery(delivery_id, lock=True)
    if current is None:
        raise NotFound(f"webhook delivery {delivery_id} not found", reason=DELIVERY_NOT_FOUND)
    endpoint = await uow.webhooks.endpoint(current.endpoint_id, lock=True)
    attempts = current.attempt_count + 1
    first = current.first_attempt_time or at
    values: dict[str, object] = {
        "attempt_count": attempts,
        "first_attempt_time": first,
        "last_attempt_time": at,
        "last_status_code": outcome.status_code,
        "last_response_ms": outcome.response_ms,
        "lease_until": None,
    }
    if d.succeeded(outcome.status_code):
        values |= {"state": d.DeliveryState.SUCCEEDED.value, "next_attempt_time": None}
        values["last_error"] = ""
        if endpoint is not None and endpoint.failing_since is not None:
            await uow.webhooks.update_endpoint(endpoint.endpoint_id, {"failing_since": None})
        return await uow.webhooks.update_delivery(delivery_id, values)
    values["last_error"] = d.outcome_error(outcome.status_code, outcome.error)
    retry_at = policy.next_attempt(first, attempts, at)
    if retry_at is None:
        values |= {"state": d.DeliveryState.FAILED.value, "next_attempt_time": None}
    else:
        values["next_attempt_time"] = retry_at
    if endpoint is not None:
        since = endpoint.failing_since or at
        change: dict[str, object] = {"failing_since": since}
        if endpoint.enabled and d.should_disable(policy, since, at, final=retry_at is None):
            change |= {
                "enabled": False,
                "disabled_reason": (
                    "webhook_endpoint.disabled: every attempt failed since "
                    f"{since.isoformat()} ({values['last_error']})"
                ),
                "update_time": at,
            }
        await uow.webhooks.update_endpoint(endpoint.endpoint_id, change)
    return await uow.webhooks.update_delivery(delivery_id, values)


async def resend(uow: PaymentsUnitOfWork, delivery_id: str, org_id: str, now: datetime) -> Delivery:
    """Send a delivery again now, whatever its state, on a fresh schedule;
    same ``id`` in the body, so a receiver that saw it already ignores it."""
    current = await uow.webhooks.delivery(delivery_id, org_id, lock=True)
    if current is None:
        raise NotFound(f"webhook delivery {delivery_id} not found", reason=DELIVERY_NOT_FOUND)
    endpoint = await uow.webhooks.endpoint(current.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise FailedPrecondition(
            f"webhook endpoint {current.endpoint_id} is disabled or deleted: enable it first",
            reason="WEBHOOK_ENDPOINT_DISABLED",
        )
    return await uow.webhooks.update_delivery(
        delivery_id,
        {
            "state": d.DeliveryState.PENDING.value,
            "next_attempt_time": now,
            "first_attempt_time": None,
            "lease_until": None,
        },
    )


async def list_deliveries(
    uow: PaymentsUnitOfWork, endpoint_id: str, org_id: str, after: list[object] | None, limit: int
) -> list[Delivery]:
    await get_endpoint(uow, endpoint_id, org_id)
    return await uow.webhooks.deliveries(endpoint_id, after, limit)
