"""What a commit tells the other replicas about the entitlement answers it changed.

Each ``SubscriptionsUnitOfWork`` commit that touched entitlement rows sends a
NOTIFY in its own transaction, so PostgreSQL delivers it to every listening
replica if, and only if, the commit lands, and in commit order. The payload
is ``<origin>:<orgs>``: the sending process's cache, which its own commit has
already forgotten, so it skips its own notifications; then the orgs (a JSON
list: org ids are free-form strings) or ``*`` for every org.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import TextClause, text

from services.subscriptions.repository.projections import EntitlementChanges

EVERY_ORG = "*"
# NOTIFY refuses payloads of 8,000 bytes or more; past this, "everyone" is
# both shorter and still exact (it forgets more, never less).
MAX_PAYLOAD_BYTES = 7000
# PostgreSQL truncates identifiers (channel names) to 63 bytes.
_MAX_CHANNEL_BYTES = 63
_PREFIX = "tally_entitlements_"

NOTIFY: TextClause = text("SELECT pg_notify(:channel, :payload)")


def channel_for(schema: str) -> str:
    """One channel per schema, so databases or schemas shared by tests never cross."""
    channel = _PREFIX + schema
    if len(channel.encode()) <= _MAX_CHANNEL_BYTES:
        return channel
    return _PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:40]


def payload_for(changes: EntitlementChanges, origin: str = "") -> str:
    """``origin`` must not contain a colon (a hex id does not)."""
    if not changes.every_org:
        payload = f"{origin}:{json.dumps(sorted(changes.orgs), separators=(',', ':'))}"
        if len(payload.encode()) <= MAX_PAYLOAD_BYTES:
            return payload
    return f"{origin}:{EVERY_ORG}"


def changes_from(payload: str) -> tuple[str, EntitlementChanges]:
    """Who sent it and what it names; anything unreadable forgets every org."""
    origin, _, orgs_text = payload.partition(":")
    everyone = EntitlementChanges(every_org=True)
    if orgs_text == EVERY_ORG:
        return origin, everyone
    try:
        orgs = json.loads(orgs_text)
    except ValueError:
        return "", everyone
    if not isinstance(orgs, list) or not all(isinstance(org, str) for org in orgs):
        return "", everyone
    return origin, EntitlementChanges(orgs=set(orgs))
