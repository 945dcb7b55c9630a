"""Naming a subscription by the org's own id for it (another billing system's).

Pure: the batch's subscriptions are already loaded per org (the ingest path
reads every subscription of the orgs it sees), so resolving costs no query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from services.usage.domain.events import IncomingEvent
from services.usage.domain.periods import SubscriptionState, SubscriptionView
from services.usage.domain.reasons import Rejected, RejectionReason


class ExternalIds:
    """(org, external id) -> the subscription it names, for one batch."""

    def __init__(self, by_org: Mapping[str, Sequence[SubscriptionView]]) -> None:
        self._by_name: dict[tuple[str, str], SubscriptionView] = {}
        for org, subs in by_org.items():
            for sub in _preferred_last(subs):
                if sub.external_id:
                    self._by_name[(org, sub.external_id)] = sub
                # A subscription id answers too: Lago producers already sending
                # Tally's ids keep working.
                self._by_name.setdefault((org, sub.subscription_id), sub)

    def resolve(self, event: IncomingEvent) -> IncomingEvent | Rejected:
        """The event with its subscription id filled in, or why it names none."""
        name = event.external_subscription_id
        if not name:
            return event
        sub = self._by_name.get((event.org_id, name))
        if sub is None:
            return Rejected(
                RejectionReason.UNKNOWN_SUBSCRIPTION,
                f"org {event.org_id} has no subscription with external id {name!r}",
            )
        if event.subscription_id and event.subscription_id != sub.subscription_id:
            return Rejected(
                RejectionReason.UNKNOWN_SUBSCRIPTION,
                f"subscription_id {event.subscription_id!r} is not the subscription"
                f" external id {name!r} names ({sub.subscription_id})",
            )
        return replace(event, subscription_id=sub.subscription_id)


def _preferred_last(subs: Iterable[SubscriptionView]) -> list[SubscriptionView]:
    # An external id is unique among subscriptions not canceled; a canceled
    # one may share it with a live successor, which wins (it comes last), and
    # among canceled ones the latest ended.
    def rank(sub: SubscriptionView) -> tuple[bool, bool, datetime | None]:
        live = sub.state is not SubscriptionState.CANCELED
        # Not ended sorts after every end time: (False, t) < (True, None).
        return (live, sub.end_time is None, sub.end_time)

    return sorted(subs, key=rank)
