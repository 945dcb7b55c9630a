"""Invoices against the payments service's view of them, through its gRPC API.

Payments is read through ``ListPayments`` rather than its tables, so the check
holds whatever the payments schema looks like and needs no extra grant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import grpc
from tally.payments.v1 import payments_pb2, payments_pb2_grpc
from tally.payments.v1 import resources_pb2 as pay

from services.verify.findings import Report
from services.verify.ledger import InvoiceRow

PAGE_SIZE = 500
# A payment in one of these states is dunning still under way: the invoice's
# amount due is being collected, not forgotten.
OPEN_STATES = frozenset(
    {
        pay.PAYMENT_STATE_PROCESSING,
        pay.PAYMENT_STATE_REQUIRES_ACTION,
        pay.PAYMENT_STATE_RETRY_SCHEDULED,
        pay.PAYMENT_STATE_FAILED,
    }
)


async def _all_payments(stub: payments_pb2_grpc.PaymentsServiceStub) -> list[pay.Payment]:
    payments: list[pay.Payment] = []
    token = ""
    while True:
        reply = await stub.ListPayments(
            payments_pb2.ListPaymentsRequest(page_size=PAGE_SIZE, page_token=token), timeout=30
        )
        payments.extend(reply.payments)
        token = reply.next_page_token
        if not token:
            return payments


async def check_payments(
    address: str,
    invoices: Sequence[InvoiceRow],
    now: datetime,
    settle_seconds: float,
    report: Report,
) -> None:
    """Each invoice collected once: one succeeded payment, or dunning still open."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            payments = await _all_payments(payments_pb2_grpc.PaymentsServiceStub(channel))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                report.notes.append("payments not deployed (ListPayments unimplemented): skipped")
            else:
                report.add(
                    "payments",
                    address,
                    f"cannot list payments: {exc.code().name}: {exc.details()}",
                )
            return
    report.checked["payments"] = len(payments)
    by_invoice: dict[str, list[pay.Payment]] = defaultdict(list)
    for p in payments:
        by_invoice[p.invoice_id].append(p)
    settled_before = now - timedelta(seconds=settle_seconds)
    for inv in invoices:
        found = by_invoice.get(inv.invoice_id, [])
        succeeded = [p for p in found if p.state == pay.PAYMENT_STATE_SUCCEEDED]
        if len(succeeded) > 1:
            ids = ", ".join(p.payment_id for p in succeeded)
            report.add("payments", inv.invoice_id, f"collected {len(succeeded)} times: {ids}")
            continue
        settled = inv.finalize_time is not None and inv.finalize_time < settled_before
        if not settled:
            continue  # the payments consumer may not have seen it yet
        if inv.state == "finalized" and inv.amount_due_minor > 0:
            if not succeeded and not any(p.state in OPEN_STATES for p in found):
                report.add(
                    "payments",
                    inv.invoice_id,
                    f"finalized with {inv.amount_due_minor} due, but no payment and no dunning",
                )
            elif succeeded and _older(succeeded[0], settled_before):
                report.add(
                    "payments",
                    inv.invoice_id,
                    f"payment {succeeded[0].payment_id} succeeded, but the invoice still reads"
                    f" finalized with {inv.amount_due_minor} due",
                )
        elif inv.state == "paid" and inv.amount_paid_minor > 0 and not succeeded:
            report.add(
                "payments",
                inv.invoice_id,
                f"paid {inv.amount_paid_minor} without a succeeded payment",
            )


def _older(payment: pay.Payment, instant: datetime) -> bool:
    if not payment.HasField("succeed_time"):
        return False
    return payment.succeed_time.ToDatetime().replace(tzinfo=instant.tzinfo) < instant
