"""Payment methods: recording what the provider attached, the default, detaching."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.kit.errors import NotFound
from services.payments import domain as d
from services.payments.handlers.collection import resume_waiting
from services.payments.handlers.common import Policy, get_method, new_id
from services.payments.provider import ProviderPaymentMethod
from services.payments.repository import PaymentsUnitOfWork


async def record_customer(
    uow: PaymentsUnitOfWork, org_id: str, provider: str, customer_id: str
) -> str:
    return await uow.repo.remember_customer(org_id, provider, customer_id)


async def record_method(
    uow: PaymentsUnitOfWork,
    org_id: str,
    method: ProviderPaymentMethod,
    set_default: bool,
    now: datetime,
    policy: Policy,
) -> tuple[Any, list[d.Attempt]]:
    """Store an attached method (once per provider id); the first one is the default."""
    existing = await uow.repo.method_by_provider_id(method.payment_method_id)
    if existing is not None and existing.org_id != org_id:
        raise NotFound(
            message=f"payment method {method.payment_method_id} not found",
            reason="PAYMENT_METHOD_NOT_FOUND",
        )
    if existing is None:
        await uow.repo.insert_method(
            {
                "payment_method_id": new_id("pm"),
                "org_id": org_id,
                "provider": policy.provider,
                "provider_payment_method_id": method.payment_method_id,
                "type": method.type,
                "brand": method.brand,
                "last4": method.last4,
                "exp_month": method.exp_month,
                "exp_year": method.exp_year,
                "country": method.country,
                "is_default": False,
                "create_time": now,
            }
        )
    row = await uow.repo.method_by_provider_id(method.payment_method_id)
    assert row is not None
    started: list[d.Attempt] = []
    if set_default or await uow.repo.default_method(org_id) is None:
        row, started = await make_default(uow, org_id, row.payment_method_id, now, policy)
    return row, started


async def make_default(
    uow: PaymentsUnitOfWork, org_id: str, payment_method_id: str, now: datetime, policy: Policy
) -> tuple[Any, list[d.Attempt]]:
    await get_method(uow, payment_method_id, org_id)
    await uow.repo.make_default(org_id, payment_method_id)
    started = await resume_waiting(uow, org_id, now, policy)
    return await get_method(uow, payment_method_id, org_id), started


async def detach(
    uow: PaymentsUnitOfWork, org_id: str, payment_method_id: str, now: datetime
) -> Any:
    row = await get_method(uow, payment_method_id, org_id)
    await uow.repo.detach_method(payment_method_id, now)
    return row
