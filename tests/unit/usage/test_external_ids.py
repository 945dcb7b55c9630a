"""Resolving a subscription named by the org's own id for it (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.usage.domain import IncomingEvent, Rejected, RejectionReason
from services.usage.domain.external import ExternalIds
from services.usage.domain.periods import SubscriptionState, SubscriptionView

ACTIVE, CANCELED = SubscriptionState.ACTIVE, SubscriptionState.CANCELED


def view(
    sid: str, external: str, state: SubscriptionState = ACTIVE, ended: int = 0
) -> SubscriptionView:
    end = datetime(2026, 1, ended, tzinfo=UTC) if ended else None
    return SubscriptionView(sid, "org", state, end_time=end, external_id=external)


def named(name: str, org: str = "org", subscription_id: str = "") -> IncomingEvent:
    return IncomingEvent(
        org, "calls", "k1", subscription_id=subscription_id, external_subscription_id=name
    )


def resolved(ids: ExternalIds, event: IncomingEvent) -> str:
    out = ids.resolve(event)
    assert isinstance(out, IncomingEvent), out
    return out.subscription_id


def test_a_live_subscription_wins_over_canceled_ones_and_the_latest_canceled_over_older() -> None:
    ids = ExternalIds(
        {
            "org": [
                view("new", "ext"),
                view("old", "ext", CANCELED, 3),
                view("c1", "gone", CANCELED, 5),
                view("c2", "gone", CANCELED, 2),
            ]
        }
    )
    assert resolved(ids, named("ext")) == "new"
    assert resolved(ids, named("gone")) == "c1"


def test_a_subscription_id_answers_too_but_an_external_id_wins_a_clash() -> None:
    ids = ExternalIds({"org": [view("sub_a", ""), view("sub_b", "sub_a")]})
    assert resolved(ids, named("sub_b")) == "sub_b"
    assert resolved(ids, named("sub_a")) == "sub_b"


def test_unknown_other_org_and_mismatch_reject_as_unknown_subscription() -> None:
    ids = ExternalIds({"org": [view("s1", "ext")], "other": [view("s2", "theirs")]})
    for event in (
        named("nope"),
        named("theirs"),
        named("ext", org="other"),
        named("ext", subscription_id="s2"),
    ):
        out = ids.resolve(event)
        assert isinstance(out, Rejected) and out.reason is RejectionReason.UNKNOWN_SUBSCRIPTION
    # Both names agreeing is fine; no external id leaves the event alone.
    assert resolved(ids, named("ext", subscription_id="s1")) == "s1"
    plain = IncomingEvent("org", "calls", "k2")
    assert ids.resolve(plain) is plain
