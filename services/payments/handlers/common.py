"""Shared by the use cases: ids, the policy they need, loading with org scoping,
and the events an applied outcome emits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.kit.errors import NotFound
from services.payments import domain as d
from services.payments import protomap
from services.payments.repository import PaymentsUnitOfWork


@dataclass(frozen=True)
class Policy:
    retry_days: tuple[int, ...] = (1, 3, 5)
    provider: str = "stripe"
    # How long a sender holds an attempt before another may resend it.
    dispatch_lease: timedelta = timedelta(seconds=60)
    # Stripe forgets an idempotency key once it is 24 hours old; an attempt
    # older than this is looked up before it is sent again under its key.
    key_lifetime: timedelta = timedelta(hours=20)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _scoped(found: Any, org_id: str, what: str, ident: str, reason: str) -> Any:
    # Another org's resource is NOT_FOUND, never PERMISSION_DENIED: ids must not leak.
    if found is None or (org_id and found.org_id != org_id):
        raise NotFound(message=f"{what} {ident} not found", reason=reason)
    return found


async def get_payment(
    uow: PaymentsUnitOfWork, payment_id: str, org_id: str = "", *, lock: bool = False
) -> d.Payment:
    found = await uow.repo.payment(payment_id, lock=lock)
    result: d.Payment = _scoped(found, org_id, "payment", payment_id, "PAYMENT_NOT_FOUND")
    return result


async def get_method(uow: PaymentsUnitOfWork, payment_method_id: str, org_id: str) -> Any:
    found = await uow.repo.method(payment_method_id)
    if found is not None and found.detached_time is not None:
        found = None
    return _scoped(found, org_id, "payment method", payment_method_id, "PAYMENT_METHOD_NOT_FOUND")


def emit_outcome(
    uow: PaymentsUnitOfWork,
    payment: d.Payment,
    attempt: d.Attempt,
    outcome: d.Outcome,
    now: datetime,
) -> None:
    if outcome is d.Outcome.SUCCEEDED:
        uow.emit(protomap.succeeded_event(payment, attempt), aggregate_id=payment.payment_id)
    elif outcome is d.Outcome.FAILED:
        uow.emit(protomap.failed_event(payment, attempt, now), aggregate_id=payment.payment_id)
    elif outcome is d.Outcome.ACTION_REQUIRED:
        uow.emit(
            protomap.action_required_event(
                payment, d.ActionReason.AUTHENTICATION_REQUIRED, attempt.failure_message
            ),
            aggregate_id=payment.payment_id,
        )


def emit_action_required(
    uow: PaymentsUnitOfWork, payment: d.Payment, reason: d.ActionReason
) -> None:
    uow.emit(protomap.action_required_event(payment, reason), aggregate_id=payment.payment_id)
