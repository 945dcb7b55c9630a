"""A subscription's history as one list, newest first, composed from the gateway's reads.

Pure: it takes the JSON the inspector already fetched (the subscription, its
schedules, billing periods, invoices and payments) and answers events with a
time, a kind, a text and a link. Nothing here calls anything, so the order and
the content are unit-tested without a gateway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from urllib.parse import quote

from console.money import format_money

Json = Mapping[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    when: datetime
    kind: str  # created, plan_changed, period_closed, invoice_finalized, payment_failed, ...
    text: str
    link: str = ""

    @property
    def sort_key(self) -> tuple[datetime, str, str]:
        return (self.when, self.kind, self.text)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp of the gateway's JSON, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _words(value: object, prefix: str) -> str:
    return str(value or "").removeprefix(prefix).replace("_", " ").lower()


def _subscription_events(subscription: Json) -> Iterable[Event]:
    plan = f"{subscription.get('packageCode', '')} v{subscription.get('packageVersion', '')}"
    if when := parse_time(subscription.get("createTime")):
        yield Event(when, "created", f"Subscription created ({plan})")
    started = parse_time(subscription.get("startTime"))
    # A backdated migration starts before it is created: both moments matter.
    if started and started != parse_time(subscription.get("createTime")):
        yield Event(started, "started", "Subscription started")
    if (when := parse_time(subscription.get("cancelTime"))) and not subscription.get(
        "cancelAtPeriodEnd"
    ):
        yield Event(when, "canceled", "Subscription canceled")


def _schedule_events(schedules: Iterable[Json]) -> Iterable[Event]:
    """Pending and withdrawn entries; an applied one shows as the segment it started."""
    for entry in schedules:
        action = _words(entry.get("action"), "SCHEDULE_ACTION_")
        state = str(entry.get("state", ""))
        if state == "SCHEDULE_STATE_CANCELED":
            when = parse_time(entry.get("resolveTime"))
            kind, text = "schedule_withdrawn", f"Scheduled {action} withdrawn"
        elif state == "SCHEDULE_STATE_PENDING":
            when = parse_time(entry.get("createTime"))
            effective = parse_time(entry.get("effectiveTime"))
            on = f" for {effective:%Y-%m-%d}" if effective else ""
            kind, text = "schedule_pending", f"{action.capitalize()} scheduled{on}"
        else:
            continue
        if when:
            yield Event(when, kind, text)


_SEGMENT_CHANGES = {
    ("SEGMENT_KIND_TRIAL", "SEGMENT_KIND_ACTIVE"): ("trial_ended", "Trial ended"),
    ("SEGMENT_KIND_ACTIVE", "SEGMENT_KIND_PAUSED"): ("paused", "Subscription paused"),
    ("SEGMENT_KIND_PAUSED", "SEGMENT_KIND_ACTIVE"): ("resumed", "Subscription resumed"),
}


def _segment_events(periods: Iterable[Json]) -> Iterable[Event]:
    """Plan changes (now or at period end), trial ends, pauses and resumes.

    The periods' segments are the one record of every change, whether it came
    from a ChangePlan now, an applied schedule or the clock: one segment
    starts where the version or the kind changed, so consecutive segments
    across all periods tell the whole story once.
    """
    segments = sorted(
        (
            (when, segment)
            for period in periods
            for segment in period.get("segments") or []
            if (when := parse_time(segment.get("startTime")))
        ),
        key=lambda pair: pair[0],
    )
    for (_, before), (when, after) in pairwise(segments):
        if before.get("packageVersionId") != after.get("packageVersionId"):
            plan = f"{after.get('packageCode', '')} v{after.get('packageVersion', '')}"
            yield Event(when, "plan_changed", f"Plan changed to {plan}")
        elif change := _SEGMENT_CHANGES.get((str(before.get("kind")), str(after.get("kind")))):
            yield Event(when, *change)


def _period_events(periods: Iterable[Json]) -> Iterable[Event]:
    for period in periods:
        if not period.get("closed"):
            continue
        when = parse_time(period.get("closeTime")) or parse_time(period.get("periodEndTime"))
        start = parse_time(period.get("periodStartTime")) or _EPOCH
        end = parse_time(period.get("periodEndTime")) or _EPOCH
        if when:
            yield Event(when, "period_closed", f"Period {start:%Y-%m-%d} to {end:%Y-%m-%d} closed")


def _invoice_events(invoices: Iterable[Json]) -> Iterable[Event]:
    for invoice in invoices:
        link = f"/admin/invoices/{quote(str(invoice.get('invoiceId', '')), safe='')}"
        name = str(invoice.get("number") or "draft")
        total = format_money(invoice.get("total"), str(invoice.get("currencyCode", "")))
        moments = (
            ("finalizeTime", "invoice_finalized", f"Invoice {name} finalized, {total}"),
            ("paidTime", "invoice_paid", f"Invoice {name} paid"),
            ("voidTime", "invoice_void", f"Invoice {name} voided"),
            ("uncollectibleTime", "invoice_uncollectible", f"Invoice {name} written off"),
        )
        any_moment = False
        for key, kind, text in moments:
            if when := parse_time(invoice.get(key)):
                any_moment = True
                yield Event(when, kind, text, link)
        if not any_moment and (when := parse_time(invoice.get("createTime"))):
            yield Event(when, "invoice_draft", f"Invoice {name} drafted", link)


def _payment_events(payments: Iterable[Json]) -> Iterable[Event]:
    for payment in payments:
        invoice_id = quote(str(payment.get("invoiceId", "")), safe="")
        link = f"/admin/invoices/{invoice_id}" if invoice_id else ""
        amount = format_money(payment.get("amount"))
        number = payment.get("invoiceNumber") or payment.get("invoiceId", "")
        state = _words(payment.get("state"), "PAYMENT_STATE_")
        if when := parse_time(payment.get("succeedTime")):
            yield Event(when, "payment_succeeded", f"Payment of {amount} for {number}", link)
            continue
        when = parse_time(payment.get("updateTime")) or parse_time(payment.get("createTime"))
        failure = f": {payment['failureCode']}" if payment.get("failureCode") else ""
        kind = "payment_failed" if payment.get("failureCode") else "payment"
        if when:
            yield Event(when, kind, f"Payment of {amount} for {number} {state}{failure}", link)


def timeline(
    subscription: Json,
    schedules: Iterable[Json] = (),
    periods: Iterable[Json] = (),
    invoices: Iterable[Json] = (),
    payments: Iterable[Json] = (),
) -> list[Event]:
    """Every event of the subscription, newest first (ties in a fixed order)."""
    periods = list(periods)  # read twice: segments and closes
    events = [
        *_subscription_events(subscription),
        *_schedule_events(schedules),
        *_segment_events(periods),
        *_period_events(periods),
        *_invoice_events(invoices),
        *_payment_events(payments),
    ]
    return sorted(events, key=lambda e: e.sort_key, reverse=True)
